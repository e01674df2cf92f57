"""Enqueue cost: one durable enqueue through the Python API against the machine's floor, and batch throughput.

The floor is what any durable append must pay here, measured in the same run:
one write of a 200-byte record to a data file and one ``fdatasync``. The
three-sync append codi-queue used before (data, a synced ``info`` rename,
the directory) is measured beside it for reference.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Row, median, ms, pct, tmpdir  # noqa: E402


def floor_samples(n: int, with_pointer: bool = False) -> list[float]:
    """One fdatasync'd append: the physical floor of a durable write here. ``with_pointer``:
    then a synced metadata rename and the directory too (the old acknowledgement)."""
    d = tmpdir("floor3" if with_pointer else "floor")
    fd = os.open(os.path.join(d, "data"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    dfd = os.open(d, os.O_RDONLY)
    payload = b"x" * 200
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, payload)
            os.fdatasync(fd)
            if with_pointer:
                tmp = os.open(os.path.join(d, "info.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(tmp, b"head")
                os.fsync(tmp)
                os.close(tmp)
                os.replace(os.path.join(d, "info.tmp"), os.path.join(d, "info"))
                os.fsync(dfd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.close(dfd)
    return out


def api_samples(n: int) -> list[float]:
    from codi_queue import enqueue

    home = tmpdir("api")
    body = {"tool_name": "Bash", "success": True, "duration_ms": 42, "session_id": "s-1"}
    enqueue("tool_event", body, home=home)  # first call pays the imports and directory creation
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        if not enqueue("tool_event", body, home=home):
            raise RuntimeError("enqueue failed")
        out.append(time.perf_counter() - t0)
    return out


def batch_rate(total: int, batch: int) -> float:
    from codi_queue import enqueue_many

    home = tmpdir("batch")
    bodies = [{"tool_name": "Bash", "success": True, "duration_ms": i, "session_id": "s-1"} for i in range(batch)]
    enqueue_many("tool_event", bodies[:10], home=home)
    t0 = time.perf_counter()
    for _ in range(total // batch):
        if not enqueue_many("tool_event", bodies, home=home):
            raise RuntimeError("enqueue_many failed")
    return (total // batch) * batch / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[Row]:
    n = 200 if quick else 1000
    # Interleave so that a noisy neighbour hurts both sides alike.
    floor: list[float] = []
    three: list[float] = []
    api: list[float] = []
    for _ in range(4):
        floor += floor_samples(n // 4)
        three += floor_samples(n // 4, with_pointer=True)
        api += api_samples(n // 4)
    rate = batch_rate(100_000 if quick else 500_000, 10_000)
    f50, a50 = median(floor), median(api)
    return [
        Row("API enqueue, one op, p50", ms(a50), f"one fdatasync'd append {ms(f50)}", f"{a50 / f50:.2f}×",
            "≤ 2× the floor"),
        Row("reference: data + synced info rename + directory, p50", ms(median(three)), f"floor {ms(f50)}",
            f"{median(three) / f50:.2f}×", ""),
        Row("API enqueue, one op, p99", ms(pct(api, 99)), f"floor {ms(pct(floor, 99))}", f"{pct(api, 99) / pct(floor, 99):.2f}×", ""),
        Row("API enqueue_many, 10k-op batches", f"{rate:,.0f} ops/s", "", "", "≥ 100,000 ops/s"),
    ]


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
