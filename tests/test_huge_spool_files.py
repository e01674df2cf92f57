"""Spool files of any size: a tail or a hole of gigabytes costs neither memory, time nor disk.

A producer killed while appending a large batch leaves its unacknowledged
bytes past ``info``; damage or a hostile hand can make a chunk sparse and
terabytes long. Producers read past ``info`` on every open (recovery), and
the consumer copies a damaged span aside: both used to read or write every
byte (bug 75 in docs/reliability.md).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codi_queue import enqueue
from codi_queue.consumer import loop
from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths, resolve

from .conftest import cli_env, query

GIB = 1 << 30


def _claimed_segment(home: Path, ops: int = 3) -> tuple[Paths, Path]:
    """A queue directory of ``ops`` operations moved to ``segments/`` as a claim leaves it."""
    for i in range(ops):
        assert enqueue("tool_event", {"tool_name": f"t{i}", "success": True}, home=str(home))
    paths = resolve(str(home))
    inbox = Path(paths.spool, "inbox")
    seg = Path(paths.spool, "segments", inbox.joinpath("id").read_text().strip())
    seg.parent.mkdir(mode=0o700, exist_ok=True)
    inbox.rename(seg)
    return paths, seg


def _dead_letter_reasons(paths: Paths) -> list[str]:
    return [r[0] for r in query(paths, "state", "SELECT reason FROM cq_dead_letters")]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (GIB, GIB))


def test_a_huge_tail_past_info_is_never_read_into_memory(home: Path) -> None:
    for i in range(3):
        assert enqueue("tool_event", {"tool_name": f"t{i}", "success": True}, home=str(home))
    chunk = Path(resolve(str(home)).spool, "inbox", "q00000")
    os.truncate(chunk, 64 * GIB)  # a sparse tail: no disk, 64 GiB past what info names
    # A hook or enqueue opening the inbox, in a process that may not use more than 1 GiB: it read
    # the whole tail into memory (a MemoryError here; 4 GB of memory and 13 s for a 4 GiB tail).
    proc = subprocess.run([sys.executable, "-m", "codi_queue", "enqueue", "tool_event", '{"tool_name": "t3", "success": true}'],
                          env=cli_env(home), capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr
    assert chunk.stat().st_size < 4096  # the unacknowledged tail cut off, as for any killed append
    Consumer(resolve(str(home))).run(once=True)
    assert query(resolve(str(home)), "sessions", "SELECT tool_name FROM tool_events ORDER BY id") == \
        [("t0",), ("t1",), ("t2",), ("t3",)]


def test_a_hole_in_a_claimed_chunk_is_passed_over_and_kept_as_a_hole(home: Path) -> None:
    paths, seg = _claimed_segment(home)
    (seg / "info").unlink()  # no info: the consumer scans every chunk to its end
    chunk = seg / "q00000"
    data_end = chunk.stat().st_size
    os.truncate(chunk, 2 * GIB)
    stats = Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT COUNT(*) FROM tool_events") == [(3,)]
    assert stats.damaged_spans == 1
    (reason,) = _dead_letter_reasons(paths)
    assert f"all {2 * GIB - data_end} bytes kept in" in reason
    (kept,) = Path(paths.spool, "quarantine").iterdir()
    st = kept.stat()
    assert st.st_size == 2 * GIB - data_end  # the span's length, read back as the zeros it holds
    assert st.st_blocks * 512 < 1 << 20  # and no disk: it wrote 2 GiB of zeros


def _garbage_tail(home: Path, size: int) -> tuple[Paths, int]:
    paths, seg = _claimed_segment(home)
    (seg / "info").unlink()
    with open(seg / "q00000", "ab") as fp:
        fp.write(os.urandom(size).replace(b"\xff", b"\x00"))  # no byte that could start a header
    return paths, size


def test_a_damaged_span_is_not_copied_when_it_would_take_half_the_free_space(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, size = _garbage_tail(home, 3 << 20)
    real = os.statvfs

    def nearly_full(path: str) -> os.statvfs_result:
        st = real(path)
        fields = list(st)
        fields[4] = (4 << 20) // st.f_frsize  # f_bavail: 4 MiB free
        return os.statvfs_result(fields)

    monkeypatch.setattr(loop.os, "statvfs", nearly_full)
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT COUNT(*) FROM tool_events") == [(3,)]
    (reason,) = _dead_letter_reasons(paths)
    assert f"only the first 1 MiB could be kept (its {size} bytes would take more than half" in reason
    assert not list(Path(paths.spool, "quarantine").iterdir())


def test_a_copy_that_fails_part_way_is_removed(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, _ = _garbage_tail(home, 3 << 20)
    from codi_queue import fsutil

    written: list[int] = []
    real_write_all = fsutil.write_all

    def fills_the_disk(fd: int, data: bytes) -> None:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        real_write_all(fd, data)

    monkeypatch.setattr(fsutil, "write_all", fills_the_disk)
    Consumer(paths).run(once=True)
    (reason,) = _dead_letter_reasons(paths)
    assert "only the first 1 MiB could be kept (the copy failed: [Errno 28] No space left on device)" in reason
    assert written and not list(Path(paths.spool, "quarantine").iterdir())


def test_status_reads_only_the_end_of_an_error_log_of_any_size(home: Path) -> None:
    assert enqueue("tool_event", {"tool_name": "t", "success": True}, home=str(home))
    log = Path(resolve(str(home)).error_log)
    log.parent.mkdir(mode=0o700, exist_ok=True)
    log.touch(mode=0o600)
    os.truncate(log, 16 * GIB)  # a hole: no disk, but 16 GiB to read whole
    with open(log, "ab") as fp:  # as record_error appends (it would rotate a log this large first)
        fp.write(b"\n" + json.dumps({"ts": time.time(), "source": "producer", "pid": 1, "message": "the newest error"}).encode()
                 + b"\n")
    proc = subprocess.run([sys.executable, "-m", "codi_queue", "status", "--json"], env=cli_env(home),
                          capture_output=True, text=True, timeout=120, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr  # it read the whole log: a MemoryError under 1 GiB
    assert '"the newest error"' in proc.stdout
