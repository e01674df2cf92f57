"""The platform's own writer beside a backlog drain into an adopted claude.db.

The platform's hooks and scripts write claude.db directly with a busy
timeout of 5 s and lose the write when it runs out. A backlog is drained into an
adopted claude.db while a process writes it as they do (connect, insert,
commit, every 20 ms, `timeout=5`) and a dashboard holds 2 s reads back to
back: how long the platform's writes waited, and how many were lost, with
the consumer taking turns at the lock (`consumer/turns.py`) and with its
breaks switched off (as before session 17, but for the checkpoint, which
waits at most 1 s for readers either way). Then the cost of the turns: the
same drain with no other process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Row, discard, ms, pct, tmpdir  # noqa: E402

# The command center's tool_events (config/schema.sql); the consumer adopts it and adds its columns.
PLATFORM_TABLE = ("CREATE TABLE tool_events (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL, "
                  "tool_name TEXT NOT NULL, success INTEGER NOT NULL, duration_ms INTEGER, error_message TEXT, "
                  "context TEXT)")

WRITER = """
import json, os, sqlite3, sys, time
db, stop, report = sys.argv[1:4]
waits, failed = [], 0
deadline = time.monotonic() + 600  # never outlive a benchmark that failed before it said stop
while not os.path.exists(stop) and time.monotonic() < deadline:
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, timeout=5)
    try:
        conn.execute("INSERT INTO tool_events (timestamp, tool_name, success) VALUES (?, 'platform', 1)", (int(time.time()),))
        conn.commit()
    except sqlite3.OperationalError:
        failed += 1
    finally:
        conn.close()
    waits.append(time.perf_counter() - t0)
    time.sleep(0.02)
json.dump({"waits": waits, "failed": failed}, open(report, "w"))
"""

DASHBOARD = """
import os, sqlite3, sys, time
db, stop = sys.argv[1:3]
conn = sqlite3.connect(db, isolation_level=None)
deadline = time.monotonic() + 600
while not os.path.exists(stop) and time.monotonic() < deadline:
    conn.execute("BEGIN"); conn.execute("SELECT COUNT(*) FROM tool_events").fetchone()
    time.sleep(2.0); conn.execute("COMMIT")
"""

# The consumer's `run --once`, with its breaks switched off when asked.
CONSUMER = """
import sys
from codi_queue.consumer import turns
if sys.argv[1] == "off":
    turns.HOLD_S = float("inf")
from codi_queue.cli import main
sys.exit(main(["--home", sys.argv[2], "run", "--once"]))
"""


def _adopted_home(total: int) -> tuple[str, str, str]:
    from codi_queue import enqueue_many

    root = tmpdir("shared")
    home, data = os.path.join(root, "home"), os.path.join(root, "claude")
    os.makedirs(home, 0o700)
    os.makedirs(data, 0o700)
    db = os.path.join(data, "claude.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(PLATFORM_TABLE)
    conn.commit()
    conn.close()
    with open(os.path.join(home, "config.toml"), "w") as fp:
        fp.write(f'[databases]\nsessions = "{db}"\n')
    for start in range(0, total, 10_000):
        enqueue_many("tool_event", [{"tool_name": "Bash", "success": True, "duration_ms": i, "session_id": f"s{i % 50}"}
                                    for i in range(start, min(total, start + 10_000))], home=home)
    return root, home, db


def drain(total: int, turns: str, others: bool) -> tuple[float, list[float], int]:
    """(drain seconds, the platform writer's waits, its lost writes)."""
    root, home, db = _adopted_home(total)
    stop, report = os.path.join(root, "stop"), os.path.join(root, "writer.json")
    procs = [subprocess.Popen([sys.executable, "-c", code, db, stop, report]) for code in (WRITER, DASHBOARD)] \
        if others else []
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CONSUMER, turns, home], check=True, capture_output=True)
    dt = time.perf_counter() - t0
    open(stop, "w").close()
    for proc in procs:
        proc.wait(60)
    waits, failed = [], 0
    if others:
        with open(report) as fp:
            result = json.load(fp)
        waits, failed = result["waits"], result["failed"]
    discard(root)
    return dt, waits, failed


def run(quick: bool = False) -> list[Row]:
    total = 300_000 if quick else 1_500_000
    rows = []
    for turns in ("on", "off"):
        dt, waits, failed = drain(total, turns, others=True)
        rows.append(Row(f"platform writer beside a {total:,}-op drain into claude.db, turns {turns}",
                        f"max wait {ms(max(waits))}, p99 {ms(pct(waits, 99))}, {failed} of {len(waits)} lost",
                        f"its busy timeout 5 s; drain {dt:.1f} s", "", "0 lost, max wait < 2 s" if turns == "on" else ""))
    alone = {turns: min(drain(total, turns, others=False)[0] for _ in range(2)) for turns in ("on", "off")}
    rows.append(Row(f"drain of {total:,} ops into claude.db alone, turns on", f"{alone['on']:.2f} s",
                    f"turns off {alone['off']:.2f} s", f"{alone['on'] / alone['off']:.2f}×", "the turns' cost"))
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
