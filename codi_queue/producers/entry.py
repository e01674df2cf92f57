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

__all__ = ["run_hook", "run_git_hook", "run_enqueue"]


def run_hook(home: str | None) -> int:
    from ..errorlog import record_error
    from ..paths import resolve

    paths = resolve(home)
    try:
        raw = sys.stdin.buffer.read()
        from ..values import loads
        from .hooks import operations_for
        from .lite import append_ops, producer_name

        ops = operations_for(loads(raw), paths.state)
        append_ops(paths, ops, producer_name("hook"))
    except Exception as exc:  # noqa: BLE001 - the edge: a hook must exit 0; the error is logged, not lost
        record_error(paths.error_log, "hook", f"{type(exc).__name__}: {exc}")
    return 0


def run_git_hook(home: str | None, name: str, args: list[str]) -> int:
    """Called by the installed git hooks; like ``run_hook``, it never fails the git command."""
    from ..errorlog import record_error
    from ..paths import resolve

    paths = resolve(home)
    try:
        stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        from .git import operations_for_git_hook
        from .lite import append_ops, producer_name

        append_ops(paths, operations_for_git_hook(name, args, stdin), producer_name(f"git-{name}"))
    except Exception as exc:  # noqa: BLE001 - the edge: git must not fail because of telemetry
        record_error(paths.error_log, "git-hook", f"{name}: {type(exc).__name__}: {exc}")
    return 0


def _err(message: str) -> None:
    sys.stderr.write(f"codi-queue: {message}\n")


def run_enqueue(home: str | None, op: str, body_arg: str, skip_invalid: bool = False, producer: str | None = None) -> int:
    from ..errors import InvalidOperation, SpoolError
    from ..paths import resolve
    from .fastcheck import check, decode_line, load_schema
    from .lite import append_ops, producer_name

    if op not in load_schema():
        _err(f"unknown operation {op!r} (known: {', '.join(sorted(load_schema()))})")
        return 2
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
    if bad and not skip_invalid:
        _err(f"{bad} of {len(lines)} records invalid; nothing enqueued")
        return 2
    paths = resolve(home)
    try:
        append_ops(paths, ops, producer or producer_name("cli"))
    except SpoolError as exc:
        from ..errorlog import record_error

        record_error(paths.error_log, "producer", str(exc), op=op, operations=len(ops), errno=exc.errno)
        _err(str(exc))
        return 1
    if bad:
        _err(f"{bad} of {len(lines)} records invalid; the other {len(ops)} were enqueued")
        return 2
    return 0
