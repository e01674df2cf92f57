"""Corruption in real spool and archive files: detected, reported, kept aside, and draining goes on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths, resolve
from codi_queue.producers.api import enqueue
from codi_queue.queue import frame

from ..conftest import query, run_cli


def _three_records(home: Path) -> tuple[int, int]:
    for name in ("first", "second", "third"):
        enqueue("tool_event", {"tool_name": name, "success": True}, home=str(home))
    chunk = Path(home, "spool", "inbox", "q00000").read_bytes()
    end = len(chunk)  # info is a hint that may trail the records (durable_queue.recover_head)
    last_start = chunk.rfind(frame.MAGIC, 0, end)
    return last_start, end


def test_truncation_at_every_byte_of_the_last_record(tmp_path: Path, home: Path) -> None:
    last_start, end = _three_records(home)
    assert end - last_start > 50
    outcomes = set()
    for cut in range(last_start, end):
        case = tmp_path / f"cut{cut}"
        shutil.copytree(home, case)
        with open(case / "spool" / "inbox" / "q00000", "r+b") as fp:
            fp.truncate(cut)
        paths = resolve(str(case))
        stats = Consumer(paths).run(once=True)
        names = [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY id")]
        assert names == ["first", "second"], cut  # every intact record, nothing decoded from the torn one
        report = collect(paths)
        assert report["dead_letters"] == 1 and stats.damaged_spans == 1, cut
        assert "shorter than info says" in report["last_error"]["message"] or "truncated" in report["last_error"]["message"]
        outcomes.add(report["pending"])
        # The queue still accepts and drains after the damage.
        enqueue("tool_event", {"tool_name": "after", "success": True}, home=str(case))
        Consumer(paths).run(once=True)
        assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]
        shutil.rmtree(case)
    assert outcomes == {0}


def test_flipped_bits_anywhere_in_a_segment(tmp_path: Path, home: Path) -> None:
    last_start, end = _three_records(home)
    data = Path(home, "spool", "inbox", "q00000").read_bytes()
    for pos in range(0, end, 7):
        case = tmp_path / f"flip{pos}"
        shutil.copytree(home, case)
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        Path(case, "spool", "inbox", "q00000").write_bytes(bytes(flipped))
        paths = resolve(str(case))
        Consumer(paths).run(once=True)
        names = [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")]
        assert len(names) == 2 and len(set(names)) == 2, pos  # exactly the two intact records
        assert collect(paths)["dead_letters"] == 1, pos
        shutil.rmtree(case)


def test_damaged_archive_is_reported_by_replay_and_the_rest_restored(home: Path, paths: Paths) -> None:
    _three_records(home)
    Consumer(paths, rotate_bytes=1).run(once=True)
    (segment,) = os.listdir(paths.archive)
    chunk = Path(paths.archive, segment, "q00000")
    data = bytearray(chunk.read_bytes())
    data[data.find(b"second") + 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    import apsw

    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DELETE FROM tool_events")
    conn.close()
    res = run_cli(home, "replay", "--from-archive")
    assert res.returncode == 0 and "1 damaged spans skipped" in res.stdout and "checksum mismatch" in res.stderr
    Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == ["first", "third"]


def _frame_starts(data: bytes) -> list[int]:
    return [f.start for f in frame.scan(data) if isinstance(f, frame.Frame)]


def _fill(paths: Paths, n: int) -> None:
    from codi_queue.producers.records import append_ops

    for i in range(n):  # one record per operation, as separate producer calls make them
        append_ops(paths, [("tool_event", {"tool_name": "t", "success": True, "tool_use_id": str(i)}, None)], "test")


def _lost_reported(paths: Paths) -> str:
    return " ".join(r[0] for r in query(paths, "state", "SELECT reason FROM cq_dead_letters"))


def test_a_chunk_cut_at_a_record_boundary_reports_how_many_operations_it_lost(home: Path) -> None:
    paths = resolve(str(home))
    _fill(paths, 1500)  # q00000 holds 1000 records, q00001 (the head) 500
    chunk = Path(paths.spool, "inbox", "q00000")
    starts = _frame_starts(chunk.read_bytes())
    assert len(starts) == 1000
    with open(chunk, "r+b") as fp:
        fp.truncate(starts[400])  # exactly at a frame boundary: no byte of damage to see
    stats = Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(900,)]
    assert stats.lost_operations == 600
    assert "600 operations" in _lost_reported(paths)
    assert collect(paths)["dead_letters"] == 1


def test_a_missing_chunk_and_a_cut_tail_are_counted(home: Path) -> None:
    paths = resolve(str(home))
    _fill(paths, 1200)
    os.remove(Path(paths.spool, "inbox", "q00000"))
    head = Path(paths.spool, "inbox", "q00001")
    starts = _frame_starts(head.read_bytes())
    with open(head, "r+b") as fp:
        fp.truncate(starts[150])  # the head chunk loses its last 50 records
    stats = Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(150,)]
    assert stats.lost_operations == 1000 + 50
    reasons = _lost_reported(paths)
    assert "1000 operations" in reasons and "50 operations" in reasons


def test_a_frame_smuggled_in_a_field_is_not_applied_after_its_carrier_is_damaged(home: Path) -> None:
    import msgspec

    from codi_queue.producers.validate import pack_records
    from codi_queue.queue.spool import Spool

    paths = resolve(str(home))
    evil_body = msgspec.msgpack.encode({"op": "tool_event", "tool_name": "EVIL", "success": True})
    evil_record = pack_records("tool_event", [evil_body], "attacker")[0]
    smuggled = frame.encode_frame(evil_record, frame.KIND_RECORD, seq=1, nops=1)
    # The carrier holds the smuggled frame verbatim (a bin field inside its body).
    carrier_body = msgspec.msgpack.encode({"op": "tool_event", "tool_name": "carrier", "success": True,
                                           "blob": smuggled})
    raw_carrier = pack_records("tool_event", [carrier_body], "attacker")[0]
    assert smuggled in raw_carrier
    spool = Spool(paths.spool, paths.archive)
    first = pack_records("tool_event", [msgspec.msgpack.encode({"op": "tool_event", "tool_name": "first", "success": True})])
    spool.append(first)
    spool.append([raw_carrier])
    spool.append(pack_records("tool_event", [msgspec.msgpack.encode({"op": "tool_event", "tool_name": "last", "success": True})]))
    chunk = Path(paths.spool, "inbox", "q00000")
    data = bytearray(chunk.read_bytes())
    carrier_start = _frame_starts(bytes(data))[1]
    data[carrier_start + 5] ^= 0xFF  # the carrier's header is damaged: the reader must resynchronise
    chunk.write_bytes(bytes(data))
    Consumer(paths).run(once=True)
    names = [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY id")]
    assert names == ["first", "last"]


def test_a_damaged_span_larger_than_the_inline_copy_is_kept_whole(home: Path) -> None:
    from codi_queue.queue.segment import QUARANTINE_INLINE

    paths = resolve(str(home))
    enqueue("tool_event", {"tool_name": "before", "success": True}, home=str(home))
    big = [{"tool_name": "big", "success": True, "error_message": "x" * 60000} for _ in range(40)]  # ~2.4 MiB record
    from codi_queue.producers.api import enqueue_many

    assert enqueue_many("tool_event", big, home=str(home))
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=str(home))
    chunk = Path(paths.spool, "inbox", "q00000")
    data = bytearray(chunk.read_bytes())
    starts = _frame_starts(bytes(data))
    span = starts[2] - starts[1]
    assert span > QUARANTINE_INLINE
    data[starts[1] + 30] ^= 0x01  # inside the big record's payload: its checksum fails
    chunk.write_bytes(bytes(data))
    stats = Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY id") == [("before",), ("after",)]
    assert stats.lost_operations == 40
    (reason, raw) = query(paths, "state", "SELECT reason, envelope FROM cq_dead_letters")[0]
    assert "40 operations lost" in reason and "kept in" in reason and len(raw) == QUARANTINE_INLINE
    (kept,) = list(Path(paths.spool, "quarantine").iterdir())
    assert kept.read_bytes() == bytes(data[starts[1] : starts[2]])  # every byte of the span, as it was on disk
