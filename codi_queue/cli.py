"""The ``codi-queue`` command: parse, call the library, map its errors to exit codes.

Exit codes: 0 success; 1 infrastructure or runtime failure (spool unwritable,
disk full, consumer already running, database too new); 2 invalid input or usage.
Heavy modules are imported inside the command that needs them, so the
enqueue path starts fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

from .producers.entry import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, EXIT_PARTIAL


def _parser() -> Any:
    import argparse

    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help="state directory (default: $CODI_QUEUE_HOME, else the platform's user data directory)",
    )

    parser = argparse.ArgumentParser(
        prog="codi-queue", description="Durable write-ahead queue in front of SQLite.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"codi-queue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("enqueue", parents=[common], help="validate and durably enqueue operations",
                       epilog="every operation and its fields: codi-queue ops [OP]\n"
                              "example: codi-queue enqueue tool_event '{\"tool_name\": \"Bash\", \"success\": true}'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("op", help="operation type, e.g. session_outcome (see codi-queue ops)")
    p.add_argument("body", help="a JSON object, or - for JSON lines on stdin")
    p.add_argument("--skip-invalid", action="store_true", help="enqueue the valid records anyway (still exits 2)")
    p.add_argument("--producer", help="producer identity recorded in each envelope")

    p = sub.add_parser("hook", parents=[common], help="read one Claude Code hook payload on stdin and enqueue it")
    p = sub.add_parser("git-hook", parents=[common], help="called by the installed git hooks")
    p.add_argument("name", choices=["post-commit", "post-merge", "pre-push"])
    p.add_argument("args", nargs="*")

    p = sub.add_parser("install-hooks", parents=[common], help="merge codi-queue's hooks into a Claude settings file")
    p.add_argument("settings", nargs="?", default=os.path.expanduser("~/.claude/settings.json"))
    p.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")

    p = sub.add_parser("install-git-hook", parents=[common], help="install post-commit/post-merge/pre-push hooks")
    p.add_argument("repo", nargs="?", default=".")
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")

    p = sub.add_parser("import", parents=[common], help="backfill a legacy JSONL file (idempotent)")
    p.add_argument("file")
    p.add_argument("--op", help="operation for every line (default: from the legacy file name)")

    p = sub.add_parser("import-transcripts", parents=[common], help="backfill Claude Code transcripts (idempotent)")
    p.add_argument("dir", help="a transcripts directory, e.g. ~/.claude/projects")

    p = sub.add_parser("mirror-state", parents=[common], help="mirror every state.json below DIR (a full rescan)")
    p.add_argument("dir")

    p = sub.add_parser("adoption", parents=[common], help="skill adoption rate: invoked / suggested, per skill")
    p.add_argument("--since", help="only suggestions at or after this time (unix seconds or ISO 8601)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "replay", parents=[common], help="re-apply dead letters or the archive",
        description="replay dead-letters: re-apply dead letters (after a fix or a migration); replay archive: "
                    "re-apply journal operations (nothing already applied is applied twice). The older "
                    "spellings --dead-letter, --from-archive and --rebuild still work.",
        epilog="examples: codi-queue replay dead-letters --id 01a2…; codi-queue replay archive --since 2026-11-01",
    )
    p.add_argument("what", nargs="?", choices=["dead-letters", "archive"], help="what to re-apply")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dead-letter", action="store_true", help=argparse.SUPPRESS)  # = replay dead-letters
    mode.add_argument("--from-archive", action="store_true", help=argparse.SUPPRESS)  # = replay archive
    mode.add_argument("--rebuild", action="store_true", help=argparse.SUPPRESS)  # = rebuild
    p.add_argument("--op", help="only this operation type")
    p.add_argument("--id", help="only this dead letter (dead-letters; `codi-queue dead-letters` lists them)")
    p.add_argument("--since", help="enqueued at or after (unix seconds or ISO 8601; archive)")
    p.add_argument("--until", help="enqueued at or before (archive)")
    _rebuild_options(p)

    p = sub.add_parser(
        "rebuild", parents=[common], help="rebuild tier databases from the journal (archive + pending)",
        description="Rebuild databases from the journal. In place needs the consumer stopped and keeps the old "
                    "files aside; --into writes them elsewhere.",
        epilog="example: codi-queue rebuild --tier sessions --into /tmp/rebuilt",
    )
    _rebuild_options(p)
    p.set_defaults(what=None, dead_letter=False, from_archive=False, rebuild=True, op=None, id=None, since=None,
                   until=None)

    p = sub.add_parser(
        "ops", parents=[common], help="every operation: table, tier, fields with types, limits, defaults, aliases",
        description="Every operation codi-queue accepts, generated from its schema: where it is written and "
                    "each field's type, required or default, limits, accepted words and the aliases legacy "
                    "files may use.",
        epilog="examples: codi-queue ops; codi-queue ops session_outcome --json",
    )
    p.add_argument("op", nargs="?", help="one operation (default: list them all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "dead-letters", parents=[common], help="list dead letters: id, operation, reason, attempts, source",
        description="List dead letters (operations that could not be applied) from every database, with what "
                    "`replay dead-letters --id ID` needs.",
        epilog="example: codi-queue dead-letters --op git_event --since 2026-11-01",
    )
    p.add_argument("--op", help="only this operation type")
    p.add_argument("--since", help="last failed at or after (unix seconds or ISO 8601)")
    p.add_argument("--json", action="store_true", help="one JSON array")

    p = sub.add_parser("backup", parents=[common], help="consistent online snapshots of every tier database")
    p.add_argument("--into", help="directory for the snapshot (default: HOME/backups/<timestamp>)")

    p = sub.add_parser("restore", parents=[common], help="put a snapshot back (consumer stopped; old files kept)")
    p.add_argument("snapshot", help="a directory written by codi-queue backup")
    p.add_argument("--tier", action="append", choices=["platform", "org", "sessions", "project", "state"])
    p.add_argument("--no-catch-up", action="store_true", help="do not re-send archived operations since the snapshot")

    p = sub.add_parser("db", parents=[common], help="database care: check, vacuum, migrate")
    p.add_argument("action", choices=["check", "vacuum", "migrate"])
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("agent", parents=[common], help="run the consumer as a KeepAlive agent (launchd/systemd)")
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument("--kind", choices=["launchd", "systemd"], help="default: launchd on macOS, systemd elsewhere")
    p.add_argument("--dry-run", action="store_true", help="print the file and the commands, change nothing")

    p = sub.add_parser("config", parents=[common], help="the effective configuration")
    p.add_argument("--show", action="store_true", help="print it (the default)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("run", parents=[common], help="run the consumer (the only writer of the databases)")
    p.add_argument("--once", action="store_true", help="drain what is queued, then exit")
    p.add_argument("--batch", type=int, default=20_000, help="operations per transaction (default 20000)")
    p.add_argument("--poll", type=float, default=2.0, help="safety-net poll interval in seconds (default 2)")
    p.add_argument(
        "--rotate-bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="claim and archive the inbox once it holds this many bytes (default 16 MiB)",
    )
    p.add_argument("--no-push", action="store_true",
                   help="do not push to the team database even if [sync] is set (push with `sync push` instead)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every batch")

    p = sub.add_parser("status", parents=[common], help="queue depth, lag, dead letters, consumer liveness")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    p.add_argument("--prometheus", metavar="FILE", help="write the Prometheus textfile format to FILE (- for stdout)")

    p = sub.add_parser("paths", parents=[common], help="where everything lives")
    p.add_argument("--json", action="store_true")

    from .sync.command import add_parser as add_sync

    add_sync(sub, common)
    return parser


def _rebuild_options(p: Any) -> None:
    p.add_argument("--tier", action="append", choices=["platform", "org", "sessions", "project", "state"],
                   help="only this tier (rebuild; repeatable; default all)")
    p.add_argument("--into", help="write rebuilt databases here instead of replacing the live ones (rebuild)")
    p.add_argument("--dry-run", action="store_true", help="count what would be applied (rebuild)")


def main(argv: Sequence[str] | None = None) -> int:
    """The edge: library errors become one line on stderr and a documented exit status, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        fast = _fast_path(argv)
        if fast is not None:
            return fast
        args = _parser().parse_args(argv)
        import signal

        # A file-size limit must surface as EFBIG (one line, exit 1), not as the
        # default SIGXFSZ that kills the process mid-write.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from .paths import resolve

        paths = resolve(getattr(args, "home", None))
        if args.command != "paths":
            paths.check_safe()  # a home another user can write to is never read or written
        return int(_COMMANDS[args.command](args, paths))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (status | head): nothing more to say, and
        # nothing to flush into the closed pipe at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the edge: one line, an exit status, the details in the log
        return _fail(exc, argv)


