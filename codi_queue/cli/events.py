"""``enqueue``, ``hook`` and ``git-hook``: the commands that run as a new process per event.

They stay on the standard library (no argparse, no msgspec): ``cli.main``
calls the ``run_*`` functions straight from ``sys.argv``, and only ``--help``
or a usage mistake builds the parser.

``hook`` reads one Claude Code hook payload on stdin. It prints nothing on
stdout (for UserPromptSubmit and SessionStart stdout would be added to the
model's context) and always exits 0 (a telemetry hook must never block or
fail a tool call); trouble goes to the error log that ``status`` reports.
``git-hook`` is the same for git. ``enqueue`` validates against the schema
generated from the Structs and exits 0, 1 (infrastructure), 2 (invalid input:
nothing enqueued) or 3 (``--skip-invalid``: the valid records enqueued).
"""

from __future__ import annotations

import sys
TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

from .command import command, opt
from .exits import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, EXIT_PARTIAL, say, where

if TYPE_CHECKING:
    from typing import Any

    import argparse

    from ..paths import Paths

__all__ = ["run_hook", "run_git_hook", "run_enqueue"]

GIT_HOOKS = ("post-commit", "post-merge", "pre-push")


def _hook_paths(home: str | None, what: str) -> Any:
    """The checked paths for a hook, or None (said on stderr: a hook never fails its caller)."""
    from ..errors import CodiQueueError
    from ..paths import resolve

    try:
        paths = resolve(home)
        paths.check_safe(databases=False)  # hooks write in-flight markers under state/ too
    except CodiQueueError as exc:
        sys.stderr.write(f"codi-queue {what}: {exc}\n")
        return None
    return paths


def run_hook(home: str | None) -> int:
    from ..errorlog import record_error

    paths = _hook_paths(home, "hook")
    if paths is None:
        return EXIT_OK
    try:
        raw = sys.stdin.buffer.read()
        from ..producers.hooks import operations_for
        from ..producers.records import append_ops, producer_name
        from ..values import loads

        problems: list[str] = []
        append_ops(paths, operations_for(loads(raw), paths.state, problems=problems), producer_name("hook"))
        for problem in problems:
            if not record_error(paths.error_log, "hook", problem):
                sys.stderr.write(f"codi-queue hook: {problem} (the error log could not be written either)\n")
    except Exception as exc:  # noqa: BLE001 - the edge: a hook must exit 0; the error is logged, not lost
        message = f"{type(exc).__name__}: {exc}"
        if not record_error(paths.error_log, "hook", message):
            sys.stderr.write(f"codi-queue hook: {message} (the error log could not be written either)\n")
    return EXIT_OK


def run_git_hook(home: str | None, name: str, args: list[str]) -> int:
    """Called by the installed git hooks; like ``run_hook``, it never fails the git command."""
    from ..errorlog import record_error

    paths = _hook_paths(home, "git-hook")
    if paths is None:
        return EXIT_OK
    try:
        from ..values import decode_text

        stdin = "" if sys.stdin is None or sys.stdin.isatty() else decode_text(sys.stdin.buffer.read())
        from ..producers.git import operations_for_git_hook
        from ..producers.records import append_ops, producer_name

        append_ops(paths, operations_for_git_hook(name, args, stdin), producer_name(f"git-{name}"))
    except Exception as exc:  # noqa: BLE001 - the edge: git must not fail because of telemetry
        message = f"{name}: {type(exc).__name__}: {exc}"
        if not record_error(paths.error_log, "git-hook", message):
            sys.stderr.write(f"codi-queue git-hook: {message} (the error log could not be written either)\n")
    return EXIT_OK


def run_enqueue(home: str | None, op: str, body_arg: str, skip_invalid: bool = False, producer: str | None = None) -> int:
    from ..errors import InvalidOperation, SpoolError, unknown_operation
    from ..paths import resolve
    from ..producers.records import Op, append_ops, producer_name
    from ..producers.schemacheck import check, decode_line, load_schema

    if op not in load_schema():
        say(unknown_operation(op, load_schema()).reason)
        return EXIT_INVALID
    if body_arg == "-":
        lines = [(n, line) for n, line in enumerate(sys.stdin.buffer.read().splitlines(), 1) if line.strip()]
    else:
        lines = [(1, body_arg.encode("utf-8", "surrogateescape"))]
    ops: list[Op] = []
    bad = 0
    for n, line in lines:
        try:
            ops.append((op, check(op, decode_line(op, line, n), n), None))
        except InvalidOperation as exc:
            bad += 1
            say(where(exc))
    if bad and (not skip_invalid or not ops):
        say(f"{bad} of {len(lines)} records invalid; nothing enqueued")
        return EXIT_INVALID
    paths = resolve(home)
    try:
        append_ops(paths, ops, producer or producer_name("cli"))
    except SpoolError as exc:
        from ..errorlog import record_error

        record_error(paths.error_log, "producer", str(exc), op=op, operations=len(ops), errno=exc.errno)
        say(str(exc))
        return EXIT_FAILURE
    if bad:
        say(f"{bad} of {len(lines)} records invalid; the other {len(ops)} were enqueued")
        return EXIT_PARTIAL
    return EXIT_OK


def fast_enqueue(home: str | None, args: list[str]) -> int | None:
    """``enqueue`` parsed by hand; None when the arguments need argparse (help or a mistake)."""
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
            return None
        else:
            positional.append(arg)
    if len(positional) != 2:
        return None
    return run_enqueue(home, positional[0], positional[1], skip_invalid, producer)


@command(
    "enqueue",
    help="validate and durably enqueue operations",
    description="Validate operations against the schema and append them to the spool; durable when it returns. "
                "Every operation and its fields: codi-queue ops [OP].",
    examples=["codi-queue enqueue tool_event '{\"tool_name\": \"Bash\", \"success\": true}'",
              "jq -c '.[]' outcomes.json | codi-queue enqueue session_outcome -"],
    options=[
        opt("op", help="operation type, e.g. session_outcome (see codi-queue ops)"),
        opt("body", help="a JSON object, or - for JSON lines on stdin"),
        opt("--skip-invalid", action="store_true", help="enqueue the valid records anyway (then exits 3)"),
        opt("--producer", help="producer identity recorded in each envelope"),
    ],
)
def enqueue(args: argparse.Namespace, paths: Paths) -> int:
    return run_enqueue(paths.home, args.op, args.body, args.skip_invalid, args.producer)


@command(
    "hook",
    help="read one Claude Code hook payload on stdin and enqueue it",
    description="Called by Claude Code for every hooked event (install-hooks sets it up). Prints nothing, "
                "always exits 0; trouble goes to the error log `codi-queue status` reports.",
    examples=["echo '{\"hook_event_name\": \"Stop\", \"session_id\": \"s1\"}' | codi-queue hook"],
)
def hook(args: argparse.Namespace, paths: Paths) -> int:
    return run_hook(paths.home)


@command(
    "git-hook",
    help="called by the installed git hooks",
    description="Records a git event (install-git-hook sets it up); never fails the git command.",
    examples=["codi-queue git-hook post-commit"],
    options=[opt("name", choices=list(GIT_HOOKS)), opt("args", nargs="*")],
)
def git_hook(args: argparse.Namespace, paths: Paths) -> int:
    return run_git_hook(paths.home, args.name, args.args)
