"""``ops``, ``paths``, ``config`` and ``adoption``: what a user can look up without reading source."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .command import JSON, command, opt, since_option
from .exits import EXIT_INVALID, EXIT_OK, say

if TYPE_CHECKING:
    import argparse

    from ..paths import Paths


@command(
    "ops",
    help="every operation: table, tier, fields with types, limits, defaults, aliases",
    description="Every operation codi-queue accepts, generated from its schema: where it is written and "
                "each field's type, required or default, limits, accepted words and the aliases legacy "
                "files may use.",
    examples=["codi-queue ops", "codi-queue ops session_outcome --json"],
    options=[opt("op", nargs="?", help="one operation (default: list them all)"), JSON],
)
def ops(args: argparse.Namespace, paths: Paths) -> int:
    from ..errors import unknown_operation
    from ..schemas.describe import describe_op, describe_ops
    from ..schemas.registry import OPS

    if args.op is not None and args.op not in OPS:
        say(unknown_operation(args.op, OPS).reason)
        return EXIT_INVALID
    found = [describe_op(args.op)] if args.op else describe_ops()
    if args.json:
        print(json.dumps(found[0] if args.op else found, indent=2))
    elif not args.op:
        for d in found:
            print(f"{d['op']:<24} {d['tier']:<9} {d['table']:<26} {d['write']}")
    else:
        _print_op(found[0])
    return EXIT_OK


def _print_op(d: dict[str, Any]) -> None:
    print(f"{d['op']}: {d['tier']} tier, table {d['table']}, {d['write']}")
    for f in d["fields"]:
        need = "required" if f["required"] else f"optional (default {json.dumps(f['default'])})"
        limits = ", ".join(f"{k} {json.dumps(v)}" for k, v in f["limits"].items())
        extra = [limits] if limits else []
        if f["aliases"]:
            extra.append("legacy names: " + ", ".join(f["aliases"]))
        if f["private"]:
            extra.append("private: not sent to the team database unless [sync] share_private")
        print(f"  {f['name']:<20} {f['type']:<12} {need}" + ("; " + "; ".join(extra) if extra else ""))


@command(
    "paths",
    help="where everything lives",
    description="The home and every file and directory under it, the databases and where each path came "
                "from. Answers even for a home that is not safe to use (it says why elsewhere).",
    examples=["codi-queue paths", "codi-queue --home /tmp/cq paths --json"],
    options=[JSON],
    defaults={"check_home": False},  # it says where things are even for a home it would refuse to use
)
def paths_(args: argparse.Namespace, paths: Paths) -> int:
    from ..config import ConfigError, load_config

    data = paths.as_dict()
    try:
        sync = load_config(paths).sync
        data["sync"] = f"{sync.as_dict()['url']} as {sync.machine}" if sync else "not configured"
    except ConfigError as exc:
        data["sync"] = f"unknown: {exc.reason}"  # `paths` answers even when the config file is broken
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    sources = data.get("databases_from")
    sources = sources if isinstance(sources, dict) else {}
    for key, value in data.items():
        if key == "databases_from":
            continue
        if isinstance(value, dict):
            for sub, path in value.items():
                source = sources.get(sub) if key == "databases" else None
                print(f"{key}.{sub:<10} {path}" + (f"  ({source})" if source and source != "default" else ""))
        else:
            print(f"{key:<19} {value}")
    return EXIT_OK


@command(
    "config",
    help="the effective configuration",
    description="The configuration in effect: the file's values over the defaults, each database with where "
                "its path came from. A password in the team URL is shown as ***.",
    examples=["codi-queue config", "codi-queue config --json"],
    options=[opt("--show", action="store_true", help="print it (the default)"), JSON],
)
def config(args: argparse.Namespace, paths: Paths) -> int:
    from ..config import load_config

    data = {"paths": paths.as_dict(), **load_config(paths).as_dict()}
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"# config file: {data['file']}" + ("" if data["file_exists"] else " (absent: defaults)"))
    print(f"# home: {paths.home} (from {paths.source})")
    print("[databases]")
    for tier, db in data["databases"].items():
        print(f"{tier} = {json.dumps(db['path'])}    # {db['from']}")
    watch = data["watch"]
    print("\n[watch]")
    print(f"transcripts = {json.dumps(watch['transcripts'])}")
    print(f"state_dirs = {json.dumps(watch['state_dirs'])}")
    print("\n[watch.jsonl]")
    for file, op in watch["jsonl"].items():
        print(f"{json.dumps(file)} = {json.dumps(op)}")
    sync = data["sync"]
    if sync:  # the URL is already redacted: a password is never printed
        print("\n[sync]")
        for key in ("url", "machine", "push", "pull", "share_private"):
            print(f"{key} = {json.dumps(sync[key])}")
    return EXIT_OK


@command(
    "adoption",
    help="skill adoption rate: invoked / suggested, per skill",
    description="Per skill: how often it was invoked against how often it was suggested.",
    examples=["codi-queue adoption --since 2026-11-01"],
    options=[since_option("only suggestions at or after this time (unix seconds or ISO 8601)"), JSON],
)
def adoption(args: argparse.Namespace, paths: Paths) -> int:
    from ..consumer.db import open_readonly
    from ..queries import skill_adoption
    from ..timestamps import normalize_timestamp

    try:
        since = normalize_timestamp(args.since) if args.since else None
    except ValueError as exc:
        say(f"--since: {exc}")
        return EXIT_INVALID
    conn = open_readonly(paths.database_file("sessions"))
    rows: list[dict[str, Any]] = []
    if conn is not None:
        try:
            rows = skill_adoption(conn, since)
        finally:
            conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['skill']:<30} {r['invoked']:>6} / {r['suggested']:<6} {r['rate']:6.1%}")
    return EXIT_OK
