"""The consumer: exactly-once apply, dead letters that do not hold back a batch, order, corruption, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import msgspec
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.metrics import read_metrics
from codi_queue.consumer.status import collect
from codi_queue.errors import TierUnavailable
from codi_queue.paths import Paths
from codi_queue.producers.api import append_records, enqueue, enqueue_many
from codi_queue.producers.validate import pack_records
from codi_queue.schemas.envelope import Envelope, Record, new_op_id
from codi_queue.schemas.migrations import latest_version

from .conftest import cli_env, count_when_ready, query, named_rows, run_cli, wait_until


def _tools(paths: Paths) -> list[str]:
    return [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY id")]


def test_each_tier_gets_its_rows(paths: Paths) -> None:
    enqueue("tool_event", {"tool_name": "Bash", "success": True, "duration_ms": 12}, home=paths.home)
    enqueue("decision", {"decision_id": "d1", "title": "Use WAL", "decision": "yes"}, home=paths.home)
    enqueue("component", {"kind": "skill", "name": "pdf", "description": "reads portable documents"}, home=paths.home)
    enqueue("task", {"task_id": "t1", "title": "ship", "status": "in_progress"}, home=paths.home)
    stats = Consumer(paths).run(once=True)
    assert stats.operations == 4 and stats.dead_letters == 0
    assert _tools(paths) == ["Bash"]
    assert query(paths, "org", "SELECT title FROM decisions") == [("Use WAL",)]
    assert query(paths, "project", "SELECT status FROM tasks") == [("in_progress",)]
    hits = query(paths, "platform", "SELECT name FROM components_fts WHERE components_fts MATCH 'portable'")
    assert hits == [("pdf",)]


def test_running_again_applies_nothing_twice(paths: Paths) -> None:
    enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True} for i in range(100)], home=paths.home)
    Consumer(paths).run(once=True)
    Consumer(paths).run(once=True)
    assert len(_tools(paths)) == 100


@pytest.mark.parametrize("pos", ["'abc'", "-5", "1.5", str(2**63 - 1), str(1 << 40)],
                         ids=["text", "negative", "fractional", "largest integer", "past every chunk"])
def test_a_damaged_cursor_is_said_and_the_directory_read_again_once(home: Path, paths: Paths, pos: str) -> None:
    """A tier's cursor in cq_cursor is read back from the database: text there made ``run`` and
    ``status`` end in an internal error for good, and a position past the data made the consumer
    pass over every operation acknowledged after it, with ``status`` saying nothing pending."""
    for i in range(3):
        enqueue("tool_event", {"tool_name": f"before{i}", "success": True}, home=paths.home)
    Consumer(paths).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute(f"UPDATE cq_cursor SET pos = {pos}")
    conn.close()
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=paths.home)
    for _ in range(2):  # the second run finds the cursor mended: nothing read again, nothing said
        res = run_cli(home, "run", "--once")
        assert res.returncode == 0, res.stderr
        assert res.stderr.count("reading it again from its start") == (1 if _ == 0 else 0), res.stderr
        assert run_cli(home, "status").returncode == 0
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == [
        "after", "before0", "before1", "before2"]
    assert collect(paths)["pending"] == 0


def test_a_consumer_whose_home_is_deleted_stops_so_one_can_lock_the_new_home(home: Path, paths: Paths) -> None:
    """The consumer's lock is an flock on the home directory. A user clearing the data directory
    left it holding a lock on a deleted directory: ``status`` said no consumer ran, and a second
    consumer took the new home's lock beside it, two writers of the same databases."""
    import shutil

    enqueue("tool_event", {"tool_name": "before", "success": True}, home=paths.home)
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.2"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: collect(paths)["consumer"]["running"], 30, "the consumer to start")

        def removed() -> bool:
            # The running consumer's next state file can land in a directory mid-removal ("Directory
            # not empty"), as it can under rm -rf: removed again until it is gone.
            shutil.rmtree(home, ignore_errors=True)
            return not home.exists()

        wait_until(removed, 30, "the home to be removed")
        enqueue("tool_event", {"tool_name": "after", "success": True}, home=paths.home)  # makes a new home
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1 and b"was deleted or replaced while the consumer ran" in err, err
    assert "Traceback" not in err.decode("utf-8", "replace")
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("after",)]


