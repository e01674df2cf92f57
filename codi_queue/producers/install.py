"""Install producers where they run: Claude Code's settings.json and git hooks.

Both installers merge, never clobber: what is already there stays, a backup
is kept, and running them twice changes nothing the second time.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

from ..fsutil import read_users_file, write_users_file

__all__ = ["HOOK_EVENTS", "SYNC_EVENTS", "command_line", "merge_settings", "install_claude_hooks", "install_git_hooks",
           "GIT_HOOKS", "platform_recorders", "platform_git_recorders", "records_in_claude_db"]

# The events ops/claude-hooks.json wires up, and whether they take a tool matcher.
HOOK_EVENTS: dict[str, bool] = {
    "PreToolUse": True,
    "PostToolUse": True,
    "UserPromptSubmit": False,
    "Stop": False,
    "SubagentStop": False,
    "SessionStart": False,
    "SessionEnd": False,
    "Notification": False,
    "PreCompact": False,
}
# Every event we only record runs in the background ("async": true): the agent
# never waits for us. Not SessionEnd: Claude Code is exiting then, and a
# background hook may be killed before it has enqueued the session's end.
SYNC_EVENTS = frozenset({"SessionEnd"})
GIT_HOOKS = ("post-commit", "post-merge", "pre-push")
_MARK = "# codi-queue git hook"

# The platform's own hooks that write each event into claude.db themselves (meta-vengine's
# settings.json runs hooks/sqlite-hook.py on every PostToolUse; hooks/post-tool.sh and
# post-tool-enhanced.sh and its git post-commit hook write through scripts/sqlite_hooks.py).
# Beside ours, with a tier in claude.db, every event they record would be stored there twice.
PLATFORM_HOOK_SCRIPTS = ("sqlite-hook.py", "post-tool.sh", "post-tool-enhanced.sh", "sqlite_hooks")


def platform_recorders(settings: Any) -> list[str]:
    """``event: command`` of each hook in Claude Code ``settings`` that is one of the platform's own
    recorders (``PLATFORM_HOOK_SCRIPTS``), in the order they appear."""
    found: list[str] = []
    hooks = settings.get("hooks") if isinstance(settings, dict) else None
    for event, entries in (hooks.items() if isinstance(hooks, dict) else ()):
        for entry in entries if isinstance(entries, list) else ():
            inner = entry.get("hooks") if isinstance(entry, dict) else None
            for hook in inner if isinstance(inner, list) else ():
                command = hook.get("command") if isinstance(hook, dict) else None
                if isinstance(command, str) and records_in_claude_db(command):
                    found.append(f"{event}: {command}")
    return found


def records_in_claude_db(text: str) -> bool:
    """Whether a hook command or script is one of the platform's recorders that write claude.db."""
    return any(name in text for name in PLATFORM_HOOK_SCRIPTS)


# Hooks run on every tool call. pip's console-script wrapper costs an extra
# import and `python -m` costs runpy; `python -c` with an absolute interpreter
# starts the fastest and does not depend on PATH.
_LAUNCH = "import sys; from codi_queue.cli import main; sys.exit(main(sys.argv[1:]))"


def command_line(subcommand: str, home: str | None = None) -> str:
    """The shell command a hook runs to reach this installation of codi-queue."""
    parts = [sys.executable, "-c", _LAUNCH]
    if home:
        parts += ["--home", os.path.abspath(home)]
    return shlex.join([*parts, *subcommand.split()])


def _is_ours(command: Any) -> bool:
    return isinstance(command, str) and ("codi-queue" in command or "codi_queue" in command) and command.endswith(" hook")


def _set_async(hook: dict[str, Any], event: str) -> None:
    if event in SYNC_EVENTS:
        hook.pop("async", None)
    else:
        hook["async"] = True


