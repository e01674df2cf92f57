"""Installing our hooks beside the platform's own, which write claude.db themselves, says so.

meta-vengine's settings.json runs ``hooks/sqlite-hook.py`` on every
PostToolUse, and its git post-commit hook writes through
``scripts/sqlite_hooks.py``: each inserts the event into claude.db. With a
tier of ours in claude.db too, every tool call and commit would be stored
there twice, silently (bug 77 in docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..conftest import run_cli
from .schemas import CCC, claude_db, home_pointing_at

THEIR_HOOKS = {"hooks": {"PostToolUse": [
    {"matcher": "Bash", "hooks": [{"type": "command", "command": "python3 ~/.claude/hooks/sqlite-hook.py Bash 2>/dev/null || true"}]},
    {"matcher": "Read", "hooks": [{"type": "command", "command": "python3 ~/.claude/hooks/sqlite-hook.py Read \"$CLAUDE_FILE_PATH\" 2>/dev/null || true"}]},
    {"matcher": "*", "hooks": [{"type": "command", "command": "~/.claude/hooks/observatory.sh"}]},
]}}
THEIR_POST_COMMIT = """#!/bin/bash
# Dual-write to JSONL + SQLite
python3 << PYEOF
import sys
sys.path.insert(0, '$HOME/.claude/scripts')
from sqlite_hooks import log_git_commit
PYEOF
"""


def test_install_hooks_names_the_platform_s_own_recorders_when_claude_db_is_ours_too(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(THEIR_HOOKS))
    fresh = run_cli(tmp_path / "fresh", "install-hooks", str(settings))  # our own databases: nothing to say
    assert fresh.returncode == 0 and "note:" not in fresh.stderr, fresh.stderr

    settings.write_text(json.dumps(THEIR_HOOKS))
    home = home_pointing_at(tmp_path, "sessions", claude_db(tmp_path, CCC))
    res = run_cli(home, "install-hooks", str(settings))
    assert res.returncode == 0, res.stderr
    assert "note: 2 of the platform's own hooks also run, and write each tool call into" in res.stderr
    assert "each tool call would be stored twice" in res.stderr
    assert "PostToolUse: python3 ~/.claude/hooks/sqlite-hook.py Bash" in res.stderr
    assert "observatory.sh" not in res.stderr  # a hook that does not write claude.db is not named
    kept = json.loads(settings.read_text())["hooks"]["PostToolUse"]
    assert sum("sqlite-hook.py" in h["command"] for e in kept for h in e["hooks"]) == 2  # theirs stay: theirs to remove


def test_install_git_hook_names_a_chained_hook_that_records_in_claude_db(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text(THEIR_POST_COMMIT)
    hook.chmod(0o755)
    home = home_pointing_at(tmp_path, "sessions", claude_db(tmp_path, CCC))
    res = run_cli(home, "install-git-hook", str(repo))
    assert res.returncode == 0, res.stderr
    assert "each commit would be stored twice" in res.stderr
    assert str(repo / ".git" / "hooks" / "post-commit.pre-codi-queue") in res.stderr
