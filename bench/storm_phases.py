"""Where a storm enqueue spends its time: waiting for the spool lock, holding it, the shared sync.

``python bench/storm_phases.py`` runs 16 producers × 150 API enqueues at once and
times each phase by wrapping the spool's lock and acknowledgement in each
producer (the figures in docs/benchmarks.md, "Write storm"). Not part of
``make bench``: it instruments our own code, so it explains the storm row
rather than measuring it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCERS, PER = 16, 150


def worker(home: str, n: int, out: str, go: str) -> None:
    sys.path.insert(0, ROOT)
    import fcntl

    import codi_queue.queue.spool as spool
    from codi_queue import enqueue

    phases: dict[str, list[float]] = {"lock wait": [], "lock held": [], "sync + acknowledge": [], "enqueue": []}
    locked, ack, flock = spool.Spool._locked, spool.acknowledge, fcntl.flock
    mark: dict[str, float] = {}

    def timed_flock(fd: int, op: int) -> None:
        if op == fcntl.LOCK_EX and mark.pop("want", None) is not None:
            t = time.perf_counter()
            flock(fd, op)
            mark["held"] = time.perf_counter()
            phases["lock wait"].append(mark["held"] - t)
            return
        if op == fcntl.LOCK_UN and "held" in mark:
            phases["lock held"].append(time.perf_counter() - mark.pop("held"))
        flock(fd, op)

    @contextmanager
    def timed_locked(self: spool.Spool) -> Iterator[None]:
        mark["want"] = 1.0
        with locked(self):
            yield

    def timed_ack(*args: int) -> bool:
        t = time.perf_counter()
        try:
            return ack(*args)
        finally:
            phases["sync + acknowledge"].append(time.perf_counter() - t)

    spool.Spool._locked = timed_locked  # type: ignore[method-assign]
    spool.fcntl.flock = timed_flock  # type: ignore[attr-defined]
    spool.acknowledge = timed_ack
    while not os.path.exists(go):
        time.sleep(0.001)
    for _ in range(n):
        t = time.perf_counter()
        enqueue("tool_event", {"tool_name": "storm", "success": True}, home=home)
        phases["enqueue"].append(time.perf_counter() - t)
    with open(out, "w") as fp:
        json.dump(phases, fp)


def main() -> None:
    sys.path.insert(0, ROOT)
    from bench.common import tmpdir  # removed when this process exits

    tmp = tmpdir("phases")
    go = os.path.join(tmp, "go")
    outs = [os.path.join(tmp, f"out{i}.json") for i in range(PRODUCERS)]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", os.path.join(tmp, "home"), str(PER), o, go])
             for o in outs]
    time.sleep(2)  # every producer imported and waiting
    open(go, "w").close()
    for p in procs:
        p.wait()
    merged: dict[str, list[float]] = {}
    for o in outs:
        with open(o) as fp:
            for k, v in json.load(fp).items():
                merged.setdefault(k, []).extend(v)
    for k, v in merged.items():
        v.sort()
        print(f"{k:<20} n={len(v):5}  p50 {v[len(v) // 2] * 1000:7.3f} ms  p99 {v[int(len(v) * 0.99)] * 1000:7.3f} ms"
              f"  mean {statistics.mean(v) * 1000:.3f} ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
