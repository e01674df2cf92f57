"""Corruption in real spool and archive files: detected, reported, kept aside, and draining goes on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths, resolve
from codi_queue.producers.api import enqueue
from codi_queue.queue.pq import read_info

from ..conftest import query, run_cli


def _three_records(home: Path) -> tuple[int, int]:
    for name in ("first", "second", "third"):
        enqueue("tool_event", {"tool_name": name, "success": True}, home=str(home))
    info = read_info(os.path.join(str(home), "spool", "inbox"))
    end = int(info["head"][2])
    chunk = Path(home, "spool", "inbox", "q00000").read_bytes()
    last_start = chunk.rfind(b"CQ", 0, end)
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
