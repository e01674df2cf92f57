"""Paths and their resolution order, observability (status, watch, Prometheus, the JSON log), retention."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codi_queue
from codi_queue.config import load_config
from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.errors import CodiQueueError, UnsafePath
from codi_queue.paths import Paths, resolve, resolve_cached
from codi_queue.producers.api import enqueue, enqueue_many
from codi_queue.queue.spool import Spool

from .conftest import ROOT, cli_env, query, run_cli, wait_until


def _paths_json(env: dict[str, str], *args: str) -> dict[str, object]:
    res = subprocess.run([sys.executable, "-m", "codi_queue", *args, "paths", "--json"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def test_resolution_order_home_env_config_platformdirs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CODI_QUEUE_HOME"}
    env.update(PYTHONPATH=str(ROOT), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    default = _paths_json(env)
    assert default["source"] == "platformdirs" and str(default["home"]).startswith(str(tmp_path / "data"))
    cfg = tmp_path / "cfg" / "codi-queue"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text(f'home = "{tmp_path / "from-config"}"\n')
    configured = _paths_json(env)
    assert configured["source"] == "config file" and configured["home"] == str(tmp_path / "from-config")
    assert configured["config"] == str(cfg / "config.toml")
    env["CODI_QUEUE_HOME"] = str(tmp_path / "from-env")
    assert _paths_json(env)["home"] == str(tmp_path / "from-env")
    assert _paths_json(env, "--home", str(tmp_path / "flag"))["home"] == str(tmp_path / "flag")


def test_a_long_lived_producer_follows_every_change_resolve_would_see(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The API remembers where the home is, in one process, but never past a change: the
    environment, the config file (written, rewritten, removed), the working directory."""
    monkeypatch.delenv("CODI_QUEUE_HOME", raising=False)
    for name, sub in (("XDG_CONFIG_HOME", "cfg"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        monkeypatch.setenv(name, str(tmp_path / sub))

    def same() -> str:
        cached, fresh = resolve_cached(), resolve()
        assert (cached.home, cached.source, cached.spool) == (fresh.home, fresh.source, fresh.spool)
        return cached.home

    assert same().startswith(str(tmp_path / "data"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data2"))
    assert same().startswith(str(tmp_path / "data2"))
    config = tmp_path / "cfg" / "codi-queue" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'home = "{tmp_path / "one"}"\n')
    assert same() == str(tmp_path / "one")
    config.write_text(f'home = "{tmp_path / "two"}"\n')  # same size, same timestamp tick: still seen
    assert same() == str(tmp_path / "two")
    config.unlink()
    assert same().startswith(str(tmp_path / "data2"))
    monkeypatch.setenv("CODI_QUEUE_HOME", str(tmp_path / "env"))
    assert same() == str(tmp_path / "env") and resolve_cached().source == "CODI_QUEUE_HOME"
    assert resolve_cached(str(tmp_path / "flag")).source == "--home"
    monkeypatch.setenv("CODI_QUEUE_HOME", "~/home-under-tilde")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert same() == str(tmp_path / "home-under-tilde")
    monkeypatch.setenv("CODI_QUEUE_HOME", "relative")  # hooks inherit it in every project's directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CodiQueueError, match="CODI_QUEUE_HOME: 'relative' is not an absolute path"):
        resolve_cached()
    assert resolve_cached("relative").home == str(tmp_path / "relative")  # --home: the user's own directory


def test_a_home_sqlite_cannot_open_is_refused_before_anything_is_acknowledged(tmp_path: Path) -> None:
    """SQLite (through apsw) opens databases by UTF-8 paths only. A home whose path is not UTF-8
    took every enqueue (exit 0) while ``run`` and ``status`` ended in an internal error: operations
    acknowledged into a spool no consumer could apply. Every entry point now refuses it."""
    home = os.fsdecode(os.fsencode(tmp_path) + b"/home\xff")
    os.mkdir(home, 0o700)
    env = {**os.environ, "CODI_QUEUE_HOME": home}
    why = "is not valid UTF-8, and SQLite opens databases only by UTF-8 paths"
    for args, code in ((["enqueue", "tool_event", '{"tool_name": "x", "success": true}'], 1), (["status"], 1),
                       (["run", "--once"], 1), (["hook"], 0)):
        res = subprocess.run([sys.executable, "-m", "codi_queue", *args], env=env, input=b'{"hook_event_name": "Stop"}',
                             capture_output=True, timeout=60)
        err = res.stderr.decode("utf-8", "replace")
        assert res.returncode == code and why in err and "internal error" not in err, (args, err)
    with pytest.raises(CodiQueueError, match=why):
        enqueue("tool_event", {"tool_name": "x", "success": True}, home=home)
    assert os.listdir(home) == []  # nothing was acknowledged there
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    (good / "config.toml").write_text('[databases]\nsessions = "$CODI_TEST_BAD/s.db"\n')
    (good / "config.toml").chmod(0o600)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "config", "--show"], capture_output=True, timeout=60,
                         env={**os.environ, "CODI_QUEUE_HOME": str(good),
                              "CODI_TEST_BAD": os.fsdecode(os.fsencode(tmp_path) + b"/\xfe")})
    assert res.returncode == 1 and b"databases.sessions" in res.stderr and b"not valid UTF-8" in res.stderr
    (good / "config.toml").unlink()
    elsewhere = os.fsdecode(os.fsencode(tmp_path) + b"/snap\xfe")
    for args in (["backup", "--into", elsewhere], ["rebuild", "--into", elsewhere], ["restore", elsewhere]):
        res = subprocess.run([sys.executable, "-m", "codi_queue", *args], capture_output=True, timeout=60,
                             env={**os.environ, "CODI_QUEUE_HOME": str(good)})
        err = res.stderr.decode("utf-8", "replace")
        assert res.returncode == 1 and why in err and "internal error" not in err, (args, err)
    assert not os.path.lexists(elsewhere)  # refused before the first file was written


def test_home_inside_the_package_is_refused(tmp_path: Path) -> None:
    inside = os.path.join(os.path.dirname(codi_queue.__file__), "data")
    with pytest.raises(UnsafePath, match="inside the installed codi-queue package"):
        resolve(inside)
    (tmp_path / "linked").symlink_to(os.path.dirname(codi_queue.__file__), target_is_directory=True)
    with pytest.raises(UnsafePath, match="inside the installed codi-queue package"):  # a home that is a link there
        resolve(str(tmp_path / "linked"))
    with pytest.raises(UnsafePath, match="inside the installed codi-queue package"):
        resolve(str(tmp_path / "linked" / "data"))


def test_status_reports_throughput_wal_archive_and_watch(home: Path, paths: Paths) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.1", "--rotate-bytes", "1"],
                            env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for i in range(20):
            enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True}] * 10, home=str(home))
        report = wait_until(
            lambda: (r := collect(paths))["batches"] and r["throughput_1m_ops_s"] > 0 and r["archive"]["segments"]
            and r, 30, "batches, throughput and an archived segment in status")
        assert report["consumer"]["running"] and report["consumer"]["started"]
        human = run_cli(home, "status").stdout
        assert "ops/s over the last minute" in human and "archive" in human and "wal" in human
        prom = run_cli(home, "status", "--prometheus", "-").stdout
        samples = [l for l in prom.splitlines() if l and not l.startswith("#")]
        assert all(len(l.split()) == 2 for l in samples)
        assert "codi_queue_consumer_up 1" in samples
        assert any(l.startswith('codi_queue_applied_rows{table="tool_events"} ') for l in samples)
        watch = subprocess.Popen([sys.executable, "-m", "codi_queue", "status", "--watch", "--interval", "0.2"],
                                 env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert watch.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while seen.count(b"\x1b[H\x1b[2J") < 2:  # two refreshes in place, however slow the machine
            assert time.monotonic() < deadline, seen[-500:]
            seen += os.read(watch.stdout.fileno(), 65536)
        watch.send_signal(signal.SIGINT)
        watch.communicate(timeout=30)
        assert watch.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log = Path(paths.consumer_log)
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    events = [json.loads(l) for l in log.read_text().splitlines()]
    assert events and all({"ts", "level", "message", "pid"} <= e.keys() for e in events)
    assert not collect(paths)["consumer"]["running"]


def test_archive_retention_by_size_and_age(home: Path, paths: Paths) -> None:
    consumer = Consumer(paths, rotate_bytes=1)
    for i in range(6):
        enqueue_many("tool_event", [{"tool_name": f"batch{i}", "success": True}] * 20, home=str(home))
        consumer.run(once=True)
    spool = Spool(paths.spool, paths.archive)
    count, total = spool.archive_bytes()
    assert count == 6
    names = sorted(os.listdir(paths.archive))
    removed = spool.prune_archive(0, total // 2)
    assert removed == names[: len(removed)] and 0 < len(removed) < 6  # oldest first
    assert spool.archive_bytes()[1] <= total // 2
    remaining = sorted(os.listdir(paths.archive))
    newest = int(remaining[-1]) / 1e9
    assert spool.prune_archive(3600, 0, now=newest + 1800) == []  # all younger than an hour
    assert spool.prune_archive(3600, 0, now=newest + 7200) == remaining  # all older
    assert os.listdir(paths.archive) == []


def test_config_drives_retention_in_the_consumer(home: Path, paths: Paths) -> None:
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text("[archive]\nmax_age_days = 0\nmax_bytes = 1\n")
    assert load_config(paths).archive_max_bytes == 1
    enqueue("tool_event", {"tool_name": "x", "success": True}, home=str(home))
    Consumer(paths, rotate_bytes=1, config=load_config(paths)).run(once=True)
    assert os.listdir(paths.archive) == []
    Path(paths.config).write_text("[archive]\nmax_bytes = -1\n")
    assert run_cli(home, "config").returncode == 1


def test_the_api_takes_a_home_as_any_path_and_refuses_other_types_by_name(tmp_path: Path) -> None:
    """``home=pathlib.Path(...)`` is how Python code names a directory: it ended in
    "AttributeError: 'PosixPath' object has no attribute 'startswith'"."""
    home = tmp_path / "home"
    assert enqueue("tool_event", {"tool_name": "via Path", "success": True}, home=home)
    assert enqueue("tool_event", {"tool_name": "via str", "success": True}, home=str(home))
    Consumer(resolve(str(home))).run(once=True)
    assert [r[0] for r in query(resolve(str(home)), "sessions", "SELECT tool_name FROM tool_events ORDER BY rowid")] == [
        "via Path", "via str"]
    for bad, why in (({"home": 5}, "home must be a path (str or os.PathLike) or None, not int"),
                     ({"home": b"/tmp/x"}, "home must be a path (str or os.PathLike) or None, not bytes"),
                     ({"producer": 7}, "producer must be a str or None, not int")):
        with pytest.raises(TypeError, match=re.escape(why)):
            enqueue("tool_event", {"tool_name": "x", "success": True}, **bad)  # type: ignore[arg-type]
