"""Lanes: producers spread over several inboxes, each with its own lock; the consumer drains them all."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers import records
from codi_queue.queue import spool as spool_module
from codi_queue.producers.api import enqueue_many
from codi_queue.queue.segment import SegmentReader
from codi_queue.queue.spool import Spool, lane_inbox, lane_lock, read_dir_id, read_dir_lane
from codi_queue.consumer.records import decode_record
from codi_queue.queue.frame import KIND_JSON_RECORD

from .conftest import cli_env, query, run_cli


@contextmanager
def held(path: str) -> Iterator[None]:
    """Hold a lane's lock from another open file description, as another producer would."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def in_lane(paths: Paths, lane: int) -> Iterator[None]:
    """This process's API enqueues go to ``lane``."""
    before = spool_module._shared.pop(paths.spool, None)
    spool_module._shared[paths.spool] = Spool(paths.spool, paths.archive, lane)
    try:
        yield
    finally:
        spool_module._shared.pop(paths.spool).close()
        if before is not None:
            spool_module._shared[paths.spool] = before


def _events(paths: Paths, tag: str, n: int) -> None:
    assert enqueue_many("tool_event", [{"tool_name": "Bash", "success": True, "tool_use_id": f"{tag}-{i}"}
                                       for i in range(n)], home=paths.home)


def _tool_use_ids(path: str) -> list[str]:
    """The tool_use_id of every operation in a queue directory, in the order it holds them."""
    found = []
    with SegmentReader(path) as reader:
        for entry in reader.entries():
            if entry.payload is None:
                continue
            is_json = entry.kind == KIND_JSON_RECORD
            record, _ = decode_record(entry.payload, is_json)
            for env in record.ops:
                found.append((msgspec.json if is_json else msgspec.msgpack).decode(env.body)["tool_use_id"])
    return found


def test_a_producer_takes_the_first_free_lane_and_keeps_it(paths: Paths) -> None:
    spool = Spool(paths.spool, paths.archive)
    os.makedirs(paths.spool, mode=0o700, exist_ok=True)
    with held(lane_lock(paths.spool, 0)):
        spool.append(_record_bytes("first"))
    assert spool.lane == 1 and read_dir_lane(lane_inbox(paths.spool, 1)) == 1
    spool.append(_record_bytes("second"))  # lane 0 is free now, but this process stays where it began
    assert spool.lane == 1
    assert _tool_use_ids(lane_inbox(paths.spool, 1)) == ["first", "second"]
    assert not os.path.exists(lane_inbox(paths.spool, 0))
    # Another process (a fresh object here) finds lane 0 free and takes it: no lane costs a wait.
    other = Spool(paths.spool, paths.archive)
    other.append(_record_bytes("third"))
    assert other.lane == 0 and read_dir_lane(lane_inbox(paths.spool, 0)) == 0  # lane 0 needs no file
    # Lane directories carry ids from the one sequence: never the same twice.
    assert read_dir_id(lane_inbox(paths.spool, 0)) != read_dir_id(lane_inbox(paths.spool, 1))
    # A forked child takes a lane of its own instead of sharing its parent's lock.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        try:
            with held(lane_lock(paths.spool, 0)):
                spool.append(_record_bytes("child"))
            os._exit(0 if spool.lane == 1 and spool._lane_pid == os.getpid() else 3)
        except BaseException:
            os._exit(4)
    assert os.waitpid(pid, 0)[1] == 0
    assert _tool_use_ids(lane_inbox(paths.spool, 1)) == ["first", "second", "child"]


def _record_bytes(tool_use_id: str) -> list[bytes]:
    return list(records.json_records([("tool_event", {"tool_name": "Bash", "success": True,
                                                      "tool_use_id": tool_use_id}, None)], "test"))


