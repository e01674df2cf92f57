"""The commands that run as a new process per event, kept to the standard library.

``codi-queue hook`` reads one Claude Code hook payload on stdin. It prints
nothing on stdout (for UserPromptSubmit and SessionStart stdout would be
added to the model's context) and always exits 0 (a telemetry hook must
never block or fail a tool call); trouble goes to the error log that
``codi-queue status`` reports. ``git-hook`` is the same for git.
``codi-queue enqueue`` validates against the generated schema and exits
0, 1 (infrastructure) or 2 (invalid input: nothing enqueued).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["run_hook", "run_git_hook", "run_enqueue", "EXIT_OK", "EXIT_FAILURE", "EXIT_INVALID", "EXIT_PARTIAL"]

# The documented exit statuses (README): the fast paths and the full CLI share them.
EXIT_OK = 0
EXIT_FAILURE = 1  # infrastructure or runtime failure: nothing (more) was done
EXIT_INVALID = 2  # invalid input or usage: nothing was enqueued
EXIT_PARTIAL = 3  # some records were refused (each named on stderr), the others were enqueued


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
        return 0
    try:
        raw = sys.stdin.buffer.read()
        from ..values import loads
        from .hooks import operations_for
        from .records import append_ops, producer_name

        ops = operations_for(loads(raw), paths.state)
        append_ops(paths, ops, producer_name("hook"))
    except Exception as exc:  # noqa: BLE001 - the edge: a hook must exit 0; the error is logged, not lost
        message = f"{type(exc).__name__}: {exc}"
        if not record_error(paths.error_log, "hook", message):
            sys.stderr.write(f"codi-queue hook: {message} (the error log could not be written either)\n")
    return 0


def run_git_hook(home: str | None, name: str, args: list[str]) -> int:
    """Called by the installed git hooks; like ``run_hook``, it never fails the git command."""
    from ..errorlog import record_error

    paths = _hook_paths(home, "git-hook")
    if paths is None:
        return 0
    try:
        from ..values import decode_text

        stdin = "" if sys.stdin is None or sys.stdin.isatty() else decode_text(sys.stdin.buffer.read())
        from .git import operations_for_git_hook
        from .records import append_ops, producer_name

        append_ops(paths, operations_for_git_hook(name, args, stdin), producer_name(f"git-{name}"))
    except Exception as exc:  # noqa: BLE001 - the edge: git must not fail because of telemetry
        message = f"{name}: {type(exc).__name__}: {exc}"
        if not record_error(paths.error_log, "git-hook", message):
            sys.stderr.write(f"codi-queue git-hook: {message} (the error log could not be written either)\n")
    return 0


def _err(message: str) -> None:
    sys.stderr.write(f"codi-queue: {message}\n")


def run_enqueue(home: str | None, op: str, body_arg: str, skip_invalid: bool = False, producer: str | None = None) -> int:
    from ..errors import InvalidOperation, SpoolError
    from ..paths import resolve
    from .records import append_ops, producer_name
    from .schemacheck import check, decode_line, load_schema

    if op not in load_schema():
        _err(f"unknown operation {op!r} (known: {', '.join(sorted(load_schema()))})")
        return EXIT_INVALID
    if body_arg == "-":
        lines = [(n, line) for n, line in enumerate(sys.stdin.buffer.read().splitlines(), 1) if line.strip()]
    else:
        lines = [(1, body_arg.encode("utf-8", "surrogateescape"))]
    ops: list[tuple[str, dict[str, object], None]] = []
    bad = 0
    for n, line in lines:
        try:
            ops.append((op, check(op, decode_line(op, line, n), n), None))
        except InvalidOperation as exc:
            bad += 1
            _err(f"line {n}" + (f": field {exc.field}" if exc.field else "") + f": {exc.reason}")
    if bad and (not skip_invalid or not ops):
        _err(f"{bad} of {len(lines)} records invalid; nothing enqueued")
        return EXIT_INVALID
    paths = resolve(home)
    try:
        append_ops(paths, ops, producer or producer_name("cli"))
    except SpoolError as exc:
        from ..errorlog import record_error

        record_error(paths.error_log, "producer", str(exc), op=op, operations=len(ops), errno=exc.errno)
        _err(str(exc))
        return EXIT_FAILURE
    if bad:
        _err(f"{bad} of {len(lines)} records invalid; the other {len(ops)} were enqueued")
        return EXIT_PARTIAL
    return 0
