"""Resource faults: the consumer backs off, keeps operations queued, and recovers by itself."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import apsw
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue, enqueue_many

from ..conftest import cli_env, count_when_ready, query, run_cli, wait_until


def _rows(paths: Paths) -> int:
    return count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") or 0


@contextmanager
def _consumer_process(home: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.1", *extra], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@contextmanager
def _consumer_thread(paths: Paths, **kw: object) -> Iterator[Consumer]:
    consumer = Consumer(paths, poll_interval=0.1, max_backoff_s=0.5, **kw)  # type: ignore[arg-type]
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        yield consumer
    finally:
        consumer.request_stop()
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_database_deleted_while_the_consumer_runs_is_recreated_from_the_journal(home: Path, paths: Paths) -> None:
    with _consumer_process(home, "--rotate-bytes", "1"):
        for i in range(5):
            enqueue_many("tool_event", [{"tool_name": f"a{i}-{j}", "success": True} for j in range(10)], home=str(home))
        wait_until(lambda: _rows(paths) == 50, 60, "first 50 rows")
        wait_until(lambda: collect(paths)["archive"]["segments"] > 0, 60, "an archived segment")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(paths.database("sessions") + suffix):
                os.remove(paths.database("sessions") + suffix)
        enqueue_many("tool_event", [{"tool_name": f"b{j}", "success": True} for j in range(50)], home=str(home))
        wait_until(lambda: _rows(paths) == 100, 60, "all 100 rows in the recreated database")
    names = [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")]
    assert len(set(names)) == 100
    assert "deleted or replaced while open" in Path(paths.error_log).read_text()


def test_outside_write_lock_delays_but_loses_nothing(home: Path, paths: Paths) -> None:
    Consumer(paths).run(once=True)  # databases exist
    blocker = apsw.Connection(paths.database("sessions"))
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with _consumer_thread(paths, busy_timeout_ms=100):
            enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True} for i in range(20)], home=str(home))
            wait_until(lambda: os.path.exists(paths.error_log) and "drain failed" in Path(paths.error_log).read_text(),
                       60, "the consumer to report the lock")
            assert collect(paths)["pending"] == 20
            blocker.execute("ROLLBACK")
            wait_until(lambda: _rows(paths) == 20, 60, "rows after the lock is released")
    finally:
        blocker.close()
    assert collect(paths)["pending"] == 0


def test_a_long_reader_does_not_block_the_consumer(home: Path, paths: Paths) -> None:
    Consumer(paths).run(once=True)
    reader = apsw.Connection(paths.database("sessions"), flags=apsw.SQLITE_OPEN_READONLY)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM tool_events").get == 0
    try:
        with _consumer_thread(paths):
            enqueue_many("tool_event", [{"tool_name": "w", "success": True}] * 500, home=str(home))
            wait_until(lambda: _rows(paths) == 500, 60, "writes while a reader holds a snapshot")
            assert reader.execute("SELECT count(*) FROM tool_events").get == 0  # its snapshot is stable
    finally:
        reader.execute("COMMIT")
        reader.close()


def test_disk_limit_in_the_consumer_backs_off_and_recovers(home: Path, paths: Paths) -> None:
    with _consumer_process(home) as proc:
        wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 0, 60, "start")
        # Like a disk that just filled up. Only the soft limit: raising a hard one
        # back needs CAP_SYS_RESOURCE, which root in a VM may lack.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            enqueue_many("tool_event", [{"tool_name": "x" * 200, "success": True}] * 300, home=str(home))
            wait_until(lambda: os.path.exists(paths.error_log) and "drain failed" in Path(paths.error_log).read_text(), 60, "the consumer to report the write failure")
            assert _rows(paths) == 0 and collect(paths)["pending"] == 300 and proc.poll() is None
        finally:
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_until(lambda: _rows(paths) == 300, 90, "recovery after the limit is lifted")
    assert collect(paths)["pending"] == 0


def _mount_read_only(path: str) -> bool:
    if os.getuid() != 0:
        return False
    bind = subprocess.run(["mount", "--bind", path, path], capture_output=True)
    if bind.returncode != 0:
        return False
    ro = subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", path], capture_output=True)
        return False
    return True


def test_read_only_spool_fails_loudly_and_keeps_the_queue(home: Path, paths: Paths) -> None:
    enqueue("tool_event", {"tool_name": "before", "success": True}, home=str(home))
    if not _mount_read_only(paths.spool):
        pytest.skip("needs root and bind mounts to make the spool read-only")  # both exist on the project's machines
    try:
        res = run_cli(home, "enqueue", "tool_event", '{"tool_name":"during","success":true}')
        assert res.returncode == 1 and "Read-only file system" in res.stderr
        # The API in a process that meets the spool read-only. (This test process still holds
        # descriptors opened through the writable mount before the remount; appends through
        # them are durable, so they are rightly acknowledged: a read-only bind mount only
        # refuses new opens.)
        api = subprocess.run([sys.executable, "-c", "import sys; from codi_queue import enqueue; sys.exit(0 if enqueue("
                              "'tool_event', {'tool_name': 'api', 'success': True}, home=sys.argv[1]) is False else 3)",
                              str(home)], capture_output=True, text=True, env=cli_env(home), timeout=60)
        assert api.returncode == 0 and api.stdout == api.stderr == "", api
        assert run_cli(home, "run", "--once").returncode == 0  # what is queued still applies
    finally:
        subprocess.run(["umount", paths.spool], check=True)
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == ["after", "before"]
    assert collect(paths)["producer_errors"] == 2
