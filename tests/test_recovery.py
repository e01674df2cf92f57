"""Recovery: dead letters re-applied once fixed, archive ranges replayed without duplicates, databases rebuilt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue, enqueue_many
from codi_queue.recovery.replay import replay_dead_letters

from .conftest import cli_env, query, run_cli, wait_until


def _poison(paths: Paths) -> None:
    Consumer(paths).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("CREATE TRIGGER poison BEFORE INSERT ON tool_events WHEN new.tool_name = 'poison' "
                 "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")
    conn.close()


def _cure(paths: Paths) -> None:
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DROP TRIGGER poison")
    conn.close()


def test_dead_letter_is_applied_once_after_the_fix(home: Path, paths: Paths) -> None:
    _poison(paths)
    enqueue_many("tool_event", [{"tool_name": n, "success": True} for n in ("a", "poison", "b")], home=str(home))
    Consumer(paths).run(once=True)
    assert collect(paths)["dead_letters"] == 1
    # Replayed before the fix: it fails again and stays, with the attempt counted.
    assert run_cli(home, "replay", "--dead-letter").returncode == 0
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT attempts, reason FROM cq_dead_letters")[0][0] == 2
    _cure(paths)
    res = run_cli(home, "replay", "--dead-letter", "--op", "tool_event")
    assert res.returncode == 0 and "1 dead letters re-sent" in res.stdout
    Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == ["a", "b", "poison"]
    assert collect(paths)["dead_letters"] == 0
    run_cli(home, "replay", "--dead-letter")  # nothing left to send
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]


def test_rejected_line_applies_once_the_alias_table_knows_it(tmp_path: Path, home: Path, paths: Paths,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from codi_queue.schemas import legacy

    src = tmp_path / "command-usage.jsonl"
    src.write_text(json.dumps({"ts": 1700000000, "cmd": "/commit", "success": True}) + "\n")
    assert run_cli(home, "import", str(src)).returncode == 2  # no command under any alias yet
    Consumer(paths).run(once=True)
    assert query(paths, "state", "SELECT op, format FROM cq_dead_letters") == [("command_event", "rejected")]
    fields = tuple(f if f.name != "command" else legacy.LegacyField("command", "command", "cmd")
                   for f in legacy.LEGACY_FIELDS["command_event"])
    monkeypatch.setitem(legacy.LEGACY_FIELDS, "command_event", fields)
    assert replay_dead_letters(paths).sent == 1
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT command, timestamp FROM command_events") == [("/commit", 1700000000)]
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    # The same line imported again later (offsets lost) is the same operation: still one row.
    for f in Path(paths.state, "offsets").iterdir():
        f.unlink()
    from codi_queue.producers.jsonl import import_file

    import_file(paths, str(src), "command_event")
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM command_events") == [(1,)]


def _fill(home: Path, paths: Paths, n: int = 30) -> None:
    consumer = Consumer(paths, rotate_bytes=1)  # every drained inbox is archived
    for i in range(n):
        enqueue("tool_event", {"tool_name": f"t{i}", "success": True, "timestamp": 1700000000 + i}, home=str(home))
        enqueue("task", {"task_id": f"k{i % 5}", "title": f"v{i}"}, home=str(home))
        if i % 7 == 6:
            consumer.run(once=True)
    enqueue("decision", {"decision_id": "d1", "title": "WAL", "decision": "yes"}, home=str(home))  # left pending


def test_replay_from_archive_restores_lost_rows_without_duplicates(home: Path, paths: Paths) -> None:
    _fill(home, paths)
    Consumer(paths, rotate_bytes=1).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(30,)]
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DELETE FROM tool_events WHERE timestamp >= 1700000010")  # lost by someone
    conn.close()
    res = run_cli(home, "replay", "--from-archive", "--op", "tool_event", "--since", "0")
    assert res.returncode == 0
    Consumer(paths).run(once=True)
    rows = query(paths, "sessions", "SELECT tool_name FROM tool_events")
    assert len(rows) == 30 and len(set(rows)) == 30
    assert run_cli(home, "replay", "--from-archive").returncode == 0  # everything, again
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(30,)]
    assert query(paths, "project", "SELECT task_id, title FROM tasks ORDER BY task_id") == [
        (f"k{i}", f"v{25 + i}") for i in range(5)
    ]


def test_replaying_the_archive_again_and_again_sends_each_operation_once(home: Path, paths: Paths) -> None:
    """Re-sent operations are archived again: a replay that re-sent every copy it met doubled the
    journal each time (3 operations, four replays: 48 in the journal; twenty replays of a real
    archive would need a million times its disk)."""
    enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True} for i in range(3)], home=str(home))
    Consumer(paths).run(once=True)
    said = []
    for _ in range(4):
        res = run_cli(home, "replay", "archive")
        assert res.returncode == 0, res.stderr
        said.append(res.stdout)
        Consumer(paths).run(once=True)
    assert all(out.startswith("3 journal operations re-sent") for out in said), said
    assert "; 9 more copies of them (left by earlier replays) not sent again" in said[-1]
    rebuilt = run_cli(home, "rebuild", "--into", str(home.parent / "rebuilt"))
    assert rebuilt.returncode == 0 and "from 15 journal operations" in rebuilt.stdout, rebuilt.stdout  # 3 + 4 x 3
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]


def test_a_replay_reads_a_record_with_invalid_text_as_the_consumer_did(home: Path, paths: Paths) -> None:
    """A JSON record whose op id holds a lone surrogate escape (hostile bytes in the spool): the
    consumer applies it under the text rule, but the journal read it with a decoder of its own
    and the replay skipped it as "damaged"."""
    from codi_queue.producers.records import append_records
    from codi_queue.queue.frame import JsonRecord

    enqueue("tool_event", {"tool_name": "good", "success": True}, home=str(home))
    append_records(paths, [JsonRecord(b'[1,1.0,[["\\udcff-id","tool_event",1,1.0,"x",{"tool_name":"odd",'
                                      b'"success":true}]]]')])
    Consumer(paths, rotate_bytes=1).run(once=True)
    for _ in range(2):
        res = run_cli(home, "replay", "archive")
        assert res.returncode == 0 and "internal error" not in res.stderr, res.stderr
        assert res.stdout.startswith("2 journal operations re-sent"), res.stdout
        Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == ["good", "odd"]


def test_replay_from_archive_honours_the_time_range(home: Path, paths: Paths) -> None:
    enqueue("tool_event", {"tool_name": "early", "success": True}, home=str(home))
    Consumer(paths, rotate_bytes=1).run(once=True)
    cut = time.time()
    time.sleep(0.01)
    enqueue("tool_event", {"tool_name": "late", "success": True}, home=str(home))
    Consumer(paths, rotate_bytes=1).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DELETE FROM tool_events")
    conn.close()
    run_cli(home, "replay", "--from-archive", "--since", f"{cut:.3f}")
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("late",)]


def _contents(paths: Paths) -> dict[str, list[tuple[object, ...]]]:
    return {
        "tool_events": query(paths, "sessions", "SELECT op_id, tool_name, timestamp FROM tool_events ORDER BY op_id"),
        "tasks": query(paths, "project", "SELECT task_id, title, op_id FROM tasks ORDER BY task_id"),
        "decisions": query(paths, "org", "SELECT decision_id, title FROM decisions"),
        "applied": sorted(collect(paths)["applied"].items()),
    }


def test_deleted_database_is_rebuilt_from_the_journal(home: Path, paths: Paths) -> None:
    _fill(home, paths)
    Consumer(paths, rotate_bytes=1).run(once=True)
    before = _contents(paths)
    dry = run_cli(home, "replay", "--rebuild", "--dry-run")
    assert "tool_events" in dry.stdout and "61 operations would be applied" in dry.stdout
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(paths.database("sessions") + suffix):
            os.remove(paths.database("sessions") + suffix)
    res = run_cli(home, "replay", "--rebuild")
    assert res.returncode == 0, res.stderr
    assert _contents(paths) == before
    assert any(Path(paths.db_dir).glob("org.db.before-rebuild-*"))  # replaced files are kept
    Consumer(paths).run(once=True)  # the cursors came back too: nothing is applied twice
    assert _contents(paths) == before


def test_rebuild_into_a_directory_while_the_consumer_runs(tmp_path: Path, home: Path, paths: Paths) -> None:
    _fill(home, paths)
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.2"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: not collect(paths)["pending"], 30, "the queue to drain")
        in_place = run_cli(home, "replay", "--rebuild")
        assert in_place.returncode == 1 and "already running" in in_place.stderr
        out = tmp_path / "rebuilt"
        res = run_cli(home, "replay", "--rebuild", "--tier", "sessions", "--into", str(out))
        assert res.returncode == 0, res.stderr
        assert sorted(os.listdir(out)) == ["sessions.db"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    conn = apsw.Connection(str(out / "sessions.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rebuilt = [tuple(r) for r in conn.execute("SELECT op_id, tool_name, timestamp FROM tool_events ORDER BY op_id")]
    finally:
        conn.close()
    assert rebuilt == _contents(paths)["tool_events"]
