"""Many producer processes at once: persist-queue used naively loses records; the spool does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths

from .conftest import cli_env, query

PROCS = 8
EACH = 150


def _race(role: str, target: str, home: Path, tmp: Path) -> list[str]:
    """Run the producers at once; the stderr of each one that failed."""
    go = tmp / f"go-{role}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.procs", role, target, str(i), str(EACH), str(go)],
            env=cli_env(home),
            stderr=subprocess.PIPE,
        )
        for i in range(PROCS)
    ]
    go.touch()  # all start putting at once
    failures = []
    for p in procs:
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            failures.append(err.decode()[-2000:])
    return failures


def _naive_readable(qdir: str) -> int:
    import persistqueue
    from persistqueue.serializers import json as json_serializer

    # Corruption shows up as any of these; each means the rest is unreadable.
    broken = (ValueError, OSError, KeyError, TypeError, IndexError)
    try:
        q = persistqueue.Queue(qdir, serializer=json_serializer, autosave=True)
    except broken:
        return 0
    seen = 0
    while True:
        try:
            q.get(block=False)
        except persistqueue.Empty:
            return seen
        except broken:
            return seen
        seen += 1


def test_naive_persist_queue_loses_records_under_concurrent_producers(tmp_path: Path, home: Path) -> None:
    qdir = str(tmp_path / "naive")
    crashed = _race("naive", qdir, home, tmp_path)
    # The control: the harness must be able to see loss (or producers crashing
    # on each other's files), or the next test proves nothing.
    assert crashed or _naive_readable(qdir) < PROCS * EACH


def test_spool_keeps_every_record_under_the_same_race(tmp_path: Path, home: Path, paths: Paths) -> None:
    assert _race("spool", str(home), home, tmp_path) == []
    Consumer(paths).run(once=True)
    ids = [r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events")]
    assert len(ids) == len(set(ids)) == PROCS * EACH
