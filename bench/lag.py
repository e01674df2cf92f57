"""End-to-end lag: from an enqueue call to its row being visible to a reader, at steady rates.

A consumer runs (woken by watchdog); paced producer processes enqueue at the
rate; a reader polls the table every 2 ms and timestamps each new row. Lag is
measured from the start of the enqueue call (which includes the ~1 ms
durable append, so it slightly overstates enqueue-return-to-visible). At
10,000 ops/s producers send batches of 10: single durable enqueues serialise
on the spool lock at about 1 ms each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, Row, median, ms, pct, tmpdir  # noqa: E402

RATES = ((100, 1, 2, 6.0), (1000, 1, 4, 6.0), (10000, 10, 4, 4.0))  # ops/s, batch, processes, seconds


def measure(rate: int, batch: int, procs: int, seconds: float) -> tuple[list[float], int]:
    import apsw

    from codi_queue.paths import resolve

    home = tmpdir(f"lag{rate}")
    env = dict(os.environ, CODI_QUEUE_HOME=home)
    subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=env, check=True, capture_output=True)
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    db = resolve(home).database("sessions")
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "lag_worker.py"), home,
                                 str(rate / procs), str(seconds), str(batch)], env=env) for _ in range(procs)]
    lags: list[float] = []
    last = 0
    expected = None
    end = time.monotonic() + seconds + 30
    while time.monotonic() < end:
        rows = conn.execute("SELECT id, context FROM tool_events WHERE id > ? ORDER BY id", (last,)).fetchall()
        now = time.time()
        for rid, ctx in rows:
            lags.append(now - float(ctx))
            last = rid
        if expected is None and all(w.poll() is not None for w in workers):
            expected = True
            end = min(end, time.monotonic() + 3)
        time.sleep(0.002)
    conn.close()
    consumer.send_signal(signal.SIGTERM)
    try:
        consumer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        consumer.kill()
        log = os.path.join(home, "logs", "consumer.log")
        tail = open(log).read()[-3000:] if os.path.exists(log) else "(no log)"
        raise RuntimeError(f"the consumer did not stop within 60 s of SIGTERM; its log ends:\n{tail}") from None
    return lags, len(lags)


def run(quick: bool = False) -> list[Row]:
    rows = []
    for rate, batch, procs, seconds in RATES:
        lags, n = measure(rate, batch, procs, seconds / (2 if quick else 1))
        goal = "p99 < 25 ms" if rate == 1000 else ""
        rows.append(Row(f"lag at {rate:,} ops/s ({n:,} ops{', batches of 10' if batch > 1 else ''})",
                        f"p50 {ms(median(lags))}, p99 {ms(pct(lags, 99))}", "", "", goal))
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