def _fail(exc: BaseException, argv: list[str]) -> int:
    from .errors import CodiQueueError

    if isinstance(exc, CodiQueueError):
        _err(str(exc))
        return EXIT_FAILURE
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        _err(f"{exc.strerror or exc}{where}")
        return EXIT_FAILURE
    what = type(exc).__module__.split(".")[0]
    if what == "apsw":  # the database said no: locked, full, corrupt, read-only
        _err(f"database error: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    # Not an error we raise on purpose: still one line here, the traceback in the error log.
    import traceback

    detail = "".join(traceback.format_exception(exc))
    logged = False
    try:
        from .errorlog import record_error
        from .paths import resolve

        logged = record_error(resolve(_split_home(argv)[0]).error_log, "cli", f"{type(exc).__name__}: {exc}",
                              argv=argv, traceback=detail)
    except Exception:  # noqa: BLE001 - the home itself may be what failed; the line below still goes out
        logged = False
    _err(f"internal error: {type(exc).__name__}: {exc}" + (" (traceback in the error log)" if logged else ""))
    return EXIT_FAILURE


def _split_home(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--home DIR`` (or ``--home=DIR``) and every other argument, in order."""
    home: str | None = None
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--home":
            home = next(it, None)
        elif arg.startswith("--home="):
            home = arg[7:]
        else:
            rest.append(arg)
    return home, rest


def _fast_path(argv: list[str]) -> int | None:
    """``hook`` runs on every tool call: skip argparse (and msgspec) entirely."""
    home, rest = _split_home(argv)
    if rest == ["hook"]:
        from .producers.entry import run_hook

        return run_hook(home)
    if len(rest) >= 2 and rest[0] == "git-hook" and not rest[1].startswith("-"):
        from .producers.entry import run_git_hook

        return run_git_hook(home, rest[1], rest[2:])
    if rest and rest[0] == "enqueue":
        return _fast_enqueue(home, rest[1:])
    return None


def _fast_enqueue(home: str | None, args: list[str]) -> int | None:
    positional: list[str] = []
    skip_invalid = False
    producer: str | None = None
    it = iter(args)
    for arg in it:
        if arg == "--skip-invalid":
            skip_invalid = True
        elif arg == "--producer":
            producer = next(it, None)
            if producer is None:
                return None
        elif arg.startswith("--producer="):
            producer = arg[11:]
        elif arg.startswith("-") and arg != "-":
            return None  # help or a mistake: let argparse say so
        else:
            positional.append(arg)
    if len(positional) != 2:
        return None
    from .producers.entry import run_enqueue

    return run_enqueue(home, positional[0], positional[1], skip_invalid, producer)


def _err(message: str) -> None:
    sys.stderr.write(f"codi-queue: {message}\n")


def _cmd_enqueue(args: Any, paths: Any) -> int:
    from .producers.entry import run_enqueue

    return run_enqueue(paths.home, args.op, args.body, args.skip_invalid, args.producer)


def _cmd_run(args: Any, paths: Any) -> int:
    import logging

    from .config import load_config
    from .consumer.loop import Consumer

    from .consumer.logfile import configure_logging

    configure_logging(paths.consumer_log, verbose=args.verbose)
    consumer = Consumer(
        paths,
        batch_ops=max(1, args.batch),
        poll_interval=max(0.05, args.poll),
        rotate_bytes=max(1, args.rotate_bytes),
        config=load_config(paths),
    )
    sync = consumer.config.sync if consumer.config else None
    pushing = sync is not None and bool(sync.push) and not args.once and not args.no_push

    def started() -> None:
        dbs = ", ".join(f"{t} {paths.database(t)}" for t in ("platform", "org", "sessions", "project"))
        what = "draining what is queued" if args.once else "waiting for operations (Ctrl-C stops it)"
        if pushing and sync is not None:
            from .config import redact_url

            what += f"; pushing {', '.join(sync.push)} to {redact_url(sync.url)} as {sync.machine}"
        sys.stderr.write(f"codi-queue: consumer for home {paths.home} ({paths.source}); databases: {dbs}; {what}\n")
        sys.stderr.flush()

    if pushing and sync is not None:
        from .sync.background import PushThread

        with PushThread(paths, sync) as pusher:
            consumer.on_commit = pusher.wake
            stats = consumer.run(once=False, on_start=started)
    else:
        stats = consumer.run(once=args.once, on_start=started)
    if args.once or args.verbose:
        sys.stderr.write(
            f"codi-queue: {stats.operations} operations in {stats.batches} batches, "
            f"{stats.applied} rows changed, {stats.dead_letters} dead letters\n"
        )
    return EXIT_OK


def _cmd_status(args: Any, paths: Any) -> int:
    import json

    from .consumer.status import collect, prometheus_text, render_human

    if not os.path.isdir(paths.home):
        _err(f"no codi-queue home at {paths.home} ({paths.source}): nothing was ever enqueued or run there")
        return EXIT_FAILURE
    if args.prometheus:
        text = prometheus_text(collect(paths))
        if args.prometheus == "-":
            sys.stdout.write(text)
        else:
            from .consumer.loop import write_textfile

            write_textfile(args.prometheus, text)
        return EXIT_OK
    if not args.watch:
        report = collect(paths)
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else render_human(report, paths.home))
        return EXIT_OK
    import threading

    tick = threading.Event()  # never set: its wait is the refresh interval
    try:  # Ctrl-C is how --watch ends, wherever in the loop it lands
        while True:
            report = collect(paths)
            out = json.dumps(report, indent=2, sort_keys=True) if args.json else render_human(report, paths.home)
            sys.stdout.write("\x1b[H\x1b[2J" + out + f"\n\n(every {args.interval:g}s; Ctrl-C to stop)\n")
            sys.stdout.flush()
            tick.wait(max(0.2, args.interval))
    except KeyboardInterrupt:
        return EXIT_OK


def _cmd_paths(args: Any, paths: Any) -> int:
    import json

    from .config import ConfigError, load_config

    data = paths.as_dict()
    try:
        sync = load_config(paths).sync
        data["sync"] = f"{sync.as_dict()['url']} as {sync.machine}" if sync else "not configured"
    except ConfigError as exc:
        data["sync"] = f"unknown: {exc.reason}"  # `paths` answers even when the config file is broken
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    for key, value in data.items():
        if key == "databases_from":
            continue
        if isinstance(value, dict):
            for sub, path in value.items():
                source = data["databases_from"].get(sub) if key == "databases" else None
                print(f"{key}.{sub:<10} {path}" + (f"  ({source})" if source and source != "default" else ""))
        else:
            print(f"{key:<19} {value}")
    return EXIT_OK


def _cmd_hook(args: Any, paths: Any) -> int:
    from .producers.entry import run_hook

    return run_hook(paths.home)


def _cmd_git_hook(args: Any, paths: Any) -> int:
    from .producers.entry import run_git_hook

    return run_git_hook(paths.home, args.name, args.args)


def _explicit_home(args: Any, paths: Any) -> str:
    # Hooks get the home resolved now: a hook process then needs neither
    # platformdirs nor the config file, and cannot drift to another home.
    return str(paths.home)


def _cmd_install_hooks(args: Any, paths: Any) -> int:
    from .producers.install import command_line, install_claude_hooks

    try:
        diff, backup = install_claude_hooks(args.settings, command_line("hook", _explicit_home(args, paths)), args.dry_run)
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return EXIT_INVALID if isinstance(exc, ValueError) else EXIT_FAILURE
    if args.dry_run:
        sys.stdout.write(diff or "no change\n")
    elif not diff:
        print(f"{args.settings}: hooks already installed")
    else:
        print(f"{args.settings}: hooks installed" + (f" (backup: {backup})" if backup else ""))
    return EXIT_OK


def _cmd_install_git_hook(args: Any, paths: Any) -> int:
    from .producers.install import command_line, install_git_hooks

    try:
        for line in install_git_hooks(args.repo, command_line("git-hook", _explicit_home(args, paths)), args.dry_run):
            print(line)
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return EXIT_INVALID if isinstance(exc, ValueError) else EXIT_FAILURE
    return EXIT_OK


def _partial(refused: int, done: int) -> int:
    """0 when nothing was refused; 3 when some input was refused and the rest enqueued; 2 when all of it was."""
    if not refused:
        return EXIT_OK
    return EXIT_PARTIAL if done else EXIT_INVALID


def _report_rejected(rejected: list[Any], limit: int = 100) -> None:
    for err in rejected[:limit]:
        where = f"line {err.record}" + (f": field {err.field}" if err.field else "")
        _err(f"{where}: {err.reason}")
    if len(rejected) > limit:
        _err(f"... and {len(rejected) - limit} more rejected lines (all are in the dead-letter store)")


def _cmd_import(args: Any, paths: Any) -> int:
    from .producers.jsonl import import_file, progress_bar
    from .schemas.legacy import op_for_file

    op = args.op or op_for_file(args.file)
    if not op:
        _err(f"cannot tell the operation of {args.file} from its name: pass --op")
        return EXIT_INVALID
    if not os.path.isfile(args.file):
        _err(f"{args.file}: no such file")
        return EXIT_INVALID
    bar = progress_bar(os.path.basename(args.file), os.path.getsize(args.file))
    result = import_file(paths, args.file, op, final=True, progress=bar)
    for note in result.notes:
        _err(note)
    _report_rejected(result.rejected)
    print(
        f"{args.file}: {result.lines} new lines, {result.enqueued} enqueued as {op}, "
        f"{len(result.rejected)} rejected (to the dead-letter store)"
    )
    return _partial(len(result.rejected), result.enqueued)


def _cmd_import_transcripts(args: Any, paths: Any) -> int:
    from .producers.transcripts import import_transcripts

    if not os.path.isdir(args.dir):
        _err(f"{args.dir}: not a directory")
        return EXIT_INVALID
    result = import_transcripts(paths, args.dir)
    for note in result.notes:
        _err(note)
    print(
        f"{args.dir}: {result.files} transcripts, {result.lines} new lines, {result.operations} operations enqueued"
        + (f", {result.skipped} unreadable lines skipped" if result.skipped else "")
    )
    return EXIT_OK


def _cmd_mirror_state(args: Any, paths: Any) -> int:
    from .producers.statedirs import mirror_state_dirs

    if not os.path.isdir(args.dir):
        _err(f"{args.dir}: not a directory")
        return EXIT_INVALID
    result = mirror_state_dirs(paths, args.dir, rescan=True)
    for problem in result.problems:
        _err(problem)
    print(f"{args.dir}: {result.files} state files, {result.operations} operations enqueued")
    return _partial(len(result.problems), result.operations)


def _cmd_adoption(args: Any, paths: Any) -> int:
    import json

    from .consumer.db import open_readonly
    from .queries import skill_adoption
    from .schemas.types import normalize_timestamp

    try:
        since = normalize_timestamp(args.since) if args.since else None
    except ValueError as exc:
        _err(f"--since: {exc}")
        return EXIT_INVALID
    conn = open_readonly(paths.database("sessions"))
    if conn is None:
        rows: list[dict[str, Any]] = []
    else:
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


def _cmd_replay(args: Any, paths: Any) -> int:
    from .producers.jsonl import progress_bar

    if args.what == "dead-letters":
        args.dead_letter = True
    elif args.what == "archive":
        args.from_archive = True
    if args.what and (args.dead_letter and args.what != "dead-letters" or args.from_archive and args.what != "archive"
                      or args.rebuild):
        _err(f"replay {args.what} cannot be combined with another mode")
        return EXIT_INVALID
    if not (args.dead_letter or args.from_archive or args.rebuild):
        _err("replay what? codi-queue replay dead-letters | replay archive (or codi-queue rebuild)")
        return EXIT_INVALID
    if args.dead_letter:
        from .recovery.replay import replay_dead_letters

        result = replay_dead_letters(paths, args.op, args.id)
        for why in result.skipped:
            _err(why)
        print(f"{result.sent} dead letters re-sent; the consumer removes each one that applies "
              f"and keeps the others with their new reason")
        return EXIT_OK
    if args.from_archive:
        from .recovery.replay import parse_time, replay_archive

        try:
            since, until = parse_time(args.since), parse_time(args.until)
        except ValueError as exc:
            _err(f"--since/--until: {exc}")
            return EXIT_INVALID
        result = replay_archive(paths, since, until, args.op)
        for why in result.skipped:
            _err(f"damaged, skipped: {why}")
        print(f"{result.sent} journal operations re-sent from {result.dirs} queue directories (the archive, "
              "then segments and the inbox not archived yet); the consumer skips those already applied"
              + (f"; {len(result.skipped)} damaged spans skipped" if result.skipped else ""))
        return EXIT_OK
    from .consumer.loop import ALL_TIERS
    from .recovery.journal import journal_dirs
    from .recovery.rebuild import count_journal, rebuild_in_place, rebuild_into

    tiers = tuple(args.tier) if args.tier else ALL_TIERS
    if args.dry_run:
        counted = count_journal(paths, tiers)
        for table, n in counted.per_table.items():
            print(f"{table:<28} {n}")
        print(f"{counted.operations} operations would be applied")
        return EXIT_OK
    bar = progress_bar("rebuild", len(journal_dirs(paths)))
    if args.into:
        rebuilt = rebuild_into(paths, args.into, tiers, bar)
    else:
        rebuilt = rebuild_in_place(paths, tiers, bar)
    for table, n in sorted(rebuilt.per_table.items()):
        print(f"{table:<28} {n} rows")
    for tier, old in rebuilt.replaced.items():
        print(f"{tier}: previous database kept at {old}")
    for warning in rebuilt.warnings:
        _err(warning)
    print(f"rebuilt {', '.join(tiers)} from {rebuilt.operations} journal operations"
          + (f" into {args.into}" if args.into else ""))
    return EXIT_OK


def _cmd_backup(args: Any, paths: Any) -> int:
    from .recovery.backup import backup

    result = backup(paths, args.into)
    for tier, info in result.tiers.items():
        print(f"{tier:<9} {info['bytes']:>12} bytes  schema v{info['user_version']}  integrity {info['integrity']}")
    for problem in result.problems:
        _err(problem)
    print(f"snapshot: {result.directory}")
    return EXIT_FAILURE if result.problems or not result.tiers else EXIT_OK


def _cmd_restore(args: Any, paths: Any) -> int:
    from .recovery.backup import CATCH_UP_MARGIN_S, restore
    from .recovery.replay import replay_archive

    moved, created = restore(paths, args.snapshot, tuple(args.tier) if args.tier else None)
    for tier, old in moved.items():
        print(f"{tier}: restored; the file it replaced is kept at {old}")
    if not args.no_catch_up:
        sent = replay_archive(paths, since=created - CATCH_UP_MARGIN_S).sent
        print(f"{sent} archived operations since the snapshot re-sent; the next consumer run applies what is missing")
    return EXIT_OK


def _cmd_db(args: Any, paths: Any) -> int:
    import json

    from .recovery import maintenance

    if args.action == "check":
        report = maintenance.check(paths)
        if args.json:
            print(json.dumps(report, indent=2))
        for tier, info in report.items():
            if not args.json:
                if not info["exists"]:
                    print(f"{tier:<9} absent")
                else:
                    print(f"{tier:<9} integrity {info['integrity']}  schema v{info['user_version']}"
                          f"/{info['latest_version']}  {info['bytes']} bytes  wal {info['wal_bytes']} bytes")
        bad = [t for t, i in report.items() if i["exists"] and i["integrity"] != "ok"]
        return EXIT_FAILURE if bad else EXIT_OK
    if args.action == "vacuum":
        for tier, (before, after) in maintenance.vacuum(paths).items():
            print(f"{tier:<9} {before} -> {after} bytes")
        return EXIT_OK
    for tier, (before, after) in maintenance.migrate(paths).items():
        print(f"{tier:<9} schema v{before} -> v{after}")
    return EXIT_OK


def _cmd_agent(args: Any, paths: Any) -> int:
    from .agent import agent_for
    from .consumer.lock import consumer_pid
    from .fsutil import write_atomic

    agent = agent_for(paths, args.kind)
    if args.action == "status":
        pid = consumer_pid(paths)
        print(f"agent file: {agent.path} ({'present' if os.path.exists(agent.path) else 'absent'})")
        print(f"consumer:   {'running, pid ' + str(pid) if pid else 'not running'}")
        if not args.dry_run:
            failures = agent.apply([agent.status])
            for failure in failures:
                _err(failure)
        return EXIT_OK
    commands = agent.install if args.action == "install" else agent.uninstall
    if args.dry_run:
        if args.action == "install":
            print(f"# would write {agent.path}:")
            sys.stdout.write(agent.content.decode())
        else:
            print(f"# would remove {agent.path}")
        for cmd in commands:
            print("# would run: " + " ".join(cmd))
        return EXIT_OK
    if args.action == "install":
        os.makedirs(os.path.dirname(agent.path), exist_ok=True)
        write_atomic(agent.path, agent.content)
        print(f"wrote {agent.path}")
        # bootout first so a reinstall reloads; it fails when nothing was loaded, which is fine
        failures = [f for f in agent.apply(commands) if "bootout" not in f]
    else:
        failures = agent.apply(commands)
        if os.path.exists(agent.path):
            os.remove(agent.path)
            print(f"removed {agent.path}")
    for failure in failures:
        _err(failure)
    return EXIT_FAILURE if failures else EXIT_OK


def _cmd_config(args: Any, paths: Any) -> int:
    import json

    from .config import load_config

    data = {"paths": paths.as_dict(), **load_config(paths).as_dict()}
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(f"# config file: {data['file']}" + ("" if data["file_exists"] else " (absent: defaults)"))
    print(f"# home: {paths.home} (from {paths.source})")
    print("[databases]")
    for tier, db in data["databases"].items():
        print(f"{tier} = {json.dumps(db['path'])}    # {db['from']}")
    print()
    watch = data["watch"]
    print("[watch]")
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


def _cmd_ops(args: Any, paths: Any) -> int:
    import json

    from .schemas.describe import describe_op, describe_ops, suggest_op
    from .schemas.registry import OPS

    if args.op is not None and args.op not in OPS:
        _err(f"unknown operation {args.op!r}{suggest_op(args.op)}; codi-queue ops lists them")
        return EXIT_INVALID
    ops = [describe_op(args.op)] if args.op else describe_ops()
    if args.json:
        print(json.dumps(ops[0] if args.op else ops, indent=2))
        return EXIT_OK
    if not args.op:
        for d in ops:
            print(f"{d['op']:<24} {d['tier']:<9} {d['table']:<26} {d['write']}")
        return EXIT_OK
    d = ops[0]
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
    return EXIT_OK


def _cmd_dead_letters(args: Any, paths: Any) -> int:
    import json
    import time

    from .recovery.replay import list_dead_letters, parse_time

    try:
        since = parse_time(args.since)
    except ValueError as exc:
        _err(f"--since: {exc}")
        return EXIT_INVALID
    letters = list_dead_letters(paths, args.op, since)
    if args.json:
        print(json.dumps(letters, indent=2))
        return EXIT_OK
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["last_failed"]))
        where = f"  [{d['source']}]" if d["source"] else ""
        reason = " ".join(str(d["reason"]).split())
        print(f"{d['id']}  {d['op']}  {d['tier']}  x{d['attempts']}  {when}  {reason[:160]}{where}")
    print(f"{len(letters)} dead letters" + ("; re-apply with: codi-queue replay dead-letters [--id ID]"
                                            if letters else ""))
    return EXIT_OK


def _cmd_sync(args: Any, paths: Any) -> int:
    from .sync.command import run

    return run(args, paths)


_COMMANDS = {
    "sync": _cmd_sync,
    "dead-letters": _cmd_dead_letters,
    "ops": _cmd_ops,
    "import": _cmd_import,
    "import-transcripts": _cmd_import_transcripts,
    "mirror-state": _cmd_mirror_state,
    "replay": _cmd_replay,
    "rebuild": _cmd_replay,
    "backup": _cmd_backup,
    "restore": _cmd_restore,
    "db": _cmd_db,
    "agent": _cmd_agent,
    "adoption": _cmd_adoption,
    "config": _cmd_config,
    "hook": _cmd_hook,
    "git-hook": _cmd_git_hook,
    "install-hooks": _cmd_install_hooks,
    "install-git-hook": _cmd_install_git_hook,
    "enqueue": _cmd_enqueue,
    "run": _cmd_run,
    "status": _cmd_status,
    "paths": _cmd_paths,
}
