"""The spool on its own: durable appends, private files, frames only, self-rescue from damaged metadata."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue, enqueue_many
from codi_queue.queue.segment import SegmentReader
from codi_queue.queue.spool import Spool
from codi_queue.queue import frame
from codi_queue.schemas.envelope import Record

from .conftest import query


def _records(path: str) -> list[Record]:
    with SegmentReader(path) as reader:
        return [msgspec.msgpack.decode(e.payload, type=Record) for e in reader.entries() if e.payload]


def test_batch_is_one_record_and_reads_back_in_order(paths: Paths) -> None:
    assert enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True} for i in range(50)], home=paths.home)
    assert enqueue("tool_event", {"tool_name": "last", "success": False}, home=paths.home)
    records = _records(os.path.join(paths.spool, "inbox"))
    assert [r.n for r in records] == [50, 1]
    ids = [env.id for r in records for env in r.ops]
    assert ids == sorted(ids) and len(set(ids)) == 51  # time-ordered, unique


def test_state_is_private(paths: Paths) -> None:
    enqueue("tool_event", {"tool_name": "x", "success": True}, home=paths.home)
    Consumer(paths).run(once=True)
    for root, dirs, files in os.walk(paths.home):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700, d
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(paths.home).st_mode) == 0o700


def test_spool_holds_nothing_but_checksummed_frames(paths: Paths) -> None:
    for i in range(20):
        enqueue("activity_event", {"event_type": "e", "data": {"i": i}}, home=paths.home)
    inbox = os.path.join(paths.spool, "inbox")
    for name in os.listdir(inbox):
        if name.startswith("q") or name == "info":
            data = Path(inbox, name).read_bytes()
            items = list(frame.scan(data))
            assert items and all(isinstance(i, frame.Frame) for i in items), name
            assert sum(i.end - i.start for i in items) == len(data)


def test_deleted_info_never_truncates_queued_records(paths: Paths) -> None:
    for i in range(5):
        enqueue("tool_event", {"tool_name": f"before{i}", "success": True}, home=paths.home)
    os.remove(os.path.join(paths.spool, "inbox", "info"))
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=paths.home)
    Consumer(paths).run(once=True)
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == ["after", *[f"before{i}" for i in range(5)]]


def test_zeroed_info_is_rescued_too(paths: Paths) -> None:
    for i in range(3):
        enqueue("tool_event", {"tool_name": f"z{i}", "success": True}, home=paths.home)
    info = os.path.join(paths.spool, "inbox", "info")
    Path(info).write_bytes(b"\0" * os.path.getsize(info))
    enqueue("tool_event", {"tool_name": "z3", "success": True}, home=paths.home)
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(4,)]


def test_unwritable_spool_returns_false_and_is_logged(paths: Paths) -> None:
    os.makedirs(paths.spool, mode=0o700)
    Path(paths.spool, "segments").write_bytes(b"not a directory")
    assert enqueue("tool_event", {"tool_name": "x", "success": True}, home=paths.home) is False
    log = Path(paths.error_log).read_text()
    assert '"source":"producer"' in log and "cannot append to spool" in log


def test_an_inbox_that_is_a_file_is_moved_aside_and_enqueue_goes_on(paths: Paths) -> None:
    os.makedirs(paths.spool, mode=0o700)
    Path(paths.spool, "inbox").write_bytes(b"not a directory")
    assert enqueue("tool_event", {"tool_name": "x", "success": True}, home=paths.home) is True
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("x",)]
    assert "cannot be read as a queue directory" in Path(paths.error_log).read_text()


def test_segment_ids_never_repeat_even_if_the_clock_steps_back(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"))
    marker = tmp_path / "spool"
    spool._prepare()
    (marker / "last_segment").write_text(str(10**19))  # a clock far in the future
    assert int(spool._next_id()) == 10**19 + 1
    assert int(spool._next_id()) == 10**19 + 2


def test_the_real_persistqueue_package_still_imports_after_ours(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from codi_queue.queue.durable_queue import durable_queue_class\n"
        "durable_queue_class()\n"
        "import persistqueue\n"
        "from persistqueue import SQLiteAckQueue, Queue\n"
        "assert 'asyncio' in __import__('sys').modules\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_an_os_without_fdatasync_enqueues_and_syncs_with_fsync(home: Path, paths: Paths) -> None:
    """Python on macOS, the platform's own, has no os.fdatasync: every enqueue raised AttributeError
    there and nothing was stored. Without it, the data is synced with fsync before the call returns
    (what SQLite's writers do there by default), and the consumer applies it."""
    import json
    import subprocess
    import sys

    from .conftest import ROOT, cli_env, run_cli

    code = (
        "import json, os, stat, sys\n"
        "del os.fdatasync\n"
        "real, synced = os.fsync, []\n"
        "os.fsync = lambda fd: (synced.append(stat.S_ISREG(os.fstat(fd).st_mode)), real(fd))[1]\n"
        "from codi_queue import enqueue\n"
        "def put(i): return enqueue('tool_event', {'tool_name': 'mac', 'success': True, 'tool_use_id': f'm{i}'})\n"
        "ok = [put(0)]\n"
        "del synced[:]\n"  # the first also creates the inbox and its files
        "ok += [put(1), put(2)]\n"
        "print(json.dumps({'ok': ok, 'synced': synced}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=cli_env(home), cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] == [True, True, True]
    assert out["synced"] == [True, True]  # each later acknowledgement synced its data file, and nothing else
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events WHERE tool_name = 'mac'") == [(3,)]


def test_loading_our_queue_skips_the_package_init(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from codi_queue.queue.durable_queue import durable_queue_class\n"
        "durable_queue_class()\n"
        "heavy = [m for m in ('asyncio', 'sqlite3', 'persistqueue.sqlqueue') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_our_persist_queue_copy_defers_only_what_a_put_never_uses(tmp_path: Path) -> None:
    """persist-queue's Queue is loaded with logging, tempfile and typing left unimported; a record it
    would log still goes out once logging is in use, and the real modules stay untouched for others."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from codi_queue.queue.durable_queue import durable_queue_class, open_queue\n"
        "cls = durable_queue_class()\n"
        "print(sorted(m for m in ('logging', 'tempfile', 'typing') if m in sys.modules))\n"
        f"q = open_queue({str(tmp_path / 'q')!r})\n"
        "import logging, io\n"
        "out = io.StringIO()\n"
        "logging.basicConfig(stream=out, level=logging.DEBUG, format='%(name)s %(levelname)s %(message)s')\n"
        f"q2 = open_queue({str(tmp_path / 'q2')!r})\n"
        "print(out.getvalue().split()[:3])\n"
        "import typing, tempfile\n"
        "print(typing.Optional[int] == typing.Union[int, None], callable(tempfile.mkstemp))\n"
        "import persistqueue\n"
        "print(persistqueue.Queue is not cls.__mro__[1], issubclass(cls, sys.modules['persistqueue.queue'].Queue))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["[]", "['persistqueue.queue', 'DEBUG', 'Initializing']", "True True",
                                       "True False"], res.stdout


def test_our_persist_queue_copy_cannot_fall_back_to_pickle(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from codi_queue.queue.durable_queue import durable_queue_class\n"
        "cls = durable_queue_class()\n"
        "print('pickle' in sys.modules)\n"
        f"q = cls({str(tmp_path / 'q')!r})  # default serializer\n"
        "try:\n"
        "    q.put({'x': 1})\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["False", "CorruptRecord"], res.stdout + res.stderr


def test_scanning_a_huge_chunk_keeps_memory_bounded(tmp_path: Path) -> None:
    def rss_kb() -> int:
        with open("/proc/self/status") as fp:
            return next(int(line.split()[1]) for line in fp if line.startswith("VmRSS:"))

    spool = Spool(str(tmp_path / "spool"))
    payload = os.urandom(1024 * 1024)
    for _ in range(4):
        spool.append([payload] * 25)  # 100 records of 1 MiB: one 100 MiB chunk
    inbox = os.path.join(str(tmp_path / "spool"), "inbox")
    before = rss_kb()
    peak = before
    count = 0
    with SegmentReader(inbox) as reader:
        for entry in reader.entries():
            assert entry.payload is not None and len(entry.payload) == len(payload)
            count += 1
            peak = max(peak, rss_kb())
    assert count == 100
    # Pages already scanned are released as the reader moves on (every 32 MiB).
    assert peak - before < 60 * 1024, f"resident memory grew by {(peak - before) // 1024} MiB"


def _stale_info_after(paths: Paths, before: int, after: int) -> tuple[bytes, str]:
    """An inbox whose info was saved after ``before`` records, then ``after`` more were appended:
    what a power loss leaves when producers sync only their data."""
    for i in range(before):
        enqueue("tool_event", {"tool_name": f"b{i}", "success": True}, home=paths.home)
    info_path = os.path.join(paths.spool, "inbox", "info")
    with open(info_path, "rb") as fp:
        old = fp.read()
    for i in range(after):
        enqueue("tool_event", {"tool_name": f"a{i}", "success": True}, home=paths.home)
    return old, info_path


def test_records_past_a_stale_info_are_found_and_kept(paths: Paths) -> None:
    old, info_path = _stale_info_after(paths, 3, 4)
    with open(info_path, "wb") as fp:
        fp.write(old)  # the rename of the newer info never reached the disk
    with SegmentReader(os.path.join(paths.spool, "inbox"), live=True, trust_info=True) as reader:
        assert sum(1 for e in reader.entries() if e.payload is not None) == 7
    enqueue("tool_event", {"tool_name": "next", "success": True}, home=paths.home)  # a producer recovers first
    Consumer(paths).run(once=True)
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == sorted([*(f"b{i}" for i in range(3)), *(f"a{i}" for i in range(4)), "next"])


def test_recovery_stops_at_a_frame_that_does_not_continue_the_sequence(paths: Paths) -> None:
    old, info_path = _stale_info_after(paths, 2, 0)
    chunk = os.path.join(paths.spool, "inbox", "q00000")
    with open(chunk, "ab") as fp:  # intact, but numbered as if operations were missing before it
        fp.write(frame.encode_frame(msgspec.msgpack.encode(Record(1, 0.0, [])), frame.KIND_RECORD, seq=99, nops=1))
    enqueue("tool_event", {"tool_name": "next", "success": True}, home=paths.home)
    Consumer(paths).run(once=True)
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == ["b0", "b1", "next"]  # the stray frame was an unacknowledged tail, cut off


def test_recovery_follows_records_into_the_next_chunk(paths: Paths) -> None:
    from codi_queue.queue.durable_queue import CHUNK_RECORDS

    enqueue_many("tool_event", [{"tool_name": "x", "success": True}] * 2, home=paths.home)
    info_path = os.path.join(paths.spool, "inbox", "info")
    with open(info_path, "rb") as fp:
        old = fp.read()
    for start in range(0, CHUNK_RECORDS + 10, 250):  # one record per call: past the chunk's end
        for i in range(start, min(start + 250, CHUNK_RECORDS + 10)):
            enqueue("tool_event", {"tool_name": f"r{i}", "success": True}, home=paths.home)
    assert os.path.exists(os.path.join(paths.spool, "inbox", "q00001"))
    with open(info_path, "wb") as fp:
        fp.write(old)
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(CHUNK_RECORDS + 12,)]


def test_persist_queue_itself_reads_what_the_spool_wrote(paths: Paths) -> None:
    """The on-disk format stays persist-queue's: its own Queue reads our inbox, record for record, as far
    as ``info`` names (``info`` is a hint our readers scan past; persist-queue stops at it)."""
    import persistqueue

    from codi_queue.queue.durable_queue import INFO_EVERY

    spool = Spool(paths.spool, paths.archive)
    n = 2 * INFO_EVERY + 8
    records = [msgspec.msgpack.encode(Record(1, float(i), [])) for i in range(n)]
    for rec in records:
        spool.append([rec])
    plain = persistqueue.Queue(spool.inbox, serializer=frame.FrameSerializer(), autosave=True)
    got = [bytes(plain.get(block=False)) for _ in range(plain.qsize())]
    assert len(got) > n - INFO_EVERY and got == records[: len(got)]


def test_one_sync_acknowledges_every_append_it_covers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: the leader syncs once and acknowledges the line every completed append reached;
    a follower whose bytes that sync covered returns without a sync of its own. A line in a later
    chunk is not in the leader's file, so there the leader acknowledges only its own append."""
    from codi_queue.queue.durable_queue import POS_SHIFT, acknowledge, publish_written, read_acked, read_acked_ops

    from codi_queue import fsutil

    synced: list[int] = []
    real = fsutil.sync_data
    monkeypatch.setattr(fsutil, "sync_data", lambda fd: (synced.append(fd), real(fd))[1])
    folder = tmp_path / "inbox"
    folder.mkdir(mode=0o700)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    data = os.open(folder / "q00000", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    acked = os.open(folder / "acked", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(data, b"a" * 100)
        publish_written(acked, (100, 1, 0, 0, 0, -1))  # producer A's append completed; A has not synced yet
        os.write(data, b"b" * 50)
        publish_written(acked, (150, 3, 0, 0, 0, -1))  # then B's
        assert acknowledge(data, acked, 150, 3) is True and len(synced) == 1  # B leads
        assert acknowledge(data, acked, 100, 1) is False and len(synced) == 1  # A was covered
        assert (read_acked(dfd), read_acked_ops(dfd)) == (150, 3)
        os.write(data, b"c" * 10)
        publish_written(acked, (160, 4, 0, 0, 0, -1))
        publish_written(acked, ((1 << POS_SHIFT) | 20, 6, 0, 0, 0, -1))  # a later append already in the next chunk
        assert acknowledge(data, acked, 160, 4) is True and len(synced) == 2
        assert (read_acked(dfd), read_acked_ops(dfd)) == (160, 4)  # only what this file's sync covered
    finally:
        for fd in (acked, data, dfd):
            os.close(fd)


def test_no_producer_waits_on_another_s_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync runs with no lock held: a producer whose sync is slow (a stalled disk, or a holder
    waiting for a core after it) never holds up another's acknowledgement, and each one raises the
    acknowledged line only forward. Under a lock held across it, 16 producers on 2 cores waited on
    whichever held it (storm p99 17-18 ms against 6-7 ms)."""
    import threading

    from codi_queue import fsutil
    from codi_queue.queue.durable_queue import acknowledge, publish_written, read_acked, read_acked_ops

    folder = tmp_path / "inbox"
    folder.mkdir(mode=0o700)
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    data = os.open(folder / "q00000", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    acked_a = os.open(folder / "acked", os.O_RDWR | os.O_CREAT, 0o600)
    acked_b = os.open(folder / "acked", os.O_RDWR)  # another producer's own descriptor: flock sees two owners
    stall, in_sync = threading.Event(), threading.Event()
    real = fsutil.sync_data

    def sync(fd: int) -> None:
        if threading.current_thread().name == "a":
            in_sync.set()
            stall.wait(30)
        real(fd)

    monkeypatch.setattr(fsutil, "sync_data", sync)
    done: dict[str, bool] = {}
    try:
        os.write(data, b"a" * 100)
        publish_written(acked_a, (100, 1, 0, 0, 0, -1))
        a = threading.Thread(target=lambda: done.update(a=acknowledge(data, acked_a, 100, 1)), name="a")
        a.start()
        assert in_sync.wait(30)
        os.write(data, b"b" * 50)
        publish_written(acked_b, (150, 2, 0, 0, 0, -1))
        b = threading.Thread(target=lambda: done.update(b=acknowledge(data, acked_b, 150, 2)), name="b")
        b.start()
        b.join(10)
        assert done.get("b") is True and a.is_alive()  # b synced and returned while a's sync stalls
        assert (read_acked(dfd), read_acked_ops(dfd)) == (150, 2)
        stall.set()
        a.join(30)
        assert done.get("a") is True
        assert (read_acked(dfd), read_acked_ops(dfd)) == (150, 2)  # a's later raise to 100 never moved it back
    finally:
        stall.set()
        for fd in (acked_b, acked_a, data, dfd):
            os.close(fd)


def test_a_producer_appends_only_where_the_inbox_path_still_leads(paths: Paths) -> None:
    """A producer keeps its Queue open between appends only while the inbox path names the very
    directory it holds (same device and inode): after a claim its next record starts a fresh
    inbox instead of landing in the claimed segment, and a link planted where the inbox was,
    even one leading to the directory it holds, is moved aside and never appended through."""
    from codi_queue.queue.spool import read_dir_id

    spool = Spool(paths.spool, paths.archive, lane=0)
    records = [msgspec.msgpack.encode(Record(1, float(i), [])) for i in range(3)]
    spool.append([records[0]])
    claimed = read_dir_id(spool.inbox)
    assert claimed is not None and Spool(paths.spool, paths.archive, lane=0).claim(claimed)
    spool.append([records[1]])
    assert [r.ts for r in _records(os.path.join(spool.segments, claimed))] == [0.0]
    assert [r.ts for r in _records(spool.inbox)] == [1.0] and read_dir_id(spool.inbox) != claimed
    held = os.path.join(paths.spool, "held")
    os.rename(spool.inbox, held)
    os.symlink(held, spool.inbox)  # leads to the directory the producer holds open
    spool.append([records[2]])
    assert [r.ts for r in _records(held)] == [1.0]  # not appended through the link
    assert not os.path.islink(spool.inbox) and [r.ts for r in _records(spool.inbox)] == [2.0]


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_cached_producer_never_appends_to_an_inbox_whose_id_changed(paths: Paths, damage: str) -> None:
    """The same directory, but its id deleted or rewritten: a state no producer leaves an inbox in.
    A producer holding it open checks the id file as well as the directory, so its next append
    moves the inbox aside (read in full by the consumer) and starts a fresh one."""
    from codi_queue.queue.spool import read_dir_id

    spool = Spool(paths.spool, paths.archive, lane=0)
    records = [msgspec.msgpack.encode(Record(1, float(i), [])) for i in range(2)]
    spool.append([records[0]])
    id_path = os.path.join(spool.inbox, "id")
    if damage == "deleted":
        os.remove(id_path)
    else:
        Path(id_path).write_bytes(b"\xff not an id")
    spool.append([records[1]])
    assert read_dir_id(spool.inbox) is not None and [r.ts for r in _records(spool.inbox)] == [1.0]
    (aside,) = os.listdir(spool.segments)
    assert [r.ts for r in _records(os.path.join(spool.segments, aside))] == [0.0]


def test_a_producer_carries_on_from_where_another_left_the_head(paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two producers taking turns do not reopen the queue each time: each follows what the other
    published. Bytes nobody published (an unknown writer) make it reopen and recover instead."""
    from codi_queue.queue import spool as spool_module
    from codi_queue.queue.durable_queue import INFO_EVERY, read_info

    opened: list[str] = []
    real = spool_module.open_queue
    monkeypatch.setattr(spool_module, "open_queue", lambda path, *a: (opened.append(path), real(path, *a))[1])
    a, b = Spool(paths.spool, paths.archive), Spool(paths.spool, paths.archive)
    n = 2 * INFO_EVERY + 8
    records = [msgspec.msgpack.encode(Record(1, float(i), [])) for i in range(n)]
    for i, rec in enumerate(records):
        (a if i % 2 else b).append([rec])
    assert len(opened) == 2  # one open each; every later turn followed the other's appends
    assert [r.ts for r in _records(a.inbox)] == [float(i) for i in range(n)]
    info = read_info(a.inbox)
    assert n - INFO_EVERY < info["size"] <= n and info["ops"] <= n  # info trails by fewer than INFO_EVERY records
    with open(os.path.join(a.inbox, "q00000"), "ab") as fp:
        fp.write(b"not a frame")  # a writer that published nothing
    a.append([records[0]])
    assert len(opened) == 3  # not followed: reopened, and recovery cut the stray bytes off
    assert [r.ts for r in _records(a.inbox)] == [float(i) for i in range(n)] + [0.0]


def test_a_torn_or_damaged_written_line_is_never_taken_for_one(tmp_path: Path) -> None:
    """A leader reads the written line outside the spool lock: bytes that fail its checksum are ignored,
    and the leader acknowledges only its own append. An acknowledged line past everything written is
    damage, never a reason to skip the sync."""
    from codi_queue.queue.durable_queue import acknowledge, publish_written, read_written

    folder = tmp_path / "inbox"
    folder.mkdir(mode=0o700)
    data = os.open(folder / "q00000", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    acked = os.open(folder / "acked", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(data, b"x" * 300)
        publish_written(acked, (300, 9, 3, 3, 0, -1))
        assert read_written(acked) == (300, 9, 3, 3, 0, -1)
        os.pwrite(acked, (200).to_bytes(8, "little"), 16)  # half of a newer write, as a torn read would see it
        assert read_written(acked) is None
        assert acknowledge(data, acked, 100, 1) is True and read_acked_pos(acked) == 100
        publish_written(acked, (300, 9, 3, 3, 0, -1))
        os.pwrite(acked, (1 << 62).to_bytes(8, "little"), 0)  # an acknowledged line past anything written
        from codi_queue import fsutil

        synced: list[int] = []
        real = fsutil.sync_data
        try:
            fsutil.sync_data = lambda fd: (synced.append(fd), real(fd))[1]
            assert acknowledge(data, acked, 300, 9) is True and synced  # not taken as covered
        finally:
            fsutil.sync_data = real
    finally:
        os.close(acked)
        os.close(data)


def read_acked_pos(fd: int) -> int:
    return int.from_bytes(os.pread(fd, 8, 0), "little")


@pytest.mark.parametrize("damage", ["acked", "info"])
def test_a_position_past_every_chunk_file_is_damage_not_a_walk(paths: Paths, damage: str) -> None:
    """An ``acked`` or ``info`` naming chunk 16,777,215 (garbage bytes, a hostile file) must not make the
    consumer walk millions of absent chunks: it is reported, and every intact record still applies."""
    from codi_queue.consumer.status import collect
    from codi_queue.queue.durable_queue import read_info

    for i in range(3):
        enqueue("tool_event", {"tool_name": f"t{i}", "success": True}, home=paths.home)
    inbox = os.path.join(paths.spool, "inbox")
    if damage == "acked":
        with open(os.path.join(inbox, "acked"), "r+b") as fp:
            fp.write(b"\xff" * 16)
    else:
        info = read_info(inbox)
        info["head"] = [2**24 - 1, 0, 0]
        data = frame.encode_frame(frame.encode_meta(info), frame.KIND_META)
        with open(os.path.join(inbox, "info"), "wb") as fp:
            fp.write(data)
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=paths.home)  # moves the inbox aside
    Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == [
        "after", "t0", "t1", "t2"]
    assert collect(paths)["dead_letters"] < 10


_HOSTILE_INFO = {
    "head of one value": {"head": [0]},
    "negative head offset": {"head": [0, 1, -5]},
    "head offset past a position": {"head": [0, 1, 1 << 41]},
    "head count past the chunk size": {"head": [0, 5000, 0]},
    "text in the head": {"head": ["x", 1, 0]},
    "a float in the head": {"head": [0.5, 1, 0]},
    "tail past the head": {"tail": [5, 0, 0]},
    "negative tail": {"tail": [-1, 0, 0]},
    "chunk size 0": {"chunksize": 0},
    "chunk size as text": {"chunksize": "1000"},
    "chunk size true": {"chunksize": True},
    "negative size": {"size": -100},
    "size past a u64": {"size": 1 << 70},
    "negative operation count": {"ops": -7},
    "operation count past a u64": {"ops": 1 << 70},
}


@pytest.mark.parametrize("change", list(_HOSTILE_INFO.values()), ids=list(_HOSTILE_INFO))
def test_an_info_whose_checksum_holds_but_values_do_not_is_damage(home: Path, paths: Paths,
                                                                  change: dict[str, object]) -> None:
    """The checksum says info's bytes are as written, not that its values are what persist-queue and
    our readers assume. A head of one value or a negative offset made every CLI enqueue fail for
    good ("internal error") while the consumer read nothing from the inbox and said nothing,
    acknowledged operations included: such an info is damage, moved aside and scanned."""
    from codi_queue.queue.durable_queue import read_info

    from .conftest import run_cli

    enqueue("tool_event", {"tool_name": "before", "success": True}, home=paths.home)
    inbox = os.path.join(paths.spool, "inbox")
    info = {**read_info(inbox), **change}
    Path(inbox, "info").write_bytes(frame.encode_frame(frame.encode_meta(info), frame.KIND_META))
    res = run_cli(home, "enqueue", "tool_event", '{"tool_name": "cli", "success": true}')
    assert res.returncode == 0, res.stderr
    assert enqueue("tool_event", {"tool_name": "api", "success": True}, home=paths.home) is True
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == ["api", "before", "cli"]
    assert "info unreadable (queue info" in Path(paths.error_log).read_text()


def test_a_queue_closed_after_interpreter_exit_cleared_its_module_stays_quiet(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A producer's cached queue may be collected at exit after its module's globals were set to
    None; closing it then printed "Exception ignored ... AttributeError" to the user's terminal."""
    from codi_queue.queue import durable_queue

    queue = durable_queue.open_queue(str(tmp_path / "q"))
    queue.put(b"x")
    fd = queue.acked_fd()
    monkeypatch.setattr(durable_queue, "os", None)  # what interpreter shutdown does to module globals
    queue.close()
    monkeypatch.undo()
    with pytest.raises(OSError):
        os.fstat(fd)  # and the descriptor was released


def test_a_directory_made_in_a_parent_found_there_syncs_that_parent_s_name_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its maker syncs a new directory's name just after making it, and one killed in between
    leaves a name a power loss can take with everything made below it later: so a child is made
    only once the parent's own name is synced (the crash-state tests hold the whole path). A
    grandparent we may not list (0711, say) cannot be synced by us, and does not stop the child."""
    from codi_queue import fsutil

    synced: list[str] = []
    real = fsutil.fsync_dir

    def recording(path: str) -> None:
        synced.append(path)
        if path == str(tmp_path):
            raise PermissionError(13, "Permission denied", path)
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", recording)
    parent = tmp_path / "home"
    parent.mkdir()
    assert fsutil.ensure_private_dir(str(parent / "spool"))
    assert synced == [str(tmp_path), str(parent)]  # the parent's name (refused here), then the child's
    assert (parent / "spool").is_dir()
    synced.clear()
    assert fsutil.ensure_private_dir(str(parent / "spool" / "inbox"))
    assert synced == [str(parent), str(parent / "spool")]
    assert not fsutil.ensure_private_dir(str(parent / "spool" / "inbox")) and synced == [str(parent), str(parent / "spool")]


@pytest.mark.parametrize("info_rewound", ["at the failure", "by the next opener"])
def test_an_append_that_failed_after_its_rollover_leaves_nothing_another_producer_trips_on(
        paths: Paths, monkeypatch: pytest.MonkeyPatch, info_rewound: str) -> None:
    """A producer whose append started the next chunk and then failed (a full disk) is cut back:
    its first records off the head chunk, the chunk it created emptied (not removed). Another
    producer, whose queue is cached from before, then appends beside that empty chunk, and it
    and a producer opening afresh must leave exactly the acknowledged records, in order.

    The info that append wrote at the new chunk outran the data once it was cut back. A fresh
    opener carried on from it, skipping the cut-off records' sequence numbers, and the consumer
    reported "1 operation lost" and filed a dead letter for damage that never happened."""
    from codi_queue.errors import SpoolError
    from codi_queue.queue.durable_queue import CHUNK_RECORDS, durable_queue_class

    if info_rewound == "by the next opener":  # the disk refuses the rewind at the failure too
        def refuse(*args: object) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(durable_queue_class(), "rewind", refuse)

    a, b = Spool(paths.spool, paths.archive), Spool(paths.spool, paths.archive)
    rec = [msgspec.msgpack.encode(Record(1, float(i), [])) for i in range(CHUNK_RECORDS + 10)]
    a.append(rec[: CHUNK_RECORDS - 2])  # two records short of a full chunk; a's queue stays cached
    real_dump, calls = frame.FrameSerializer.dump, []

    def failing_dump(self: frame.FrameSerializer, value: object, fp: object) -> None:
        if isinstance(value, (bytes, bytearray)):
            calls.append(1)
            if len(calls) == 3:  # the first record of the next chunk is written; this one fails
                raise OSError(28, "No space left on device")
        real_dump(self, value, fp)  # type: ignore[arg-type]

    monkeypatch.setattr(frame.FrameSerializer, "dump", failing_dump)
    with pytest.raises(SpoolError):
        b.append([msgspec.msgpack.encode(Record(1, -1.0, []))] * 4)
    monkeypatch.setattr(frame.FrameSerializer, "dump", real_dump)
    monkeypatch.undo()
    assert os.path.getsize(os.path.join(a.inbox, "q00001")) == 0  # what the cut-back leaves
    from codi_queue.queue.durable_queue import read_info

    assert read_info(a.inbox)["head"][0] == (0 if info_rewound == "at the failure" else 1)
    a.append([rec[CHUNK_RECORDS - 2]])  # the cached producer
    Spool(paths.spool, paths.archive).append(rec[CHUNK_RECORDS - 1 : CHUNK_RECORDS + 2])  # one opening afresh
    b.append([rec[CHUNK_RECORDS + 2]])  # and the one that failed
    written = [r.ts for d in a.queue_dirs() for r in _records(d.path)]
    assert written == [float(i) for i in range(CHUNK_RECORDS + 3)]
    assert len(list(a.queue_dirs())) == 1  # carried on in place, not moved aside
    stats = Consumer(paths).run(once=True)
    assert (stats.lost_operations, stats.damaged_spans, stats.dead_letters) == (0, 0, 0)
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