def test_producers_spread_over_lanes_keep_their_order_and_lose_nothing(tmp_path: Path, home: Path,
                                                                       paths: Paths) -> None:
    go = tmp_path / "go"
    os.makedirs(paths.spool, mode=0o700, exist_ok=True)
    with held(lane_lock(paths.spool, 0)):  # lane 0 busy when they start: they must spread
        procs = [subprocess.Popen([sys.executable, "-m", "tests.procs", "spool", str(home), f"p{i}", "150", str(go)],
                                  env=cli_env(home), stderr=subprocess.PIPE) for i in range(6)]
        go.touch()
        while not os.path.exists(lane_inbox(paths.spool, 1)):
            assert all(p.poll() is None for p in procs)  # nobody can finish without a lane
            os.sched_yield()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    lanes = Spool(paths.spool).lanes()
    assert len(lanes) >= 2 and 1 in lanes
    seen: dict[str, int] = {}
    for lane in lanes:
        for tid in _tool_use_ids(lane_inbox(paths.spool, lane)):
            producer, i = tid.split("-")
            assert seen.setdefault(producer, lane) == lane, f"{producer} wrote to lanes {seen[producer]} and {lane}"
    Consumer(paths).run(once=True)
    ids = [r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events ORDER BY rowid")]
    assert len(ids) == len(set(ids)) == 6 * 150
    for n in range(6):  # each producer's records were applied in the order it wrote them
        mine = [int(t.split("-")[1]) for t in ids if t.startswith(f"p{n}-")]
        assert mine == list(range(150))


def test_an_older_live_lane_keeps_its_cursor_when_a_newer_directory_commits(paths: Paths) -> None:
    with in_lane(paths, 0):
        _events(paths, "a", 5)  # lane 0's inbox: the oldest directory, and it stays live
    with in_lane(paths, 1):
        _events(paths, "b", 5)
    first = Consumer(paths, rotate_bytes=1 << 40)
    first.run(once=True)
    assert first.stats.operations == 10
    spool = Spool(paths.spool, paths.archive)
    assert spool.claim(read_dir_id(lane_inbox(paths.spool, 1)) or "", 1)
    with in_lane(paths, 1):
        _events(paths, "c", 5)  # a new lane-1 inbox, newer than lane 0's
    with in_lane(paths, 0):
        _events(paths, "d", 5)
    second = Consumer(paths, rotate_bytes=1 << 40)
    second.run(once=True)
    assert second.stats.operations == 10
    # Committing the newer lane-1 inbox must not drop the older lane-0 inbox's cursor:
    # a restarted consumer would read that inbox again from its start.
    third = Consumer(paths, rotate_bytes=1 << 40)
    third.run(once=True)
    assert third.stats.operations == 0
    live = {qd.id for qd in spool.queue_dirs()}
    cursors = {r[0] for r in query(paths, "sessions", "SELECT segment FROM cq_cursor")}
    assert live <= cursors and len(live) == 2  # the archived segment's row goes with the next commit
    assert query(paths, "sessions", "SELECT count(*), count(DISTINCT tool_use_id) FROM tool_events") == [(20, 20)]
    status = run_cli(Path(paths.home), "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["lanes"] == [0, 1] and '"pending": 0' in status.stdout
    assert "2 lanes in use" in run_cli(Path(paths.home), "status").stdout


def test_every_lane_is_claimed_and_archived_with_its_lane(paths: Paths) -> None:
    for lane in (0, 2, 1):
        with in_lane(paths, lane):
            _events(paths, f"l{lane}", 3)
    Consumer(paths, rotate_bytes=1).run(once=True)
    spool = Spool(paths.spool, paths.archive)
    assert spool.lanes() == [] and list(spool.queue_dirs()) == []
    assert sorted(qd.lane for qd in spool.archived_dirs()) == [0, 1, 2]
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(9,)]


def test_retention_holds_each_lane_from_its_own_mark(paths: Paths) -> None:
    for tag in ("x", "y"):
        for lane in (0, 1):
            with in_lane(paths, lane):
                _events(paths, f"{tag}{lane}", 2)
        Consumer(paths, rotate_bytes=1).run(once=True)
    spool = Spool(paths.spool, paths.archive)
    by_lane: dict[int, list[str]] = {}
    for qd in spool.archived_dirs():
        by_lane.setdefault(qd.lane, []).append(qd.id)
    assert [len(v) for v in by_lane.values()] == [2, 2]
    # Lane 0 pushed into its second segment, lane 1 never pushed: only lane 0's first may go.
    removed = spool.prune_archive(1e-9, 0, keep_from={0: by_lane[0][1]})
    assert removed == [by_lane[0][0]]
    assert spool.prune_archive(1e-9, 0, keep_from={0: by_lane[0][1], 1: ""}) == []
    assert spool.prune_archive(1e-9, 0, keep_from={1: by_lane[1][1]}) == [by_lane[1][0]]


def test_a_lane_whose_lock_is_a_planted_link_is_passed_over(paths: Paths, tmp_path: Path) -> None:
    """A link where a lane's lock should be is never opened through; the producer takes the next lane."""
    os.makedirs(paths.spool, mode=0o700, exist_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, lane_lock(paths.spool, 1))
    spool = Spool(paths.spool, paths.archive)
    with held(lane_lock(paths.spool, 0)):
        spool.append(_record_bytes("x"))
    assert spool.lane == 2 and victim.read_text() == "untouched"
    assert _tool_use_ids(lane_inbox(paths.spool, 2)) == ["x"]


def test_hostile_lane_files_and_locks_never_hang_mislead_or_get_written_through(paths: Paths, tmp_path: Path) -> None:
    """The files lanes added, in every state someone could leave them: a ``lane`` file that is garbage,
    huge, a FIFO or a link reads as lane 0 (never blocking, never followed); an ``ids.lock`` that is a
    link or a directory refuses the append (the API reports it) instead of writing through it."""
    from codi_queue.producers.api import enqueue

    victim = tmp_path / "victim"
    victim.write_text("7")
    for n, plant in enumerate(("garbage", "huge", "fifo", "link", "99")):
        d = tmp_path / f"seg{n}"
        d.mkdir(mode=0o700)
        lane = d / "lane"
        if plant == "fifo":
            os.mkfifo(lane, 0o600)
        elif plant == "link":
            os.symlink(victim, lane)
        else:
            lane.write_bytes({"garbage": b"\xff\xfe-1", "huge": b"1" * (1 << 20), "99": b"99"}[plant])
        assert read_dir_lane(str(d)) == 0, plant
    os.makedirs(paths.spool, mode=0o700, exist_ok=True)
    os.symlink(victim, os.path.join(paths.spool, "ids.lock"))
    assert enqueue("tool_event", {"tool_name": "Bash", "success": True}, home=paths.home) is False
    assert victim.read_text() == "7"
    assert "cannot append to spool" in Path(paths.error_log).read_text()
    os.remove(os.path.join(paths.spool, "ids.lock"))
    os.mkdir(os.path.join(paths.spool, "ids.lock"))
    spool_module._shared.pop(paths.spool).close()
    assert enqueue("tool_event", {"tool_name": "Bash", "success": True}, home=paths.home) is False
