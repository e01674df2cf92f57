"""``codi-queue hook``: one Claude Code hook payload on stdin → the spool.

It prints nothing on stdout (for UserPromptSubmit and SessionStart stdout
would be added to the model's context) and always exits 0 (a telemetry hook
must never block or fail a tool call). Trouble goes to the error log that
``codi-queue status`` reports.
"""

from __future__ import annotations

import json
import sys

__all__ = ["run_hook", "run_git_hook"]


def run_hook(home: str | None) -> int:
    from ..errorlog import record_error
    from ..paths import resolve

    paths = resolve(home)
    try:
        raw = sys.stdin.buffer.read()
        from .hooks import operations_for
        from .lite import append_ops, producer_name

        ops = operations_for(json.loads(raw), paths.state)
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
