"""Every value of the config file is checked before anything acts on it (bug 27).

Before, an infinite ``max_bytes`` ended every command in an internal error, a NaN
age was taken as given, an empty path meant the working directory (a Prometheus
textfile renamed over it, leaving a temporary file beside it), a NUL in a path
stopped the consumer with an internal error, ``..`` took a "relative, so under
the home" database out of the home, and a relative ``home =`` gave each working
directory a home of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.errors import CodiQueueError
from codi_queue.fsutil import write_atomic
from codi_queue.paths import resolve

from .conftest import ROOT, cli_env


def _cli(home: Path, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codi_queue", *args], capture_output=True, text=True,
                          env=env or cli_env(home), cwd=cwd, timeout=60)


@pytest.mark.parametrize(("text", "key"), [
    ("[archive]\nmax_bytes = inf", "archive.max_bytes"),
    ("[archive]\nmax_bytes = -1", "archive.max_bytes"),
    ("[archive]\nmax_age_days = nan", "archive.max_age_days"),
    ("[archive]\nmax_age_days = -inf", "archive.max_age_days"),
    ('[observability]\nprometheus_textfile = ""', "observability.prometheus_textfile"),
    ('[observability]\nprometheus_textfile = "a\\u0000b"', "observability.prometheus_textfile"),
    ('[watch]\ntranscripts = ["x", ""]', "watch.transcripts[1]"),
    ('[watch]\nstate_dirs = [" "]', "watch.state_dirs[0]"),
    ('[watch]\ntranscripts = ["a\\u0000b"]', "watch.transcripts[0]"),
    ('[watch.jsonl]\n"" = "routing_metric"', "watch.jsonl.''"),
    ('[watch.jsonl]\n"a\\u0000b" = "routing_metric"', "watch.jsonl.'a\\x00b'"),
    ('[databases]\nsessions = "../../outside.db"', "databases.sessions"),
    ('[databases]\norg = "a\\u0000b"', "databases.org"),
    # two tiers in one file would share its schema version and cursors (bug 39)
    ('[databases]\nsessions = "shared.db"\nproject = "shared.db"', "databases.project"),
    ('[databases]\nsessions = "db/project.db"', "databases.sessions"),
])
def test_a_config_value_that_names_no_file_or_no_number_is_refused_by_its_key(tmp_path: Path, text: str,
                                                                             key: str) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(mode=0o700)
    cwd.mkdir()
    (home / "config.toml").write_text(text + "\n")
    for args in (("config",), ("run", "--once")):
        res = _cli(home, cwd, *args)
        assert res.returncode == 1, (args, res.stderr)
        assert f"config.toml: {key}: " in res.stderr and "internal error" not in res.stderr, (args, res.stderr)
    status = _cli(home, cwd, "status")
    assert status.returncode == 0 and f"config refused   {home / 'config.toml'}: {key}: " in status.stdout
    assert "codi_queue_config_refused 1" in _cli(home, cwd, "status", "--prometheus", "-").stdout
    # nothing was made or written anywhere but the home
    assert sorted(os.listdir(tmp_path)) == ["cwd", "home"] and os.listdir(cwd) == []


@pytest.mark.parametrize(("table", "key"), [
    ('[watch.jsonl]\n"{home}/logs/consumer.log" = "tool_event"', "watch.jsonl.'{home}/logs/consumer.log'"),
    ('[watch]\ntranscripts = ["{home}"]', "watch.transcripts[0]"),
    ('[watch]\nstate_dirs = ["{home}/state"]', "watch.state_dirs[0]"),
])
def test_a_source_in_codi_queue_s_own_home_is_refused(tmp_path: Path, table: str, key: str) -> None:
    """The consumer's log is JSON lines: watched as a source, each line it read became a
    tool_event row and made the lines it logged next (2,667 lines in 8 s, growing for ever)."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(mode=0o700)
    cwd.mkdir()
    (home / "config.toml").write_text(table.format(home=home) + "\n")
    res = _cli(home, cwd, "run", "--once")
    assert res.returncode == 1 and f"config.toml: {key.format(home=home)}: " in res.stderr, res.stderr
    assert "its files are never a source" in res.stderr


def test_a_relative_database_path_lies_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text('[databases]\nsessions = "adopted/../sessions-here.db"\n')
    assert resolve(str(home)).database("sessions") == str(home / "sessions-here.db")
    (home / "config.toml").write_text('[databases]\nsessions = "../sessions-elsewhere.db"\n')
    # a path refused by the config is never opened: the default stands meanwhile
    assert resolve(str(home)).database("sessions") == str(home / "db" / "sessions.db")


@pytest.mark.parametrize("value", ["relative/home", "$CODI_TEST_UNSET_VARIABLE/home", "a\\u0000b"])
def test_the_config_file_s_home_must_be_an_absolute_path(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CODI_QUEUE_HOME", "CODI_TEST_UNSET_VARIABLE")}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    (tmp_path / "cfg" / "codi-queue").mkdir(parents=True, mode=0o700)
    (tmp_path / "cfg" / "codi-queue" / "config.toml").write_text(f'home = "{value}"\n')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for args in (("paths",), ("enqueue", "tool_event", '{"tool_name": "x", "success": true}'), ("run", "--once")):
        res = _cli(tmp_path, cwd, *args, env=env)
        assert res.returncode == 1, (args, res.stderr)
        assert "config.toml: home: " in res.stderr and "internal error" not in res.stderr, (args, res.stderr)
    assert os.listdir(cwd) == []  # no home was made against the working directory
    env["MY_HOMES"] = str(tmp_path / "homes")
    (tmp_path / "cfg" / "codi-queue" / "config.toml").write_text('home = "$MY_HOMES/q"\n')
    res = _cli(tmp_path, cwd, "paths", "--json", env=env)
    assert res.returncode == 0 and f'"home": "{tmp_path / "homes" / "q"}"' in res.stdout


def test_a_home_naming_a_nul_byte_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(CodiQueueError, match="NUL"):
        resolve(str(tmp_path / "a\x00b"))


def test_an_atomic_write_that_cannot_replace_its_target_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    with pytest.raises(OSError):
        write_atomic(str(tmp_path / "target"), b"x")
    assert os.listdir(tmp_path) == ["target"]
