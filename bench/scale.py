"""Scale: enqueue latency, drain rate, consumer memory and disk use as the spool deepens.

The consumer is down while the spool fills to each depth (a consumer down
for a week), then one consumer process drains it; its peak resident memory
(VmHWM) shows whether memory stays bounded whatever the depth.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Row, discard, ms, tmpdir  # noqa: E402


def _du(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total


def depth(n: int) -> dict[str, float]:
    from codi_queue import enqueue, enqueue_many

    home = tmpdir(f"scale{n}")
    body = [{"tool_name": "scale", "success": True, "duration_ms": 7, "session_id": "s"}] * 10_000
    for _ in range(n // 10_000):
        enqueue_many("tool_event", body, home=home)
    lat = []
    for _ in range(200):
        t0 = time.perf_counter()
        enqueue("tool_event", body[0], home=home)
        lat.append(time.perf_counter() - t0)
    spool = _du(os.path.join(home, "spool"))
    env = dict(os.environ, CODI_QUEUE_HOME=home)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--once"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fp:
                for line in fp:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except FileNotFoundError:
            break
        time.sleep(0.05)
    drain = time.perf_counter() - t0
    db = _du(os.path.join(home, "db"))
    discard(home)
    return {"p50": statistics.median(lat), "drain_ops_s": (n + 200) / drain, "peak_kb": peak,
            "spool_bytes": spool, "db_bytes": db}


def run(quick: bool = False) -> list[Row]:
    depths = (10_000, 1_000_000) if quick else (10_000, 1_000_000, 10_000_000)
    rows = []
    for n in depths:
        r = depth(n)
        rows.append(Row(
            f"scale: {n:,} pending",
            f"enqueue p50 {ms(r['p50'])}, drain {r['drain_ops_s']:,.0f} ops/s",
            f"consumer peak RSS {r['peak_kb'] / 1024:.0f} MiB",
            f"spool {r['spool_bytes'] / 2**20:,.0f} MiB, db {r['db_bytes'] / 2**20:,.0f} MiB",
            "memory bounded",
        ))
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
