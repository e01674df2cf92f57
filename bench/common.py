"""Shared helpers for the benchmarks: timing statistics and the result table."""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Row:
    name: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""


def pct(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


_made: list[str] = []  # every directory tmpdir made and discard did not remove yet


def tmpdir(prefix: str) -> str:
    """A fresh directory for one benchmark, removed by ``discard`` or when the process exits
    (a full run leaves several GB of homes behind otherwise: 6.3 GB after a dozen runs here)."""
    path = tempfile.mkdtemp(prefix=f"codi-bench-{prefix}-")
    _made.append(path)
    return path


def _not_removed(_func: Callable[..., object], path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    print(f"bench: could not remove {path}: {exc_info[1]}", file=sys.stderr)


def discard(path: str) -> None:
    """Remove a directory ``tmpdir`` made, now (the large homes: they would fill a small disk)."""
    if path in _made:
        _made.remove(path)
    shutil.rmtree(path, onerror=_not_removed)


@atexit.register
def _discard_all() -> None:
    while _made:
        discard(_made[-1])


def wall_times(argv: Sequence[str], runs: int, env: dict[str, str] | None = None,
               stdin: bytes | None = None, check: Callable[[subprocess.CompletedProcess[bytes]], None] | None = None) -> list[float]:
    import time

    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60)
        out.append(time.perf_counter() - t0)
        if check:
            check(res)
        elif res.returncode != 0:
            raise RuntimeError(f"{argv} failed: {res.stderr.decode()[-500:]}")
    return out


def host_steal_s() -> float | None:
    """CPU time the hypervisor took from this VM so far (``steal`` in /proc/stat, all CPUs), or None
    where there is no such figure. On this class of machine the host pauses the whole VM for
    5-25 ms every 100 ms while its CPUs are busy and its disk is synced thousands of times a
    second (docs/benchmarks.md, session 10): a storm's p99 can be set by those pauses."""
    try:
        with open("/proc/stat") as fp:
            fields = fp.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    return f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {sys.version.split()[0]} · {platform.platform()}"


def print_table(rows: Sequence[Row]) -> None:
    head = ("measure", "codi-queue", "baseline", "ratio", "goal")
    table = [head, *[(r.name, r.value, r.baseline, r.ratio, r.goal) for r in rows]]
    widths = [max(len(str(row[i])) for row in table) for i in range(5)]
    lines = []
    for n, row in enumerate(table):
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines))
