"""``import``, ``import-transcripts`` and ``mirror-state``: backfill what the platform kept in files."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..fsutil import is_dir, is_file
from .command import command, opt
from .exits import EXIT_INVALID, EXIT_OK, partial, say, where

if TYPE_CHECKING:
    import argparse

    from ..paths import Paths


def _report_rejected(rejected: list[Any], limit: int = 100) -> None:
    for err in rejected[:limit]:
        say(where(err))
    if len(rejected) > limit:
        say(f"... and {len(rejected) - limit} more rejected lines (all are in the dead-letter store)")


@command(
    "import",
    help="backfill a legacy JSONL file (idempotent)",
    description="Enqueue every new line of a legacy JSONL file (a re-import is a no-op); lines that cannot "
                "be operations go to the dead-letter store with file and line.",
    examples=["codi-queue import ~/.claude/data/routing-metrics.jsonl",
              "codi-queue import notes.jsonl --op session_outcome",
              "codi-queue import ~/.claude/data/tool-usage.jsonl --since 2026-01-28T05:00:00Z"],
    options=[
        opt("file"),
        opt("--op", help="operation for every line (default: from the legacy file name)"),
        opt("--since", metavar="WHEN",
            help="enqueue only lines dated after WHEN (unix seconds or ISO 8601): the ones before it are "
                 "already in the table, stored by the platform's own tools"),
        opt("--all", action="store_true", dest="every_line",
            help="enqueue every line even though the table holds rows the platform's own tools wrote"),
    ],
)
def import_(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.jsonl import import_file, progress_bar
    from ..schemas.legacy import op_for_file

    op = args.op or op_for_file(args.file)
    if not op:
        say(f"cannot tell the operation of {args.file} from its name: pass --op")
        return EXIT_INVALID
    if not is_file(args.file):
        say(f"{args.file}: " + ("not a regular file" if os.path.lexists(args.file) else "no such file"))
        return EXIT_INVALID
    since: int | None = None
    if args.since is not None and args.every_line:
        say("--since and --all contradict each other: pass one")
        return EXIT_INVALID
    if args.since is not None:
        from ..errors import shown
        from ..timestamps import normalize_timestamp

        try:
            since = normalize_timestamp(args.since)
        except ValueError as exc:
            say(f"--since: {shown(str(exc), 200)}")
            return EXIT_INVALID
    elif not args.every_line:
        held = _stored_by_the_platform(paths, op)
        if held:
            say(held)
            return EXIT_INVALID
    bar = progress_bar(os.path.basename(args.file), os.path.getsize(args.file))
    result = import_file(paths, args.file, op, final=True, progress=bar, since=since)
    for note in result.notes:
        say(note)
    _report_rejected(result.rejected)
    print(
        f"{args.file}: {result.lines} new lines, {result.enqueued} enqueued as {op}, "
        f"{len(result.rejected)} rejected (to the dead-letter store)"
        + (f", {result.before_since} dated at or before {args.since} left out" if since is not None else "")
    )
    return partial(len(result.rejected), result.enqueued)


def _stored_by_the_platform(paths: Paths, op: str) -> str | None:
    """Why importing ``op``'s legacy file may store its lines twice, or None."""
    from ..consumer.db import stored_by_others
    from ..schemas.registry import OPS
    from ..timestamps import iso

    spec = OPS[op]
    held = stored_by_others(paths.database_file(spec.tier), spec.table)
    if held is None:
        return None
    since = f"--since {iso(held.newest)} to enqueue only the lines dated after its newest row, or " \
        if held.newest is not None else ""
    return f"{held.describe()}. Pass {since}--all to enqueue every line."


@command(
    "import-transcripts",
    help="backfill Claude Code transcripts (idempotent)",
    description="Enqueue the sessions, messages and tool calls of every transcript below DIR; a re-import "
                "is a no-op.",
    examples=["codi-queue import-transcripts ~/.claude/projects"],
    options=[opt("dir", help="a transcripts directory, e.g. ~/.claude/projects")],
)
def import_transcripts(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.transcripts import import_transcripts as run

    if not is_dir(args.dir):
        say(f"{args.dir}: " + ("not a directory" if os.path.lexists(args.dir) else "no such directory"))
        return EXIT_INVALID
    result = run(paths, args.dir)
    for note in result.notes:
        say(note)
    print(
        f"{args.dir}: {result.files} transcripts, {result.lines} new lines, {result.operations} operations enqueued"
        + (f", {result.skipped} unreadable lines skipped" if result.skipped else "")
    )
    return EXIT_OK


@command(
    "mirror-state",
    help="mirror every state.json below DIR (a full rescan)",
    description="Mirror every session directory's state.json below DIR into the project tier.",
    examples=["codi-queue mirror-state ~/.codi/sessions"],
    options=[opt("dir")],
)
def mirror_state(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.statedirs import mirror_state_dirs

    if not is_dir(args.dir):
        say(f"{args.dir}: " + ("not a directory" if os.path.lexists(args.dir) else "no such directory"))
        return EXIT_INVALID
    result = mirror_state_dirs(paths, args.dir, rescan=True)
    for problem in result.problems:
        say(problem)
    print(f"{args.dir}: {result.files} state files, {result.operations} operations enqueued")
    return partial(len(result.problems), result.operations)