def test_upserts_end_with_the_last_enqueued(paths: Paths) -> None:
    for title in ("one", "two", "three"):
        enqueue("task", {"task_id": "k", "title": title}, home=paths.home)
    Consumer(paths, batch_ops=1).run(once=True)
    assert query(paths, "project", "SELECT title FROM tasks WHERE task_id = 'k'") == [("three",)]


def test_replaying_an_older_upsert_does_not_overwrite_a_newer_one(paths: Paths) -> None:
    enqueue("task", {"task_id": "k", "title": "old"}, home=paths.home)
    Consumer(paths).run(once=True)
    (old_op,) = query(paths, "project", "SELECT op_id FROM tasks")[0]
    enqueue("task", {"task_id": "k", "title": "new"}, home=paths.home)
    Consumer(paths).run(once=True)
    # Re-apply the first operation under its original id, as a replay would.
    body = msgspec.msgpack.encode(msgspec.convert({"task_id": "k", "title": "old"}, type=_task_type()))
    env = Envelope(old_op, "task", 1, time.time(), "test", msgspec.Raw(body))
    append_records(paths, [msgspec.msgpack.encode(Record(1, time.time(), [env]))])
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT title FROM tasks") == [("new",)]


def _task_type() -> type:
    from codi_queue.schemas.ops import Task

    return Task


def test_a_replayed_event_is_not_inserted_twice(paths: Paths) -> None:
    body = msgspec.msgpack.encode(msgspec.convert({"tool_name": "dup", "success": True}, type=_tool_type()))
    env = Envelope(new_op_id(), "tool_event", 1, time.time(), "test", msgspec.Raw(body))
    rec = msgspec.msgpack.encode(Record(1, time.time(), [env]))
    append_records(paths, [rec, rec])
    Consumer(paths).run(once=True)
    append_records(paths, [rec])
    Consumer(paths).run(once=True)
    assert _tools(paths) == ["dup"]
    assert collect(paths)["applied"]["tool_events"] == 1


def _tool_type() -> type:
    from codi_queue.schemas.ops import ToolEvent

    return ToolEvent


def test_a_record_dated_by_no_clock_does_not_hide_the_lag(paths: Paths) -> None:
    """A record's time is written by its producer's clock; one written by hand can carry NaN, a
    time before 1970 or one ahead of now. The first of them read first made ``status`` report
    a lag of 0 however old the operations waiting behind it."""
    body = msgspec.msgpack.encode({"tool_name": "x", "success": True})
    for ts in (float("nan"), -5.0, time.time() + 86400, time.time() - 100):
        env = Envelope(new_op_id(), "tool_event", 1, ts, "test", msgspec.Raw(body))
        append_records(paths, [msgspec.msgpack.encode(Record(1, ts, [env]))])
    report = collect(paths)
    assert report["pending"] == 4
    assert 99 < report["oldest_pending_age_s"] < 1000


def test_poison_statement_is_dead_lettered_and_the_batch_commits(paths: Paths) -> None:
    Consumer(paths).run(once=True)  # create the databases
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON tool_events WHEN new.tool_name = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
    )
    conn.close()
    names = ["a", "b", "poison", "c", "d"]
    enqueue_many("tool_event", [{"tool_name": n, "success": True} for n in names], home=paths.home)
    stats = Consumer(paths).run(once=True)
    assert _tools(paths) == ["a", "b", "c", "d"]
    assert stats.dead_letters == 1
    (row,) = named_rows(paths, "sessions", "SELECT op, reason FROM cq_dead_letters")
    assert row["op"] == "tool_event" and "poisoned row" in row["reason"]
    assert collect(paths)["dead_letters"] == 1


def test_bodies_that_fail_at_apply_time_become_dead_letters(paths: Paths) -> None:
    good = msgspec.msgpack.encode(msgspec.convert({"tool_name": "ok", "success": True}, type=_tool_type()))
    bad = msgspec.msgpack.encode({"op": "tool_event", "tool_name": "missing success"})
    unknown = Envelope(new_op_id(), "from_the_future", 9, time.time(), "test", msgspec.Raw(b"\x80"))
    records = pack_records("tool_event", [good, bad, good])
    records.append(msgspec.msgpack.encode(Record(1, time.time(), [unknown])))
    append_records(paths, records)
    stats = Consumer(paths).run(once=True)
    assert _tools(paths) == ["ok", "ok"]
    assert stats.dead_letters == 2
    reasons = query(paths, "sessions", "SELECT reason FROM cq_dead_letters")
    assert len(reasons) == 1 and "success" in reasons[0][0]
    (unk,) = query(paths, "state", "SELECT op, reason FROM cq_dead_letters")
    assert unk == ("from_the_future", "unknown operation 'from_the_future'")


