"""The platform's own writers keep writing an adopted claude.db while the consumer drains into it.

Their hooks and scripts open claude.db with a busy timeout of 5 seconds and lose
the write when it runs out (bug 74 in docs/reliability.md): the consumer
takes turns at the write lock (``consumer/turns.py``) and never keeps them
out that long, not even while a checkpoint waits for a dashboard's read.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import apsw
import pytest

from codi_queue import enqueue_many
from codi_queue.consumer import loop, turns
from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.turns import BREAK_S, WriteTurns
from codi_queue.paths import resolve

from ..conftest import wait_until
from .schemas import CCC, claude_db, home_pointing_at

PLATFORM_BUSY_TIMEOUT_S = 3.0  # stricter than the platform's writers (Python's default 5 s): a margin


def _adopted_home(tmp_path: Path) -> tuple[Path, Path]:
    db = claude_db(tmp_path, CCC)
    return home_pointing_at(tmp_path, "sessions", db), db


# A dashboard's read that lasts the whole drain: a TRUNCATE checkpoint waits on it while it holds the
# write lock. Before the fix that wait lasted the consumer's own busy timeout (10 s).
_DASHBOARD = """
import os, sqlite3, sys, time
db, reading, stop = sys.argv[1:4]
conn = sqlite3.connect(db, isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT COUNT(*) FROM tool_events").fetchone()
open(reading, "w").close()
deadline = time.monotonic() + 120  # never outlive a test that failed before it said stop
while not os.path.exists(stop) and time.monotonic() < deadline:
    time.sleep(0.01)
conn.execute("COMMIT")
"""

# What the platform's scripts do: connect with a busy timeout, insert, commit, every 20 ms.
_PLATFORM_WRITER = """
import json, os, sqlite3, sys, time
db, stop, report, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
written, failures, n = 0, [], 0
deadline = time.monotonic() + 120  # never outlive a test that failed before it said stop
while not os.path.exists(stop) and time.monotonic() < deadline:
    conn = sqlite3.connect(db, timeout=timeout)
    try:
        conn.execute("INSERT INTO tool_events (timestamp, tool_name, success) VALUES (?, 'platform', 1)",
                     (int(time.time()),))
        conn.commit()
        written += 1
    except sqlite3.OperationalError as exc:
        failures.append(f"write {n}: {exc}")
    finally:
        conn.close()
    n += 1
    time.sleep(0.02)
with open(report, "w") as fp:
    json.dump({"written": written, "failures": failures}, fp)
"""


def _tool_counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT tool_name, COUNT(*) FROM tool_events GROUP BY tool_name").fetchall())
    finally:
        conn.close()


def test_the_platform_s_writer_is_never_kept_out_while_the_consumer_drains_into_claude_db(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, db = _adopted_home(tmp_path)
    seeded = _tool_counts(db)  # the platform's own rows, there before
    total = 60_000
    for start in range(0, total, 10_000):
        enqueue_many("tool_event", [{"tool_name": "Bash", "success": True, "duration_ms": i, "session_id": f"s{i % 9}"}
                                    for i in range(start, start + 10_000)], home=str(home))
    # The WAL passes the checkpoint size within the drain, and turns are short, so both the
    # checkpoint and the breaks between batches happen many times in a few seconds.
    monkeypatch.setattr(loop, "WAL_CHECKPOINT_BYTES", 256 * 1024)
    monkeypatch.setattr(turns, "HOLD_S", 0.2)

    # The dashboard and the platform's writer are processes of their own, as they are for real (and
    # two SQLite libraries in one process, ours and Python's, would share its POSIX locks).
    stop = tmp_path / "stop"
    reading = tmp_path / "reading"
    report = tmp_path / "writer.json"
    dashboard = subprocess.Popen([sys.executable, "-c", _DASHBOARD, str(db), str(reading), str(stop)])
    writer = None
    try:
        wait_until(reading.exists, 30, "the dashboard's read to begin")
        writer = subprocess.Popen([sys.executable, "-c", _PLATFORM_WRITER, str(db), str(stop), str(report),
                                   str(PLATFORM_BUSY_TIMEOUT_S)])
        consumer = Consumer(resolve(str(home)), batch_ops=2_000)
        stats = consumer.run(once=True)
    finally:
        stop.touch()
        for proc in (dashboard, writer):
            if proc is not None:
                proc.wait(60)
    result = json.loads(report.read_text())
    written, failures = result["written"], result["failures"]
    assert stats.operations == total
    assert failures == [], f"the platform's writes were kept out past its busy timeout: {failures[:3]}"
    assert _tool_counts(db) == {**seeded, "Bash": seeded.get("Bash", 0) + total, "platform": written}
    assert written, "the platform's writer never got in"


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def _turns(tmp_path: Path, shared: bool) -> tuple[WriteTurns, _Clock, apsw.Connection]:
    conn = apsw.Connection(str(tmp_path / "t.db"))
    conn.execute("PRAGMA journal_mode = WAL")
    clock = _Clock()
    return WriteTurns(conn, shared, clock=clock, sleep=clock.sleep), clock, conn


def _hold(turns_: WriteTurns, clock: _Clock, seconds: float, then_free: float = 0.001) -> None:
    with turns_:
        clock.now += seconds
    clock.now += then_free


@pytest.fixture(autouse=True)
def _hold_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turns, "HOLD_S", 1.0)  # the unit tests' arithmetic, whatever the setting


def test_a_shared_database_s_lock_is_left_free_for_a_break_after_each_hold(tmp_path: Path) -> None:
    t, clock, _ = _turns(tmp_path, shared=True)
    for _ in range(12):
        _hold(t, clock, 0.3)  # back-to-back batches of 0.3 s with 1 ms between them
    # After every second of holding (4 batches), the lock is left free for the rest of a break.
    assert clock.slept == [round(BREAK_S - 0.001, 6)] * 2


def test_time_already_free_counts_toward_the_break(tmp_path: Path) -> None:
    t, clock, _ = _turns(tmp_path, shared=True)
    for _ in range(4):
        _hold(t, clock, 0.3, then_free=BREAK_S)  # each batch followed by a whole break's worth of reading
    assert clock.slept == []


def test_a_checkpoint_that_may_wait_is_preceded_by_a_break(tmp_path: Path) -> None:
    t, clock, _ = _turns(tmp_path, shared=True)
    _hold(t, clock, 0.3)
    with t(may_hold=1.0):
        pass
    assert clock.slept == [round(BREAK_S - 0.001, 6)]


def test_a_database_only_the_consumer_writes_never_waits_until_another_connection_commits(tmp_path: Path) -> None:
    t, clock, conn = _turns(tmp_path, shared=False)
    conn.execute("CREATE TABLE x (v)")
    for _ in range(8):
        with t:
            conn.execute("INSERT INTO x VALUES (1)")  # our own commits: still ours alone
            clock.now += 0.3
    assert clock.slept == [] and not t.shared
    other = apsw.Connection(str(tmp_path / "t.db"))
    other.execute("INSERT INTO x VALUES (2)")  # another writer appears
    other.close()
    for _ in range(4):
        _hold(t, clock, 0.3)
    assert t.shared
    assert clock.slept == [round(BREAK_S, 6)]  # it had held the lock 2.4 s without a break
