"""The live inbox: a record a producer may still be writing is never damage (issue: data loss).

The consumer runs while producers write batches of every size class as the
first write of a fresh home, as the first write after a claim, and while
claims happen; every acknowledged operation must be applied exactly once,
with no dead letter and no error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.errorlog import last_error
from codi_queue.paths import Paths, resolve

from .conftest import cli_env, count_when_ready, query, tool_event_lines, wait_until

# Lines per batch: one op, thousands, and a batch of several MiB (tens of MiB in the long run).
BIG = int(os.environ.get("CODI_BIG_BATCH_LINES", "40000"))
SIZES = [1, 5000, BIG]


def _consumer(home: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "codi_queue", "run", "--poll", "0.05", *extra],
        env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _enqueue(home: Path, lines: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "codi_queue", "enqueue", "tool_event", "-"],
        env=cli_env(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(lines.encode())
    proc.stdin.close()
    return proc


def _applied(paths: Paths) -> int:
    return count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") or 0


def _check_exactly_once(paths: Paths, expected: int) -> None:
    wait_until(lambda: _applied(paths) >= expected, 120, f"{expected} rows")
    rows = query(paths, "sessions", "SELECT count(*), count(DISTINCT tool_use_id) FROM tool_events")
    assert rows == [(expected, expected)]
    dead = sum(count_when_ready(paths, t, "SELECT count(*) FROM cq_dead_letters") or 0
               for t in ("sessions", "state"))
    assert dead == 0
    err = last_error(paths.error_log)
    assert err is None, err


def _stop(consumer: subprocess.Popen[bytes]) -> None:
    consumer.terminate()
    _, stderr = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, stderr.decode(errors="replace")[-2000:]


@pytest.mark.parametrize("lines", SIZES, ids=lambda n: f"{n}-lines")
def test_first_write_of_a_fresh_home_is_never_damage(tmp_path: Path, lines: int) -> None:
    home = tmp_path / "home"
    consumer = _consumer(home)
    try:
        wait_until(lambda: os.path.exists(resolve(str(home)).consumer_log), 30, "the consumer to start")
        producer = _enqueue(home, tool_event_lines(lines, "a"))
        assert producer.wait(timeout=300) == 0, producer.stderr.read() if producer.stderr else ""
        _check_exactly_once(resolve(str(home)), lines)
    finally:
        _stop(consumer)


def test_first_write_after_a_claim_and_writes_during_claims(tmp_path: Path) -> None:
    # --rotate-bytes 1: the consumer claims the inbox on every pass where it is
    # applied, so every size class lands as the first write of a new inbox, and
    # the concurrent producers race the claims.
    home = tmp_path / "home"
    consumer = _consumer(home, "--rotate-bytes", "1")
    paths = resolve(str(home))
    try:
        total = 0
        for n, lines in enumerate(SIZES):
            producer = _enqueue(home, tool_event_lines(lines, f"seq{n}"))
            assert producer.wait(timeout=300) == 0
            total += lines
            wait_until(lambda: _applied(paths) >= total, 120, f"{total} rows")
        concurrent = [_enqueue(home, tool_event_lines(lines, f"c{i}")) for i, lines in enumerate([2000, 1, 3000, 500] * 2)]
        for proc in concurrent:
            assert proc.wait(timeout=300) == 0
        total += (2000 + 1 + 3000 + 500) * 2
        _check_exactly_once(paths, total)
        assert len(os.listdir(paths.archive)) >= 2  # claims really happened
    finally:
        _stop(consumer)


def test_a_missing_inbox_id_or_info_hides_nothing(tmp_path: Path) -> None:
    from codi_queue import enqueue
    from codi_queue.consumer.loop import Consumer

    for victim in ("id", "info"):
        paths = resolve(str(tmp_path / victim))
        for i in range(5):
            assert enqueue("tool_event", {"tool_name": "t", "success": True, "tool_use_id": str(i)}, home=paths.home)
        os.remove(os.path.join(paths.spool, "inbox", victim))
        Consumer(paths).run(once=True)
        assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(5,)], victim
        assert "moved to segments" in Path(paths.error_log).read_text()


def test_an_unreadable_inbox_id_hides_nothing(tmp_path: Path) -> None:
    from codi_queue import enqueue
    from codi_queue.consumer.loop import Consumer

    paths = resolve(str(tmp_path / "home"))
    for i in range(3):
        assert enqueue("tool_event", {"tool_name": "t", "success": True, "tool_use_id": str(i)}, home=paths.home)
    Path(paths.spool, "inbox", "id").write_bytes(b"\xff garbage")
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]


def test_records_whose_acknowledgement_was_never_published_are_read_after_a_grace(tmp_path: Path) -> None:
    """A producer that died between its fsync and publishing ``acked`` (or a power cut that lost the
    unsynced hint): the running consumer syncs the head itself after a grace and reads them."""
    from codi_queue import enqueue

    home = tmp_path / "home"
    paths = resolve(str(home))
    for i in range(3):
        assert enqueue("tool_event", {"tool_name": "t", "success": True, "tool_use_id": f"g{i}"}, home=str(home))
    os.remove(os.path.join(paths.spool, "inbox", "acked"))
    consumer = _consumer(home)
    try:
        wait_until(lambda: _applied(paths) == 3, 30, "the unpublished records")
    finally:
        _stop(consumer)


def test_the_acknowledged_position_only_moves_forward(tmp_path: Path) -> None:
    from codi_queue.fsutil import DIR_FLAGS
    from codi_queue.queue.spool import publish_acked, read_acked

    fd = os.open(tmp_path, DIR_FLAGS)
    try:
        assert read_acked(fd) is None
        publish_acked(fd, 500)
        publish_acked(fd, 300)  # a producer that finished its fsyncs later, for earlier bytes
        assert read_acked(fd) == 500
        publish_acked(fd, (1 << 40) | 7)
        assert read_acked(fd) == (1 << 40) | 7
    finally:
        os.close(fd)


def test_an_unreadable_inbox_info_hides_nothing(tmp_path: Path) -> None:
    from codi_queue import enqueue
    from codi_queue.consumer.loop import Consumer

    paths = resolve(str(tmp_path / "home"))
    for i in range(4):
        assert enqueue("tool_event", {"tool_name": "t", "success": True, "tool_use_id": str(i)}, home=paths.home)
    Path(paths.spool, "inbox", "info").write_bytes(b"\x00" * 40)
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(4,)]


def test_records_written_past_a_full_chunk_and_not_yet_acknowledged_are_no_loss(tmp_path: Path) -> None:
    """A full chunk acknowledged (the position names the start of the next one) while a producer
    has written the next chunk's first records and not yet acknowledged them. The reader stops
    at the acknowledged position; it once took its operation count from info recovered past it,
    and reported the unacknowledged operations as lost (found by bench/lag.py at 10,000 ops/s)."""
    from codi_queue.producers.records import append_records
    from codi_queue.producers.validate import encode_body, pack_records, validate
    from codi_queue.queue.durable_queue import CHUNK_RECORDS, POS_SHIFT, open_queue, read_acked
    from codi_queue.queue.segment import SegmentReader

    paths = resolve(str(tmp_path / "home"))
    body = encode_body(validate("tool_event", {"tool_name": "t", "success": True}), "tool_event")
    records = [pack_records("tool_event", [body])[0] for _ in range(CHUNK_RECORDS + 2)]
    append_records(paths, records[:CHUNK_RECORDS])  # one acknowledgement: the chunk, whole
    inbox = os.path.join(paths.spool, "inbox")
    dfd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_acked(dfd) == 1 << POS_SHIFT  # the start of the next chunk
    finally:
        os.close(dfd)
    writer = open_queue(inbox)  # a producer mid-append: written, not yet acknowledged
    for record in records[CHUNK_RECORDS:]:
        writer.put(record)
    writer.headf.flush()
    try:
        chunk0_end = os.path.getsize(os.path.join(inbox, "q00000"))
        for start in (0, chunk0_end):  # from the beginning, and from a cursor at the chunk's end
            with SegmentReader(inbox, live=True) as reader:
                entries = list(reader.entries(start))
            assert [e.damage for e in entries if e.payload is None] == [], start
            assert sum(e.nops for e in entries) == (CHUNK_RECORDS if start == 0 else 0)
            assert all(e.lost == 0 for e in entries)
    finally:
        writer.close()
