"""KeepAlive agents render valid files with the real interpreter and home, and --dry-run changes nothing."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

from codi_queue.agent import LABEL, UNIT, render_plist, render_unit

from .conftest import ROOT, cli_env, run_cli


def test_dry_run_prints_a_valid_plist_with_real_paths(home: Path, tmp_path: Path) -> None:
    env_home = tmp_path / "fake-home"
    res = subprocess.run([sys.executable, "-m", "codi_queue", "agent", "install", "--kind", "launchd", "--dry-run"],
                         capture_output=True, text=True, env={**cli_env(home), "HOME": str(env_home)}, timeout=60)
    assert res.returncode == 0, res.stderr
    body = res.stdout.split("\n", 1)[1].rsplit("# would run:", 2)[0]
    plist = plistlib.loads(body.encode())
    assert plist["Label"] == LABEL and plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ProgramArguments"] == [sys.executable, "-m", "codi_queue", "--home", str(home), "run"]
    assert "launchctl bootstrap" in res.stdout
    assert not env_home.exists()  # nothing written


def test_dry_run_prints_a_unit_that_systemd_accepts(home: Path, tmp_path: Path) -> None:
    res = run_cli(home, "agent", "install", "--kind", "systemd", "--dry-run")
    assert res.returncode == 0
    text = res.stdout.split("\n", 1)[1].split("# would run:")[0]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["ExecStart"] == f"{sys.executable} -m codi_queue --home {home} run"
    assert "systemctl --user enable --now codi-queue.service" in res.stdout
    analyze = shutil.which("systemd-analyze")
    if analyze:  # present on the project's machines; a verify error is a real failure
        path = tmp_path / UNIT
        path.write_text(text)
        out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
        # verify exits 0 even when it ignores a bad setting; it names the file when it complains.
        assert out.returncode == 0 and str(path) not in out.stdout + out.stderr, out.stderr


def test_paths_with_spaces_and_percent_are_quoted_for_systemd(tmp_path: Path) -> None:
    text = render_unit("/opt/my python/bin/python", "/home/a b/50%")
    exec_start = [l for l in text.splitlines() if l.startswith("ExecStart=")][0]
    assert exec_start == 'ExecStart="/opt/my python/bin/python" -m codi_queue --home "/home/a b/50%%" run'


def test_a_dollar_in_a_path_is_not_a_variable_to_systemd(tmp_path: Path) -> None:
    """systemd expands $VARIABLES in ExecStart, quoted or not: a home named "…$HOME…" started
    the consumer on another home (session 13)."""
    text = render_unit("/opt/python", "/home/a/$HOME and ${USER}")
    exec_start = [l for l in text.splitlines() if l.startswith("ExecStart=")][0]
    assert exec_start == 'ExecStart=/opt/python -m codi_queue --home "/home/a/$$HOME and $${USER}" run'


def test_a_path_with_a_control_character_is_never_written_into_an_agent(tmp_path: Path) -> None:
    """A newline in the home would end ExecStart's line and start a directive of its own."""
    home = tmp_path / "h\nExecStartPre=touch pwned"
    home.mkdir(mode=0o700)
    for kind in ("systemd", "launchd"):
        res = run_cli(home, "agent", "install", "--kind", kind, "--dry-run")
        assert res.returncode == 1 and "holds a control character" in res.stderr, res.stderr
        assert "ExecStartPre" not in res.stdout


def test_ops_examples_are_what_the_code_renders() -> None:
    plist = (ROOT / "ops" / "launchd" / "dev.codi-queue.consumer.plist").read_bytes()
    assert plist == render_plist("/path/to/venv/bin/python", "/Users/you/Library/Application Support/codi-queue",
                                 "/Users/you/Library/Logs/codi-queue")
    unit = (ROOT / "ops" / "systemd" / "codi-queue.service").read_text()
    assert unit == render_unit("/path/to/venv/bin/python", "/home/you/.local/share/codi-queue")


def test_install_writes_the_unit_and_uninstall_removes_it(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "xdg"
    env = {**cli_env(home), "XDG_CONFIG_HOME": str(config), "PATH": os.environ["PATH"]}
    res = subprocess.run([sys.executable, "-m", "codi_queue", "agent", "install", "--kind", "systemd"],
                         capture_output=True, text=True, env=env, timeout=60)
    unit = config / "systemd" / "user" / UNIT
    assert unit.exists() and f"--home {home} run" in unit.read_text()
    # Without a user systemd (CI containers) the load step fails loudly: exit 1 and the reason.
    assert res.returncode in (0, 1)
    if res.returncode == 1:
        assert "systemctl" in res.stderr
    res = subprocess.run([sys.executable, "-m", "codi_queue", "agent", "uninstall", "--kind", "systemd"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert not unit.exists()
