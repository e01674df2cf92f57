"""``dead-letters``, ``replay``, ``rebuild``, ``backup`` and ``restore``: getting data back."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from .command import DRY_RUN, JSON, command, opt, since_option, tier_option
from .exits import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, say

if TYPE_CHECKING:
    from ..paths import Paths

_REBUILD_OPTIONS = [
    tier_option("only this tier (repeatable; default all)"),
    opt("--into", help="write rebuilt databases here instead of replacing the live ones"),
    DRY_RUN,
]


@command(
    "dead-letters",
    help="list dead letters: id, operation, reason, attempts, source",
    description="List dead letters (operations that could not be applied) from every database, with what "
                "`replay dead-letters --id ID` needs.",
    examples=["codi-queue dead-letters --op git_event --since 2026-11-01"],
    options=[
        opt("--op", help="only this operation type"),
        since_option("last failed at or after (unix seconds or ISO 8601)"),
        JSON,
    ],
)
def dead_letters(args: argparse.Namespace, paths: Paths) -> int:
    from ..errors import shown
    from ..recovery.replay import list_dead_letters, parse_time
    from ..timestamps import is_seconds

    try:
        since = parse_time(args.since)
    except ValueError as exc:
        say(f"--since: {exc}")
        return EXIT_INVALID
    letters = list_dead_letters(paths, args.op, since)
    if args.json:
        print(json.dumps(letters, indent=2))
        return EXIT_OK
    for d in letters:
        failed = d["last_failed"]  # read back from the database: shown as it is when it is not a time
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failed)) if is_seconds(failed) else shown(str(failed), 40)
        source = f"  [{shown(d['source'], 200)}]" if d["source"] else ""
        reason = " ".join(str(d["reason"]).split())
        print(f"{shown(d['id'])}  {shown(d['op'])}  {d['tier']}  x{d['attempts']}  {when}  {reason[:160]}{source}")
    print(f"{len(letters)} dead letters" + ("; re-apply with: codi-queue replay dead-letters [--id ID]"
                                            if letters else ""))
    return EXIT_OK


@command(
    "replay",
    help="re-apply dead letters or the archive",
    description="replay dead-letters: re-apply dead letters (after a fix or a migration); replay archive: "
                "re-apply journal operations (nothing already applied is applied twice). The older "
                "spellings --dead-letter, --from-archive and --rebuild still work.",
    examples=["codi-queue replay dead-letters --id 0190f3a2-…", "codi-queue replay archive --since 2026-11-01"],
    options=[
        opt("what", nargs="?", choices=["dead-letters", "archive"], help="what to re-apply"),
        opt("--dead-letter", action="store_true", help=argparse.SUPPRESS),  # = replay dead-letters
        opt("--from-archive", action="store_true", help=argparse.SUPPRESS),  # = replay archive
        opt("--rebuild", action="store_true", help=argparse.SUPPRESS),  # = rebuild
        opt("--op", help="only this operation type"),
        opt("--id", help="only this dead letter (dead-letters; `codi-queue dead-letters` lists them)"),
        since_option("enqueued at or after (unix seconds or ISO 8601; archive)"),
        opt("--until", help="enqueued at or before (archive)"),
        *_REBUILD_OPTIONS,
    ],
)
def replay(args: argparse.Namespace, paths: Paths) -> int:
    modes = {"dead-letters": args.dead_letter, "archive": args.from_archive, "rebuild": args.rebuild}
    if args.what:
        modes[args.what] = True
    chosen = [mode for mode, on in modes.items() if on]
    if len(chosen) != 1:
        say("replay what? codi-queue replay dead-letters | replay archive (or codi-queue rebuild)" if not chosen
            else f"replay: choose one of {', '.join(chosen)}")
        return EXIT_INVALID
    if chosen == ["rebuild"]:
        return rebuild(args, paths)
    if chosen == ["dead-letters"]:
        from ..recovery.replay import replay_dead_letters

        result = replay_dead_letters(paths, args.op, args.id)
        for why in result.skipped:
            say(why)
        print(f"{result.sent} dead letters re-sent; the consumer removes each one that applies "
              f"and keeps the others with their new reason")
        return EXIT_OK
    from ..recovery.replay import parse_time, replay_archive

    try:
        since, until = parse_time(args.since), parse_time(args.until)
    except ValueError as exc:
        say(f"--since/--until: {exc}")
        return EXIT_INVALID
    sent = replay_archive(paths, since, until, args.op)
    for why in sent.skipped:
        say(f"damaged, skipped: {why}")
    print(f"{sent.sent} journal operations re-sent from {sent.dirs} queue directories (the archive, "
          "then segments and the inbox not archived yet); the consumer skips those already applied"
          + (f"; {sent.repeats} more copies of them (left by earlier replays) not sent again" if sent.repeats else "")
          + (f"; {len(sent.skipped)} damaged spans skipped" if sent.skipped else ""))
    return EXIT_OK


@command(
    "rebuild",
    help="rebuild tier databases from the journal (archive + pending)",
    description="Rebuild databases from the journal. In place needs the consumer stopped and keeps the old "
                "files aside; --into writes them elsewhere.",
    examples=["codi-queue rebuild --tier sessions --into /tmp/rebuilt", "codi-queue rebuild --dry-run"],
    options=_REBUILD_OPTIONS,
)
def rebuild(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.jsonl import progress_bar
    from ..recovery.journal import journal_dirs
    from ..recovery.rebuild import count_journal, rebuild_in_place, rebuild_into
    from ..schemas.registry import ALL_TIERS

    tiers = tuple(args.tier) if args.tier else ALL_TIERS
    if args.dry_run:
        counted = count_journal(paths, tiers)
        for table, n in counted.per_table.items():
            print(f"{table:<28} {n}")
        print(f"{counted.operations} operations would be applied")
        return EXIT_OK
    bar = progress_bar("rebuild", len(journal_dirs(paths)))
    rebuilt = rebuild_into(paths, args.into, tiers, bar) if args.into else rebuild_in_place(paths, tiers, bar)
    for table, n in sorted(rebuilt.per_table.items()):
        print(f"{table:<28} {n} rows")
    for tier, old in rebuilt.replaced.items():
        print(f"{tier}: previous database kept at {old}")
    for warning in rebuilt.warnings:
        say(warning)
    print(f"rebuilt {', '.join(tiers)} from {rebuilt.operations} journal operations"
          + (f" into {args.into}" if args.into else ""))
    return EXIT_OK


@command(
    "backup",
    help="consistent online snapshots of every tier database",
    description="Consistent snapshots of every database, taken while the consumer runs, each checked.",
    examples=["codi-queue backup", "codi-queue backup --into /mnt/backups/today"],
    options=[opt("--into", help="directory for the snapshot (default: HOME/backups/<timestamp>)")],
)
def backup(args: argparse.Namespace, paths: Paths) -> int:
    from ..recovery.backup import backup as take

    result = take(paths, args.into)
    for tier, info in result.tiers.items():
        print(f"{tier:<9} {info.bytes:>12} bytes  schema v{info.user_version}  integrity {info.integrity}")
    for problem in result.problems:
        say(problem)
    print(f"snapshot: {result.directory}")
    return EXIT_FAILURE if result.problems or not result.tiers else EXIT_OK


@command(
    "restore",
    help="put a snapshot back (consumer stopped; old files kept)",
    description="Put a snapshot's databases back (the consumer must be stopped; the files replaced are kept "
                "aside), then re-send archived operations since the snapshot so nothing is missing.",
    examples=["codi-queue restore ~/.local/share/codi-queue/backups/20261122-0700 --tier sessions"],
    options=[
        opt("snapshot", help="a directory written by codi-queue backup"),
        tier_option("only this tier (repeatable; default all)"),
        opt("--no-catch-up", action="store_true", help="do not re-send archived operations since the snapshot"),
    ],
)
def restore(args: argparse.Namespace, paths: Paths) -> int:
    from ..recovery.backup import CATCH_UP_MARGIN_S
    from ..recovery.backup import restore as put_back
    from ..recovery.replay import replay_archive

    moved, created = put_back(paths, args.snapshot, tuple(args.tier) if args.tier else None)
    for tier, old in moved.items():
        print(f"{tier}: restored; the file it replaced is kept at {old}")
    if not args.no_catch_up:
        sent = replay_archive(paths, since=created - CATCH_UP_MARGIN_S).sent
        print(f"{sent} archived operations since the snapshot re-sent; the next consumer run applies what is missing")
    return EXIT_OK
