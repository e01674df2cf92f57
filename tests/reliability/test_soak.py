"""Load: 16 producers at a steady rate, a dashboard reader, a consumer restarted now and then.

Afterwards every acknowledged operation is there exactly once, the WAL stayed
bounded and the consumer's memory stayed flat. CODI_SOAK_SECONDS sets the
length (a few seconds in the default suite; minutes in the long run).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import apsw

from codi_queue.paths import Paths

from ..conftest import cli_env, query, run_cli

SECONDS = int(os.environ.get("CODI_SOAK_SECONDS", "6"))
PRODUCERS = 16
WAL_LIMIT = 96 * 1024 * 1024  # journal_size_limit is 64 MiB; a long reader may hold a checkpoint back a while


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_soak(tmp_path: Path, home: Path, paths: Paths) -> None:
    rng = random.Random(os.getpid())
    env = cli_env(home)
    producers = [
        subprocess.Popen([sys.executable, "-m", "tests.procs", "paced", str(home), str(i), str(SECONDS),
                          str(tmp_path / f"ack-{i}")], env=env, stderr=subprocess.PIPE)
        for i in range(PRODUCERS)
    ]
    stop = threading.Event()
    wal_max = [0]
    reads = [0]

    def dashboard() -> None:
        while not stop.is_set():
            if not os.path.exists(paths.database("sessions")):
                time.sleep(0.1)
                continue
            try:
                conn = apsw.Connection(paths.database("sessions"), flags=apsw.SQLITE_OPEN_READONLY)
            except apsw.Error:
                time.sleep(0.1)
                continue
            try:
                conn.set_busy_timeout(5000)
                conn.execute("BEGIN")
                conn.execute("SELECT tool_name, count(*), avg(duration_ms) FROM tool_events GROUP BY tool_name").fetchall()
                stop.wait(0.5)  # a long read transaction, as a dashboard refresh holds one
                conn.execute("COMMIT")
                reads[0] += 1
            except apsw.SQLError:
                pass  # tables not created yet
            finally:
                conn.close()
            try:
                wal_max[0] = max(wal_max[0], os.path.getsize(paths.database("sessions") + "-wal"))
            except FileNotFoundError:
                continue

    reader = threading.Thread(target=dashboard)
    reader.start()
    consumer = None
    rss: list[int] = []
    try:
        deadline = time.monotonic() + SECONDS + 60
        while any(p.poll() is None for p in producers):
            assert time.monotonic() < deadline
            consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.5"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            life = rng.uniform(1.0, 3.0)
            end = time.monotonic() + life
            while time.monotonic() < end:
                time.sleep(0.25)
                if consumer.poll() is None:
                    rss.append(_rss_kb(consumer.pid))
            consumer.send_signal(signal.SIGKILL if rng.random() < 0.3 else signal.SIGTERM)
            consumer.wait(timeout=60)
        # One long-lived consumer drains the rest: its memory must stay flat while it works.
        consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.5"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        for _ in range(12):
            time.sleep(0.25)
            samples.append(_rss_kb(consumer.pid))
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0
    finally:
        stop.set()
        reader.join(timeout=60)
        for p in producers:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
    for p in producers:
        assert p.returncode == 0, p.stderr.read().decode()[-1000:] if p.stderr else ""
    assert run_cli(home, "run", "--once", timeout=300).returncode == 0
    acked = 0
    for i in range(PRODUCERS):
        acked += len((tmp_path / f"ack-{i}").read_text().splitlines())
    rows = Counter(r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events"))
    assert len(rows) == acked and set(rows.values()) == {1}
    assert wal_max[0] < WAL_LIMIT
    assert reads[0] > 0
    assert samples[-1] <= samples[0] * 1.5 + 20_000, samples  # no growth worth the name
    print(f"soak: {acked} acknowledged, {len(rows)} rows, wal max {wal_max[0]} B, {reads[0]} dashboard reads, "
          f"rss {samples[0]}..{samples[-1]} kB")