def merge_settings(settings: dict[str, Any], command: str) -> dict[str, Any]:
    """``settings`` with our hook on every event; other hooks and keys untouched."""
    merged = copy.deepcopy(settings)
    hooks = merged.setdefault("hooks", {})
    if not isinstance(hooks, dict):
        raise ValueError("settings 'hooks' is not an object; refusing to touch it")
    for event, has_matcher in HOOK_EVENTS.items():
        entries = hooks.setdefault(event, [])
        if not isinstance(entries, list):
            raise ValueError(f"settings hooks.{event} is not a list; refusing to touch it")
        found = False
        for i, entry in enumerate(entries):
            inner = entry.get("hooks", []) if isinstance(entry, dict) else []
            if not isinstance(inner, list):  # not Claude Code's shape: someone else's, left as it is
                raise ValueError(f"settings hooks.{event}[{i}].hooks is not a list; refusing to touch it")
            for hook in inner:
                if isinstance(hook, dict) and _is_ours(hook.get("command")):
                    hook["command"] = command  # an older install: point it at this one
                    _set_async(hook, event)
                    found = True
        if not found:
            hook = {"type": "command", "command": command, "timeout": 10}
            _set_async(hook, event)
            entry = {"hooks": [hook]}
            if has_matcher:
                entry = {"matcher": "*", **entry}
            entries.append(entry)
    return merged


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def install_claude_hooks(settings_path: str, command: str, dry_run: bool = False) -> tuple[str, str | None, list[str]]:
    """Merge our hooks into ``settings_path``; (unified diff, backup path or None, the platform's own
    recorders the settings also run: ``platform_recorders``)."""
    try:
        before_text = read_users_file(settings_path).decode("utf-8")
        settings = json.loads(before_text, parse_constant=_not_json) if before_text.strip() else {}
    except FileNotFoundError:
        before_text, settings = "", {}
    except OSError as exc:
        raise OSError(f"{settings_path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # not UTF-8, not JSON
        raise ValueError(f"{settings_path}: not a JSON settings file ({exc})") from None
    except RecursionError:
        raise ValueError(f"{settings_path}: not a JSON settings file (nested too deeply to read)") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path} does not hold a JSON object")
    merged = merge_settings(settings, command)
    theirs = platform_recorders(merged)
    try:
        # allow_nan=False: a number no double holds (1e400) was written back as Infinity, which is
        # not JSON, and Claude Code could no longer read its settings.
        after_text = json.dumps(merged, indent=2, allow_nan=False) + "\n"
    except ValueError:
        raise ValueError(f"{settings_path} holds a number too large for a double (1e400, say): rewritten, it "
                         "would no longer be JSON; change that number, then install again") from None
    diff = "".join(
        difflib.unified_diff(
            before_text.splitlines(keepends=True), after_text.splitlines(keepends=True), settings_path, settings_path
        )
    )
    if dry_run or json.loads(after_text) == settings:
        return diff if json.loads(after_text) != settings else "", None, theirs
    backup = None
    if before_text:
        backup = f"{settings_path}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.copy2(settings_path, backup)
    write_users_file(settings_path, after_text.encode())
    return diff, backup, theirs


def _hooks_dir(repo: str) -> str:
    out = subprocess.run(
        ["git", "-C", repo, "rev-parse", "--git-path", "hooks"], capture_output=True, timeout=30,
        encoding="utf-8", errors="surrogateescape",  # a path, whatever its bytes: as os.fsdecode keeps it
    )
    if out.returncode != 0:
        raise ValueError(f"{repo} is not a git repository: {out.stderr.strip()}")
    path = out.stdout.strip()
    return path if os.path.isabs(path) else os.path.join(repo, path)


