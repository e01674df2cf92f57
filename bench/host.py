"""The machine's premise: does the host pause this VM while its CPUs are busy and its disk syncs?

A probe process spins on the clock and records every gap longer than 2 ms
(nothing else it does can take that long), while, in turn:

- a second spinner (both CPUs busy, no disk);
- a process that appends and fdatasyncs in a loop (one CPU busy, the disk busy).

On the machines here the second case shows a gap of 10-20 ms every 100 ms
and the hypervisor's ``steal`` counter climbs; the first shows neither. So
any storm that keeps the CPUs busy while it syncs meets one such pause every
100 ms, and every call in flight then waits it out: the storm's p99 is that
pause once the pauses hold more than 1% of the calls (docs/benchmarks.md,
session 10).
"""

from __future__ import annotations

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Row, host_steal_s, tmpdir  # noqa: E402

GAP_S = 0.002

SPINNER = """
import sys, time
end = time.perf_counter() + float(sys.argv[1])
last = time.perf_counter()
gaps = []
while last < end:
    now = time.perf_counter()
    if now - last > %r:
        gaps.append(now - last)
    last = now
print(",".join(f"{g:.6f}" for g in gaps))
""" % GAP_S

SYNCER = """
import os, sys, time
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
sync = getattr(os, "fdatasync", os.fsync)
end = time.perf_counter() + float(sys.argv[1])
n = 0
while time.perf_counter() < end:
    os.write(fd, b"x" * 240 + b"\\n")
    sync(fd)
    n += 1
print(n)
"""


def probe(load: str, seconds: float) -> dict[str, float]:
    """Gaps the spinning probe saw (count, total, longest) and host steal, with ``load`` beside it."""
    work = tmpdir("host")
    other = ([sys.executable, "-c", SPINNER, str(seconds)] if load == "spinner"
             else [sys.executable, "-c", SYNCER, str(seconds), os.path.join(work, "synced")])
    steal0 = host_steal_s()
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER, str(seconds)], stdout=subprocess.PIPE, text=True)
    beside = subprocess.Popen(other, stdout=subprocess.PIPE, text=True)
    out, _ = spinner.communicate(timeout=seconds + 60)
    beside_out, _ = beside.communicate(timeout=seconds + 60)
    steal1 = host_steal_s()
    gaps = [float(g) for g in out.strip().split(",") if g]
    return {"gaps": len(gaps), "gap_total": sum(gaps), "gap_max": max(gaps, default=0.0),
            "steal": -1.0 if steal0 is None or steal1 is None else steal1 - steal0,
            "syncs": float(beside_out.strip() or 0) if load == "syncer" else 0.0}


def run(quick: bool = False) -> list[Row]:
    seconds = 1.0 if quick else 3.0
    rows = []
    for load, what in (("spinner", "a second spinner (CPUs busy, no disk)"),
                       ("syncer", "an fdatasync loop (a CPU and the disk busy)")):
        r = probe(load, seconds)
        steal = "n/a" if r["steal"] < 0 else f"{r['steal'] * 1000:.0f} ms"
        syncs = f", {r['syncs'] / seconds:,.0f} syncs/s" if load == "syncer" else ""
        rows.append(Row(
            f"host pauses over {seconds:.0f} s: a spinning probe beside {what}",
            f"{r['gaps']:.0f} gaps > {GAP_S * 1000:.0f} ms, {r['gap_total'] * 1000:.0f} ms in all, "
            f"longest {r['gap_max'] * 1000:.1f} ms",
            f"host steal {steal}{syncs}", "",
            "premise: a busy storm meets these pauses" if load == "syncer" else "premise: none",
        ))
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
