"""A path that cannot be reached is not a path that is not there (bug 70).

``os.path.exists``, ``isfile`` and ``isdir`` answer False for a directory the user may not
search, a link loop, a name too long, an I/O error. Taken for absence, an unreadable config
file chose the default home (operations went where no consumer configured elsewhere would
look), and a watched source that could not be reached was passed over at every poll without
a word. As root (CI) the permission case cannot be made, so a link loop stands in: it is the
same answer from ``stat``, an error that is not ENOENT.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue import fsutil
from codi_queue.config import load_config
from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths

from .conftest import ROOT

PACKAGE = ROOT / "codi_queue"


def _default_home_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CODI_QUEUE_HOME"}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    return env


def _unreachable_config(tmp_path: Path, how: str) -> Path:
    folder = tmp_path / "cfg" / "codi-queue"
    folder.mkdir(parents=True)
    config = folder / "config.toml"
    if how == "link-loop":
        os.symlink(config, config)
    else:  # the user's own config, in a directory they took the search permission from
        config.write_text(f'home = "{tmp_path / "elsewhere"}"\n')
        os.chmod(folder, 0o600)
    return config


@pytest.mark.parametrize("how", ["link-loop", "unsearchable-directory"])
def test_a_config_file_that_cannot_be_read_does_not_choose_the_default_home(tmp_path: Path, how: str) -> None:
    if how == "unsearchable-directory" and os.geteuid() == 0:
        pytest.skip("root searches any directory (the link loop stands in for it)")
    config = _unreachable_config(tmp_path, how)
    try:
        env = _default_home_env(tmp_path)
        for args in (["enqueue", "tool_event", '{"tool_name": "Bash", "success": true}'], ["status"], ["run", "--once"]):
            out = subprocess.run([sys.executable, "-m", "codi_queue", *args], env=env, capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 1 and str(config) in out.stderr and "Traceback" not in out.stderr, (args, out)
        # Before the fix the operation was enqueued in the default home, where no consumer
        # reading the config file's home would look.
        assert not (tmp_path / "data").exists() and not (tmp_path / "elsewhere").exists()
    finally:
        os.chmod(config.parent, 0o700)


def test_a_watched_source_that_cannot_be_reached_is_reported_not_passed_over(home: Path, paths: Paths,
                                                                             tmp_path: Path) -> None:
    loop = tmp_path / "sources" / "recovery-outcomes.jsonl"
    loop.parent.mkdir()
    os.symlink(loop, loop)
    tree = tmp_path / "transcripts"
    os.symlink(tree, tree)
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch.jsonl]\n"{loop}" = "auto"\n[watch]\ntranscripts = ["{tree}"]\n')
    Consumer(paths, config=load_config(paths)).run(once=True)
    log = Path(paths.error_log).read_text()
    assert f"tailing {loop}" in log and f"watching transcripts in {tree}" in log
    assert "Too many levels of symbolic links" in log


def test_the_helpers_raise_what_is_not_absence(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    for check in (fsutil.exists, fsutil.is_dir, fsutil.is_file):
        assert check(str(tmp_path / "missing")) is False
        assert check(str(tmp_path / "missing" / "below")) is False
        with pytest.raises(OSError):
            check(str(loop))
        with pytest.raises(OSError):
            check(str(tmp_path / ("x" * 300)))  # a name too long is not a missing file
    assert fsutil.lexists(str(loop)) and not fsutil.lexists(str(tmp_path / "missing"))
    assert fsutil.is_dir(str(tmp_path)) and not fsutil.is_file(str(tmp_path))


def test_no_module_takes_an_unreachable_path_for_a_missing_one() -> None:
    """os.path.exists/isfile/isdir only where an error cannot hide anything (each one named)."""
    allowed = {("producers/hooks.py", "exists")}  # the hook's own private marker directory: bug 45
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("exists", "isfile", "isdir") and \
                    isinstance(node.value, ast.Attribute) and node.value.attr == "path":
                where = (str(path.relative_to(PACKAGE)), node.attr)
                if where not in allowed:
                    found.append(f"{where[0]}:{node.lineno} os.path.{node.attr}")
    assert found == []


def test_a_database_that_cannot_be_reached_sets_its_tier_aside_not_every_command(
        home: Path, paths: Paths, tmp_path: Path) -> None:
    """An adopted database behind a path that cannot be reached (a link loop here; for a user, a
    directory above it they may not search) stopped every command and the whole consumer at
    the check of its folder. It now sets that tier aside, named by status, and the others go on;
    its folder is still held to the home's rules whenever it is opened."""
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[databases]\nsessions = "{loop / "claude.db"}"\n')
    env = dict(os.environ, CODI_QUEUE_HOME=str(home), PYTHONPATH=str(ROOT))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "codi_queue", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    assert cli("enqueue", "task", '{"task_id": "t1", "title": "x", "status": "pending"}').returncode == 0
    assert cli("enqueue", "tool_event", '{"tool_name": "Bash", "success": true}').returncode == 0
    run = cli("run", "--once")
    assert run.returncode == 1 and "sessions: OSError" in run.stderr and "Traceback" not in run.stderr, run.stderr
    status = cli("status")
    assert status.returncode == 0 and "tier unavailable sessions" in status.stdout, status
    assert "Too many levels of symbolic links" in status.stdout and "applied          tasks: 1" in status.stdout
    assert "pending          1" in status.stdout  # the tool event waits for its tier
    # Once reachable, a folder others can write is still refused, at the open as at the start.
    os.remove(loop)
    loop.mkdir()
    os.chmod(loop, 0o777)
    run = cli("run", "--once")
    assert run.returncode == 1 and "writable by group or others" in run.stderr, run.stderr
    assert not (loop / "claude.db").exists()
    from codi_queue.errors import UnsafePath

    with pytest.raises(UnsafePath, match="writable by group or others"):
        paths.database_file("sessions")