def _git_script(name: str, command: str) -> str:
    # The chained hook runs first with the same arguments and, byte for byte,
    # the same stdin (pre-push refs arrive there; a hook reading them with
    # ``while read`` needs the final newline). Its exit status is ours:
    # pre-push may block a push, codi-queue never does, and a push the hook
    # blocked is not recorded as one. The refs are kept in a file for our own
    # record; with nowhere to keep them (TMPDIR full, read-only or missing) the
    # chained hook still gets every one of them through tee, which goes on
    # writing to it when the file cannot be written, and the push is recorded
    # without them or not at all: never blocked, or let through, for our sake.
    return f"""#!/bin/sh
{_MARK} ({name}); the hook that was here before runs first, as {name}.pre-codi-queue
status=0
chained="$(dirname "$0")/{name}.pre-codi-queue"
input=/dev/null
if [ "{name}" = "pre-push" ]; then
    input=$(mktemp "${{TMPDIR:-/tmp}}/codi-queue-pre-push.XXXXXX" 2>/dev/null) || input=""
    if [ -n "$input" ]; then
        trap 'rm -f "$input"' EXIT
    fi
fi
if [ -x "$chained" ]; then
    if [ "{name}" = "pre-push" ] && [ -n "$input" ]; then
        tee "$input" 2>/dev/null | "$chained" "$@"
    else
        "$chained" "$@"
    fi
    status=$?
elif [ "{name}" = "pre-push" ] && [ -n "$input" ]; then
    cat >"$input" 2>/dev/null
fi
if [ $status -eq 0 ] && [ -n "$input" ]; then
    {command} {name} "$@" <"$input" >/dev/null 2>&1 || true
fi
exit $status
"""


def platform_git_recorders(repo: str) -> list[str]:
    """The git hooks of ``repo`` that run (or are chained by ours) one of the platform's own
    recorders, which write the commit into claude.db themselves (``records_in_claude_db``)."""
    hooks = _hooks_dir(repo)
    found = []
    for name in GIT_HOOKS:
        for path in (os.path.join(hooks, name), os.path.join(hooks, name + ".pre-codi-queue")):
            try:
                text = _existing_hook(path)
            except ValueError:
                continue  # nothing that runs: nothing that records
            if text is not None and _MARK not in text and records_in_claude_db(text):
                found.append(path)
    return found


def _existing_hook(path: str) -> str | None:
    """The hook at ``path`` (followed if it is the user's link), None if there is none; ValueError
    for what cannot be chained: a directory, a FIFO, a dangling link."""
    if not os.path.lexists(path):
        return None
    try:
        return read_users_file(path).decode("utf-8", "replace")
    except FileNotFoundError:
        raise ValueError(f"{path} is a link to nothing: remove it or point it at a hook") from None
    except OSError as exc:
        raise ValueError(f"{path} is not a hook that can be chained ({exc.strerror or exc}): move it aside") from None


def install_git_hooks(repo: str, command: str, dry_run: bool = False) -> list[str]:
    """Install (or refresh) our git hooks in ``repo``; what was done, one line each.

    Every hook is looked at before any is written (ValueError: nothing changed), so a problem
    with the third never leaves the first two installed and unreported."""
    hooks = _hooks_dir(repo)
    plan: list[tuple[str, str, str, bool]] = []  # name, path, script, whether to chain what is there
    for name in GIT_HOOKS:
        path = os.path.join(hooks, name)
        script = _git_script(name, command)
        existing = _existing_hook(path)
        chain = existing is not None and existing != script and _MARK not in existing
        if chain and os.path.lexists(path + ".pre-codi-queue"):
            # Another tool put a hook here after ours chained the first one: chaining this one too
            # would replace that first one, which is the user's.
            raise ValueError(f"{path} is another hook, and {name}.pre-codi-queue (the one chained before) "
                             "exists already: merge the two by hand, then install again")
        plan.append((name, path, script if existing != script else "", chain))
    would = "would be " if dry_run else ""
    dry = " (dry run: nothing changed)" if dry_run else ""
    done = []
    for name, path, script, chain in plan:
        if not script:
            done.append(f"{name}: already installed")
            continue
        done.append(f"{name}: existing hook {would}kept as {name}.pre-codi-queue and chained{dry}" if chain
                    else f"{name}: {would}installed{dry}")
        if dry_run:
            continue
        if chain:
            os.replace(path, path + ".pre-codi-queue")  # a link is moved as it is, never written through
        os.makedirs(hooks, exist_ok=True)
        tmp = f"{path}.codi-queue-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o755)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fp:
                fp.write(script)
            os.replace(tmp, path)  # never through a link left at path
        except BaseException:
            os.unlink(tmp)
            raise
    return done