def test_a_flipped_bit_costs_one_record_and_is_reported(paths: Paths) -> None:
    for name in ("first", "second", "third"):
        enqueue("tool_event", {"tool_name": name * 20, "success": True}, home=paths.home)
    chunk = Path(paths.spool, "inbox", "q00000")
    data = bytearray(chunk.read_bytes())
    needle = data.find(b"second" * 20)
    data[needle + 5] ^= 0x01
    chunk.write_bytes(bytes(data))
    stats = Consumer(paths).run(once=True)
    assert _tools(paths) == ["first" * 20, "third" * 20]
    assert stats.damaged_spans == 1
    (reason,) = query(paths, "state", "SELECT reason FROM cq_dead_letters")[0]
    assert "checksum mismatch" in reason
    report = collect(paths)
    assert report["dead_letters"] == 1 and "checksum mismatch" in report["last_error"]["message"]


def test_full_inbox_is_claimed_then_archived_and_nothing_repeats(paths: Paths) -> None:
    consumer = Consumer(paths, rotate_bytes=1)
    enqueue_many("tool_event", [{"tool_name": f"a{i}", "success": True} for i in range(10)], home=paths.home)
    consumer.run(once=True)
    assert os.listdir(paths.archive) and not os.path.exists(os.path.join(paths.spool, "inbox"))
    enqueue_many("tool_event", [{"tool_name": f"b{i}", "success": True} for i in range(10)], home=paths.home)
    consumer.run(once=True)
    assert sorted(_tools(paths)) == sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)])
    assert len(os.listdir(paths.archive)) == 2


def test_status_reports_pending_and_age(paths: Paths) -> None:
    enqueue_many("tool_event", [{"tool_name": "x", "success": True}] * 7, home=paths.home)
    report = collect(paths)
    assert report["pending"] == 7 and report["oldest_pending_age_s"] is not None
    assert report["consumer"]["running"] is False and report["consumer"]["pid"] is None
    Consumer(paths).run(once=True)
    report = collect(paths)
    assert report["pending"] == 0 and report["oldest_pending_age_s"] is None
    assert report["applied"] == {"tool_events": 7}


def _start_consumer(home: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "codi_queue", "run", "--poll", "0.2", *extra],
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_second_consumer_refuses_naming_the_pid(home: Path, paths: Paths) -> None:
    first = _start_consumer(home)
    try:
        wait_until(lambda: collect(paths)["consumer"]["running"], 30, "first consumer")
        second = run_cli(home, "run", timeout=30)
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
        assert collect(paths)["consumer"]["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_batch_and_exits_zero(home: Path, paths: Paths, sig: signal.Signals) -> None:
    proc = _start_consumer(home)
    try:
        enqueue_many("tool_event", [{"tool_name": "live", "success": True}] * 30, home=str(home))
        wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 30, 30, "drain")
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not collect(paths)["consumer"]["running"]


