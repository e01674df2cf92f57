"""``db`` and ``agent``: database care, and running the consumer as a KeepAlive agent."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from ..fsutil import exists
from .command import JSON, command, opt
from .exits import EXIT_FAILURE, EXIT_OK, say

if TYPE_CHECKING:
    import argparse

    from ..paths import Paths


@command(
    "db",
    help="database care: check, vacuum, migrate",
    description="check: integrity and schema version of every database (exit 1 if one is damaged); vacuum: "
                "reclaim space; migrate: bring every database to the latest schema.",
    examples=["codi-queue db check", "codi-queue db migrate"],
    options=[opt("action", choices=["check", "vacuum", "migrate"]), JSON],
)
def db(args: argparse.Namespace, paths: Paths) -> int:
    from ..recovery import maintenance

    if args.action == "check":
        report = maintenance.check(paths)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for tier, info in report.items():
                if not info["exists"]:
                    print(f"{tier:<9} absent")
                elif "error" in info:
                    print(f"{tier:<9} cannot be read: {info['error']}")
                else:
                    print(f"{tier:<9} integrity {info['integrity']}  schema v{info['user_version']}"
                          f"/{info['latest_version']}  {info['bytes']} bytes  wal {info['wal_bytes']} bytes")
        bad = [t for t, i in report.items() if i["exists"] and i.get("integrity") != "ok"]
        return EXIT_FAILURE if bad else EXIT_OK
    done = maintenance.vacuum(paths) if args.action == "vacuum" else maintenance.migrate(paths)
    if args.json:
        print(json.dumps({t: {"error": o} if isinstance(o, str) else {"before": o[0], "after": o[1]}
                          for t, o in done.items()}, indent=2))
    for tier, outcome in done.items() if not args.json else ():
        if isinstance(outcome, str):
            say(f"{tier}: {outcome}")
        elif args.action == "vacuum":
            print(f"{tier:<9} {outcome[0]} -> {outcome[1]} bytes")
        else:
            print(f"{tier:<9} schema v{outcome[0]} -> v{outcome[1]}")
    return EXIT_FAILURE if any(isinstance(o, str) for o in done.values()) else EXIT_OK


@command(
    "agent",
    help="run the consumer as a KeepAlive agent (launchd/systemd)",
    description="Install, remove or inspect the launchd agent (macOS) or systemd user unit that keeps "
                "`codi-queue run` alive.",
    examples=["codi-queue agent install --dry-run", "codi-queue agent status"],
    options=[
        opt("action", choices=["install", "uninstall", "status"]),
        opt("--kind", choices=["launchd", "systemd"], help="default: launchd on macOS, systemd elsewhere"),
        opt("--dry-run", action="store_true", help="print the file and the commands, change nothing"),
    ],
)
def agent(args: argparse.Namespace, paths: Paths) -> int:
    from ..agent import agent_for
    from ..consumer.lock import consumer_pid
    from ..fsutil import write_users_file

    unit = agent_for(paths, args.kind)
    if args.action == "status":
        pid = consumer_pid(paths)
        print(f"agent file: {unit.path} ({'present' if exists(unit.path) else 'absent'})")
        print(f"consumer:   {'running, pid ' + str(pid) if pid else 'not running'}")
        for failure in [] if args.dry_run else unit.apply([unit.status]):
            say(failure)
        return EXIT_OK
    commands = unit.install if args.action == "install" else unit.uninstall
    if args.dry_run:
        if args.action == "install":
            print(f"# would write {unit.path}:")
            sys.stdout.write(unit.content.decode())
        else:
            print(f"# would remove {unit.path}")
        for cmd in commands:
            print("# would run: " + " ".join(cmd))
        return EXIT_OK
    if args.action == "install":
        write_users_file(unit.path, unit.content)
        print(f"wrote {unit.path}")
        # bootout first so a reinstall reloads; it fails when nothing was loaded, which is fine
        failures = [f for f in unit.apply(commands) if "bootout" not in f]
    else:
        failures = unit.apply(commands)
        if exists(unit.path):
            os.remove(unit.path)
            print(f"removed {unit.path}")
    for failure in failures:
        say(failure)
    return EXIT_FAILURE if failures else EXIT_OK