def test_consumer_wakes_on_new_data_without_waiting_for_the_poll(home: Path, paths: Paths) -> None:
    proc = _start_consumer(home, "--poll", "30")  # the poll alone would take 30 s
    try:
        # The consumer publishes its metrics at the end of its first pass: after
        # that, only the watcher (not the start-up drain) can pick the write up.
        wait_until(lambda: (read_metrics(paths.metrics) or {}).get("pid") == proc.pid, 30, "first pass")
        enqueue("tool_event", {"tool_name": "woken", "success": True}, home=str(home))
        wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 1, 20, "the one row")
        assert _tools(paths) == ["woken"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_a_move_out_of_the_spool_never_holds_back_the_next_wake(tmp_path: Path) -> None:
    """watchdog held every event behind the first half of a move for 0.5 s, waiting for its
    second half: the consumer slept through acknowledged operations (lag spikes of 0.3-0.6 s at
    1,000 ops/s in bench/lag.py). With the hold it takes 0.49 s every time; the bound is half."""
    import statistics

    from codi_queue.consumer.wake import Waker

    watched, elsewhere = tmp_path / "spool", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    took = []
    with Waker(str(watched), poll_interval=30) as waker:
        for i in range(5):
            (watched / f"x{i}").touch()
            assert waker.wait()
            os.rename(watched / f"x{i}", elsewhere / f"x{i}")  # the move's second half never comes
            threading.Event().wait(0.02)  # its first half is queued
            waker.event.clear()
            start = time.monotonic()
            (watched / "acked").write_bytes(str(i).encode())
            assert waker.wait(), "woken only by the 30 s poll"
            took.append(time.monotonic() - start)
    assert statistics.median(took) < 0.25, took


def test_reading_what_is_watched_never_wakes_the_consumer(tmp_path: Path) -> None:
    """On Linux inotify reports every open and close of a watched file, the consumer's own reads
    included: each pass over the spool (or a tailed source) woke the next, and an idle consumer
    with a live inbox spun at 60% of a core for ever. Only changes wake it now."""
    from codi_queue.consumer.wake import Waker

    spool, source = tmp_path / "spool", tmp_path / "source"
    for d in (spool, source):
        d.mkdir()
        (d / "data").write_bytes(b"x" * 100)
    with Waker(str(spool), poll_interval=1.0, extra=[(str(source), False)]) as waker:
        waker.event.clear()
        for _ in range(50):
            for d in (spool, source):
                with open(d / "data", "rb") as f:
                    f.read()
                os.listdir(d)
        assert not waker.wait(), "woken by reads alone"
        for d in (spool, source):
            with open(d / "data", "ab") as f:
                f.write(b"y")
            assert waker.wait(), f"not woken by a write in {d.name}"


def test_only_the_way_to_a_missing_source_wakes_the_consumer_in_the_directory_watched_for_it(tmp_path: Path) -> None:
    """A source directory that does not exist yet is watched through its nearest existing parent.
    Every change there woke the consumer for a pass (a busy ~/.claude: every prompt appends to a
    file in it); only the entry that leads to the missing source should."""
    from codi_queue.consumer.wake import Waker

    spool, parent = tmp_path / "spool", tmp_path / "claude"
    spool.mkdir()
    parent.mkdir()
    (parent / "history.jsonl").write_text("")
    missing = parent / "later" / "logs"
    with Waker(str(spool), poll_interval=30, extra=[(str(missing), False)]) as waker:
        waker.event.clear()
        for i in range(20):  # what else happens in that directory
            with open(parent / "history.jsonl", "a") as f:
                f.write(f"{i}\n")
            (parent / f"other-{i}").mkdir()
            os.rename(parent / f"other-{i}", parent / f"renamed-{i}")
        assert not waker.event.wait(1.0), "woken by a change beside the missing source"
        (parent / "later").mkdir()  # on the way to it
        assert waker.event.wait(30), "not woken by the way to the missing source appearing"
        assert waker.watch_sources()  # now watched through the new directory
        waker.event.clear()
        missing.mkdir()
        assert waker.event.wait(30), "not woken by the missing source appearing"


def test_a_directory_the_kernel_will_not_watch_is_polled_and_retried(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """inotify has per-user limits (128 instances by default; editors and containers use them).
    The consumer exited 1 on "inotify instance limit reached" and its service manager restarted
    it into the same error for ever: nothing was applied. Now each directory the kernel will not
    watch is named, polled often, and watched again once the kernel allows it."""
    import errno

    from watchdog.observers.api import BaseObserver

    from codi_queue.consumer import wake

    real_schedule = BaseObserver.schedule
    refused: set[str] = set()

    def schedule(self: BaseObserver, handler: object, path: str, **kw: object) -> object:
        if path in refused:
            raise OSError(errno.EMFILE, "inotify instance limit reached")
        return real_schedule(self, handler, path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(BaseObserver, "schedule", schedule)
    monkeypatch.setattr(wake, "RETRY_WATCH_S", 0.2)
    spool, source = tmp_path / "spool", tmp_path / "source"
    spool.mkdir()
    source.mkdir()
    refused.update({str(spool), str(source)})
    with wake.Waker(str(spool), poll_interval=30, extra=[(str(source), False)]) as waker:
        assert waker.unwatched == [f"{spool}: inotify instance limit reached", f"{source}: inotify instance limit reached"]
        start = time.monotonic()
        waker.wait()
        assert time.monotonic() - start < wake.UNWATCHED_POLL_S + 1.0, "waited for the 30 s poll"
        wait_until(lambda: (waker.wait(), waker._retry_s)[1] >= 4 * wake.RETRY_WATCH_S, 10, "tries spaced out")
        refused.clear()  # the kernel has room again
        wait_until(lambda: (waker.wait(), waker.unwatched)[1] == [], 10, "both watched again")
        assert waker._retry_s == wake.RETRY_WATCH_S
        waker.event.clear()
        (spool / "acked").write_bytes(b"1")
        assert waker.wait(), "a watched spool wakes it again"


def test_an_observer_that_cannot_start_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Older watchdog versions reach the kernel only when the observer starts, and a process at its
    thread limit cannot start one: either way the directories are polled, never fatal."""
    from watchdog.observers.api import BaseObserver

    from codi_queue.consumer import wake

    def start(self: BaseObserver) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(BaseObserver, "start", start)
    with wake.Waker(str(tmp_path), poll_interval=30) as waker:
        assert waker.unwatched == [f"{tmp_path}: can't start new thread"]
        begin = time.monotonic()
        waker.wait()
        assert time.monotonic() - begin < wake.UNWATCHED_POLL_S + 1.0


_HOLD_INOTIFY = """
import ctypes, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while n < hard - 16 and libc.inotify_init() >= 0:
    n += 1
print("fd limit" if n >= hard - 16 else "held", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify's per-user instance limit is Linux's")
def test_a_consumer_started_with_no_inotify_instance_left_still_applies(home: Path, paths: Paths) -> None:
    """The real limit, not a stand-in: helpers hold every inotify instance this user may have,
    then a consumer starts, stays up, and applies what is enqueued by polling."""
    helpers: list[subprocess.Popen[str]] = []
    try:
        while len(helpers) < 64:  # each helper holds what its file-descriptor limit allows
            helper = subprocess.Popen([sys.executable, "-c", _HOLD_INOTIFY], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            helpers.append(helper)
            assert helper.stdout is not None
            if helper.stdout.readline().strip() == "held":
                break
        proc = _start_consumer(home, "--poll", "30")
        try:
            enqueue("tool_event", {"tool_name": "polled", "success": True}, home=str(home))
            wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 1, 20,
                       "the row, applied without a watcher")
            assert proc.poll() is None, "the consumer exited"
            wait_until(lambda: json.loads(run_cli(home, "status", "--json").stdout)["unwatched"], 20, "status says so")
            report = json.loads(run_cli(home, "status", "--json").stdout)
            assert report["unwatched"] == [f"{paths.spool}: inotify instance limit reached"], report["unwatched"]
            assert f"not watched      {paths.spool}: inotify instance limit reached (polled every 0.5 s)" in \
                run_cli(home, "status").stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait()
    assert proc.returncode == 0, err
    assert "inotify instance limit reached" in err and "polled every" in err, err
    assert "inotify instance limit reached" in json.loads(run_cli(home, "status", "--json").stdout)["last_error"]["message"]


@pytest.mark.parametrize("figures", [
    '{"pid": PID, "unwatched": 5}',
    '{"pid": PID, "unwatched": {"a": 1}, "outside_vocabulary": [1]}',
    '{"pid": PID, "unwatched": [1, {"x": 2}, "\\ud800"]}',
    '{"pid": PID, "unavailable_tiers": {"sessions": "\\udcff"}, "batches": 1e400}',
    '{"pid": PID, "batches": 100000000000000000000000000000, "throughput_1m_ops_s": "fast"}',
    '[PID]',
])
def test_status_reads_any_metrics_file_as_figures_or_none(home: Path, paths: Paths, figures: str) -> None:
    """``state/metrics.json`` naming the live consumer but holding anything else (a damaged or
    hand-written file): status, its JSON and its Prometheus form answer, exit 0, no internal error."""
    proc = _start_consumer(home, "--poll", "30")
    try:
        wait_until(lambda: (read_metrics(paths.metrics) or {}).get("pid") == proc.pid, 30, "first figures")
        Path(paths.metrics).write_text(figures.replace("PID", str(proc.pid)))
        for args in ((), ("--json",), ("--prometheus", "-")):
            res = run_cli(home, "status", *args)
            assert res.returncode == 0 and "internal error" not in res.stderr, (args, res.stderr)
        assert json.loads(run_cli(home, "status", "--json").stdout)["unwatched"] == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_figures_naming_an_undecodable_path_are_still_published(tmp_path: Path) -> None:
    """A directory name with bytes that are not UTF-8 reaches the figures as surrogates; they are
    published readable (U+FFFD), not as JSON no reader accepts."""
    from codi_queue.consumer.metrics import Metrics

    metrics = Metrics(str(tmp_path / "metrics.json"))
    metrics.unwatched = [os.fsdecode(b"/home/\xff: inotify watch limit reached")]
    assert metrics.flush(force=True) is None
    assert (read_metrics(metrics.path) or {})["unwatched"] == ["/home/\ufffd: inotify watch limit reached"]


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads CPU time from /proc (Linux, where inotify "
                    "reports reads; macOS's FSEvents never did)")
def test_an_idle_consumer_with_a_live_inbox_uses_no_cpu(home: Path, paths: Paths) -> None:
    """The same defect seen from outside: a real consumer, idle with a live inbox, used 1.9 s of
    CPU in 3 s; now it sleeps until something changes or the poll comes."""
    enqueue("tool_event", {"tool_name": "one", "success": True}, home=str(home))
    proc = _start_consumer(home, "--poll", "30")
    try:
        wait_until(lambda: (read_metrics(paths.metrics) or {}).get("pid") == proc.pid, 30, "first pass")
        wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 1, 30, "drain")
        before = _cpu_ticks(proc.pid)
        threading.Event().wait(3.0)
        used = (_cpu_ticks(proc.pid) - before) / os.sysconf("SC_CLK_TCK")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert used < 0.3, f"an idle consumer used {used:.2f} s of CPU in 3 s"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="lists the consumer's threads from /proc")
@pytest.mark.parametrize("nice", [None, "0", "4", "40"])
def test_the_consumer_runs_below_producers_with_every_thread(home: Path, paths: Paths, nice: str | None) -> None:
    """A producer never waits on the consumer, so on a busy machine the consumer's CPU only delays
    producers: it lowers its priority (by 10 unless told; 0 keeps it; at most 19) before it starts a
    thread, so the watchdog threads that handle every spool event run lowered too."""
    from codi_queue.cli.consumer import NICE

    enqueue("tool_event", {"tool_name": "one", "success": True}, home=str(home))
    proc = _start_consumer(home, *(("--nice", nice) if nice is not None else ()))
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        wait_until(lambda: count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") == 1, 30, "drain")
        wait_until(lambda: len(os.listdir(f"/proc/{proc.pid}/task")) > 1, 30, "the watcher's threads")
        niceness = {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir(f"/proc/{proc.pid}/task")}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    by = NICE if nice is None else min(int(nice), 19)
    assert set(niceness.values()) == {min(own + by, 19)}, niceness
    assert "could not lower" not in err


def test_cli_quick_start_example(home: Path, paths: Paths) -> None:

    body = (
        '{"session_id":"s1","outcome":"success","quality":4,"complexity":0.5,"intent":"fix bug","model":"sonnet",'
        '"messages_count":12,"duration_minutes":30,"cost_usd":0.42,"success":true,"summary":"ok"}'
    )
    assert run_cli(home, "enqueue", "session_outcome", body).returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    db = json.loads(run_cli(home, "paths", "--json").stdout)["databases"]["sessions"]
    conn = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = list(conn.execute("SELECT session_id, outcome, quality, success, summary FROM session_outcome_events"))
    finally:
        conn.close()
    assert [tuple(r) for r in rows] == [("s1", "success", 4.0, 1, "ok")]
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert {"pending", "oldest_pending_age_s", "dead_letters", "consumer", "applied", "last_error"} <= status.keys()
    assert status["applied"] == {"session_outcome_events": 1}


def test_cli_invalid_input_enqueues_nothing(home: Path, paths: Paths) -> None:
    lines = '{"tool_name":"a","success":true}\n{"tool_name":"b"}\n\n[1]\n{"tool_name":"c","success":true}\n'
    res = run_cli(home, "enqueue", "tool_event", "-", stdin=lines)
    assert res.returncode == 2
    errors = [l for l in res.stderr.splitlines() if l.startswith("codi-queue: line")]
    assert errors[0].startswith("codi-queue: line 2: field success:")
    assert errors[1].startswith("codi-queue: line 4:")
    assert collect(paths)["pending"] == 0
    res = run_cli(home, "enqueue", "tool_event", "-", "--skip-invalid", stdin=lines)
    assert res.returncode == 3  # partial: some refused, the rest enqueued (not "nothing happened")
    assert "2 of 4 records invalid; the other 2 were enqueued" in res.stderr
    assert collect(paths)["pending"] == 2


def test_cli_unknown_op_and_oversized_record(home: Path, paths: Paths) -> None:
    res = run_cli(home, "enqueue", "nope", "{}")
    assert res.returncode == 2 and "unknown operation 'nope'" in res.stderr
    # Under the 1 Mi-character content limit, but over the 1 MiB encoded-operation limit.
    big = json.dumps({"session_id": "s", "role": "user", "content": "\u00e9" * 600_000})
    ok = json.dumps({"session_id": "s", "role": "user", "content": "fine"})
    res = run_cli(home, "enqueue", "message", "-", stdin=f"{ok}\n{big}\n")
    assert res.returncode == 2
    assert "line 2: over" not in res.stderr and "codi-queue: line 2:" in res.stderr
    assert "1048576-byte limit" in res.stderr
    assert collect(paths)["pending"] == 0


def test_cli_infrastructure_failure_exits_one_and_keeps_the_queue(home: Path, paths: Paths) -> None:
    enqueue("tool_event", {"tool_name": "kept", "success": True}, home=str(home))
    # A file-size limit makes the next append fail mid-write (EFBIG), like a full disk.
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))\n"
        "from codi_queue.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    body = json.dumps({"tool_name": "too-big", "success": True, "error_message": "e" * 4000})
    res = subprocess.run(
        [sys.executable, "-c", code, "enqueue", "tool_event", body],
        env=cli_env(home), capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 1, res.stderr
    assert "cannot append to spool" in res.stderr
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    assert _tools(paths) == ["kept", "after"]
    assert collect(paths)["producer_errors"] == 1


def test_version(home: Path) -> None:
    res = run_cli(home, "--version")
    assert res.returncode == 0 and res.stdout.startswith("codi-queue ")


def test_a_huge_operation_name_in_the_spool_is_cut_wherever_it_is_shown(home: Path, paths: Paths) -> None:
    """A record someone else wrote with a 1 MB operation name: a dead letter (the name kept in
    the store as it came), but the log, the error log and the listing show 80 characters."""
    envelope = Envelope(new_op_id(), "x" * 1_000_000, 1, time.time(), "t", msgspec.Raw(msgspec.msgpack.encode({})))
    append_records(paths, [msgspec.msgpack.encode(Record(1, time.time(), [envelope]))])
    Consumer(paths).run(once=True)
    assert collect(paths)["dead_letters"] == 1
    assert max(len(line) for line in (home / "logs" / "errors.jsonl").read_text().splitlines()) < 2_000
    listing = run_cli(home, "dead-letters")
    assert listing.returncode == 0 and "x" * 79 + "…" in listing.stdout and len(listing.stdout) < 2_000
    assert query(paths, "state", "SELECT length(op) FROM cq_dead_letters") == [(1_000_000,)]


def test_status_counts_what_a_tier_it_cannot_write_still_owes(home: Path, paths: Paths) -> None:
    """A tier the consumer cannot write holds its operations in the spool while the others go
    on; status said "pending 0" then, as it counted only past the furthest tier (session 13)."""
    enqueue("tool_event", {"tool_name": "before", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("PRAGMA user_version = 99")  # newer than this code: sessions is set aside
    conn.close()
    enqueue("tool_event", {"tool_name": "waits", "success": True}, home=str(home))
    enqueue("task", {"task_id": "t1", "title": "goes on"}, home=str(home))
    enqueue_many("tool_event", [{"tool_name": "waits too", "success": True}] * 3, home=str(home))
    with pytest.raises(TierUnavailable, match="sessions"):
        Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT title FROM tasks") == [("goes on",)]
    assert collect(paths)["pending"] == 4
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute(f"PRAGMA user_version = {latest_version('sessions')}")
    conn.close()
    Consumer(paths).run(once=True)
    assert collect(paths)["pending"] == 0
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == [
        "before", "waits", "waits too", "waits too", "waits too"]
