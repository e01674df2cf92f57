"""``sync push`` against a real PostgreSQL: every applied operation once, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue, enqueue_many
from codi_queue.queue.spool import Spool
from tests.conftest import cli_env, query, run_cli

from .conftest import configure, team_rows


def _drain(paths: Paths) -> None:
    Consumer(paths).run(once=True)


def _mixed(home: Path, tag: str, n: int) -> None:
    h = str(home)
    enqueue_many("tool_event", [{"tool_name": "Bash", "success": i % 3 > 0, "tool_use_id": f"{tag}-{i}",
                                 "context": {"i": i}} for i in range(n)], home=h)
    enqueue_many("decision", [{"decision_id": f"{tag}-d{i % 7}", "title": f"t{i}", "decision": "d"}
                              for i in range(n // 10)], home=h)
    enqueue("task", {"task_id": f"{tag}-task", "title": "ship it", "status": "pending"}, home=h)


@pytest.mark.parametrize("damage", [
    {"last_push": "yesterday", "last_error_at": 1e999, "last_error": {"a": 1}},
    {"tiers": {"sessions": {"operations": "many", "segment": 7, "pos": -1, "lanes": {"1": "x"}}}},
    {"tiers": [1, 2]},
], ids=["times and error", "a tier's entry", "tiers a list"])
def test_a_damaged_progress_file_costs_no_push_and_no_status(home: Path, team: str, damage: dict[str, object]) -> None:
    """The push's progress (state/sync-push.json) is read back: a last push time that is text
    made ``status`` end in an internal error, and an operation count that is text failed every
    push after its COPY. Values of the wrong shape are dropped; a lost mark is pushed again from
    its start, which the team database takes once."""
    paths = configure(home, team, "alice")
    _mixed(home, "a", 50)
    _drain(paths)
    assert run_cli(home, "sync", "push").returncode == 0
    progress = json.loads(Path(paths.sync_push_file).read_text())
    progress.update(damage)
    Path(paths.sync_push_file).write_text(json.dumps(progress))
    res = run_cli(home, "status")
    assert res.returncode == 0 and "team sync" in res.stdout, res.stderr
    _mixed(home, "b", 50)
    _drain(paths)
    for _ in range(2):
        res = run_cli(home, "sync", "push")
        assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("pushed 0 operations"), res.stdout
    rows = team_rows(team, "SELECT count(*), count(DISTINCT op_id) FROM sessions.tool_events")
    assert rows == [(100, 100)]
    assert run_cli(home, "status").returncode == 0


def test_push_sends_each_applied_operation_once(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    _mixed(home, "a", 500)
    _drain(paths)
    first = run_cli(home, "sync", "push", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["tiers"]["sessions"]["operations"] == 500
    assert report["tiers"]["org"]["operations"] == 50
    assert report["tiers"]["project"]["operations"] == 1
    again = run_cli(home, "sync", "push")
    assert again.returncode == 0 and again.stdout.startswith("pushed 0 operations"), again.stdout + again.stderr

    rows = team_rows(team, "SELECT count(*), count(DISTINCT op_id), min(machine), max(machine) FROM sessions.tool_events")
    assert rows == [(500, 500, "alice", "alice")]
    local_ids = {r[0] for r in query(paths, "sessions", "SELECT op_id FROM tool_events")}
    assert {r[0] for r in team_rows(team, "SELECT op_id FROM sessions.tool_events")} == local_ids
    # Upserts: one row per key, the newest operation's values, as locally.
    local = sorted(query(paths, "org", "SELECT decision_id, title, op_id FROM decisions"))
    assert sorted(team_rows(team, "SELECT decision_id, title, op_id FROM org.decisions")) == local
    assert len(local) == 7
    # Types come from the Structs: booleans are booleans, JSON is its text.
    assert team_rows(team, "SELECT count(*) FROM sessions.tool_events WHERE NOT success") == [(167,)]
    assert team_rows(team, "SELECT context FROM sessions.tool_events WHERE tool_use_id = 'a-5'") == [('{"i":5}',)]
    cursors = team_rows(team, "SELECT tier, operations FROM codi_queue.push_cursors WHERE machine = 'alice' ORDER BY tier")
    assert dict(cursors) == {"org": 50, "platform": 0, "project": 1, "sessions": 500}


def test_only_applied_operations_leave_and_the_rest_follow(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    enqueue_many("tool_event", [{"tool_name": "Read", "success": True}] * 30, home=str(home))
    _drain(paths)
    enqueue_many("tool_event", [{"tool_name": "Edit", "success": True}] * 20, home=str(home))  # queued, not applied
    assert run_cli(home, "sync", "push").returncode == 0
    assert team_rows(team, "SELECT tool_name, count(*) FROM sessions.tool_events GROUP BY 1") == [("Read", 30)]
    status = json.loads(run_cli(home, "sync", "status", "--json").stdout)
    assert status["tiers"]["sessions"]["backlog"] == 0  # nothing applied is left behind
    _drain(paths)
    status = json.loads(run_cli(home, "sync", "status", "--json").stdout)
    assert status["tiers"]["sessions"]["backlog"] == 20
    assert run_cli(home, "sync", "push").returncode == 0
    assert sorted(team_rows(team, "SELECT tool_name, count(*) FROM sessions.tool_events GROUP BY 1")) == [
        ("Edit", 20), ("Read", 30)]


def test_a_dead_letter_is_not_pushed_until_its_replay_applies(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    src = home.parent / "git-activity.jsonl"
    src.write_text(json.dumps({"type": "commit", "repo": "r", "ts": 1_700_000_000}) + "\n" + "{not json\n")
    res = run_cli(home, "import", str(src), "--op", "git_event")
    assert res.returncode in (0, 3), res.stderr
    _drain(paths)
    assert run_cli(home, "sync", "push").returncode == 0
    assert team_rows(team, "SELECT count(*) FROM sessions.git_events") == [(1,)]
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters")[0][0] == 1  # the bad line stays local


def test_private_text_stays_on_the_machine_unless_shared(home: Path, tmp_path: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    enqueue("message", {"session_id": "s1", "role": "user", "content": "my secret prompt"}, home=str(home))
    enqueue("routing_metric", {"query_id": "q", "query_text": "what I asked", "dq_score": 0.5}, home=str(home))
    _drain(paths)
    assert run_cli(home, "sync", "push").returncode == 0
    assert team_rows(team, "SELECT session_id, role, content FROM sessions.messages") == [("s1", "user", None)]
    assert team_rows(team, "SELECT query_id, query_text FROM sessions.routing_metrics_events") == [("q", None)]
    assert query(paths, "sessions", "SELECT content FROM messages") == [("my secret prompt",)]

    other = tmp_path / "bob"
    bob = configure(other, team, "bob", share_private=True)
    enqueue("message", {"session_id": "s2", "role": "user", "content": "shared on purpose"}, home=str(other))
    _drain(bob)
    assert run_cli(other, "sync", "push").returncode == 0
    assert team_rows(team, "SELECT content FROM sessions.messages WHERE session_id = 's2'") == [("shared on purpose",)]


def test_text_postgresql_cannot_hold_is_replaced_not_refused(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    enqueue("tool_event", {"tool_name": "Ba\x00sh", "success": True, "error_message": "a\x00b"}, home=str(home))
    _drain(paths)
    res = run_cli(home, "sync", "push")
    assert res.returncode == 0, res.stderr
    assert team_rows(team, "SELECT tool_name, error_message FROM sessions.tool_events") == [("Ba\ufffdsh", "a\ufffdb")]


def test_two_homes_push_concurrently_into_one_database(tmp_path: Path, team: str) -> None:
    homes = {name: tmp_path / name for name in ("alice", "bob")}
    for name, h in homes.items():
        paths = configure(h, team, name)  # an empty team database: both pushes create the schema at once
        _mixed(h, name, 3000)
        _drain(paths)
    procs = [subprocess.Popen([sys.executable, "-m", "codi_queue", "sync", "push"], env=cli_env(h),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for h in homes.values()]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sorted(team_rows(team, "SELECT machine, count(*), count(DISTINCT op_id) FROM sessions.tool_events "
                                  "GROUP BY 1")) == [("alice", 3000, 3000), ("bob", 3000, 3000)]
    assert sorted(team_rows(team, "SELECT machine, count(*) FROM org.decisions GROUP BY 1")) == [
        ("alice", 7), ("bob", 7)]


def test_two_pushers_of_one_machine_take_turns(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    _mixed(home, "a", 4000)
    _drain(paths)
    procs = [subprocess.Popen([sys.executable, "-m", "codi_queue", "sync", "push", "--json"], env=cli_env(home),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    sent = 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        sent += json.loads(out)["tiers"]["sessions"]["operations"]
    assert sent == 4000  # each operation sent by exactly one of them
    assert team_rows(team, "SELECT count(*), count(DISTINCT op_id) FROM sessions.tool_events") == [(4000, 4000)]


def test_retention_keeps_what_is_not_pushed(home: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    enqueue_many("tool_event", [{"tool_name": "Bash", "success": True}] * 10, home=str(home))
    consumer = Consumer(paths, rotate_bytes=1)  # every pass claims and archives the inbox
    consumer.run(once=True)
    spool = Spool(paths.spool, paths.archive)
    archived = [qd.id for qd in spool.archived_dirs()]
    assert archived
    from codi_queue.consumer.pushed import retention_hold

    hold = retention_hold(paths, ("sessions",))
    assert spool.prune_archive(1e-9, 0, keep_from=hold) == []  # never pushed: all kept
    assert run_cli(home, "sync", "push").returncode == 0
    enqueue_many("tool_event", [{"tool_name": "Bash", "success": True}] * 5, home=str(home))
    Consumer(paths, rotate_bytes=1).run(once=True)  # a newer segment, so the pushed one is wholly behind
    assert run_cli(home, "sync", "push").returncode == 0
    hold = retention_hold(paths, ("platform", "org", "sessions", "project"))
    removed = spool.prune_archive(1e-9, 0, keep_from=hold)
    assert removed and all(seg < hold[0] for seg in removed)
    assert team_rows(team, "SELECT count(*) FROM sessions.tool_events") == [(15,)]


def test_hostile_journal_and_state_files_never_stall_a_push(home: Path, tmp_path: Path, team: str) -> None:
    paths = configure(home, team, "alice")
    enqueue_many("tool_event", [{"tool_name": "Bash", "success": True}] * 5, home=str(home))
    Consumer(paths, rotate_bytes=1).run(once=True)  # archived
    # A link where an archived segment should be (it sorts first): never read, reported, passed over.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, os.path.join(paths.archive, "0" * 20))
    # Progress files a crash or another user could leave behind.
    Path(paths.sync_push_file).write_text(json.dumps({"tiers": {"sessions": {"segment": [1], "pos": "x"}}}))
    Path(paths.sync_pull_file).write_text("{not json")
    res = run_cli(home, "sync", "push")
    assert res.returncode == 0, res.stderr
    assert team_rows(team, "SELECT count(*) FROM sessions.tool_events") == [(5,)]
    errors = Path(paths.error_log).read_text()
    assert "archived segment not pushed, it cannot be read" in errors and "0" * 20 in errors
    for args in (("status", "--json"), ("sync", "status", "--json"), ("sync", "pull")):
        out = run_cli(home, *args)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr)
    # Retention passes the link over too: never followed, never removed through.
    from codi_queue.queue.spool import Spool as _Spool

    _Spool(paths.spool, paths.archive).prune_archive(1e-9, 0)
    assert os.path.islink(os.path.join(paths.archive, "0" * 20)) and elsewhere.is_dir()


def test_each_lane_is_pushed_from_its_own_place(home: Path, team: str) -> None:
    """A lane's live inbox can be older than another lane's newest segment: one place in one
    ordered journal would pass over what it receives after that segment was pushed."""
    from tests.test_lanes import in_lane

    paths = configure(home, team, "alice")

    def events(lane: int, tag: str, n: int) -> None:
        with in_lane(paths, lane):
            enqueue_many("tool_event", [{"tool_name": "Bash", "success": True, "tool_use_id": f"{tag}-{i}"}
                                        for i in range(n)], home=str(home))

    events(0, "a", 30)  # lane 0's inbox: the oldest directory, live throughout
    events(1, "b", 20)
    _drain(paths)
    Spool(paths.spool, paths.archive).claim(
        next(qd.id for qd in Spool(paths.spool).queue_dirs() if qd.lane == 1), 1)
    events(1, "c", 10)  # a newer lane-1 inbox
    _drain(paths)
    first = run_cli(home, "sync", "push", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["tiers"]["sessions"]["operations"] == 60
    events(0, "d", 7)  # behind lane 1's newest directory in id order
    events(2, "e", 3)
    _drain(paths)
    second = run_cli(home, "sync", "push", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["tiers"]["sessions"]["operations"] == 10
    local = {r[0] for r in query(paths, "sessions", "SELECT op_id FROM tool_events")}
    assert team_rows(team, "SELECT count(*), count(DISTINCT op_id) FROM sessions.tool_events") == [(70, 70)]
    assert {r[0] for r in team_rows(team, "SELECT op_id FROM sessions.tool_events")} == local
    lanes = team_rows(team, "SELECT lane FROM codi_queue.push_lanes WHERE machine = 'alice' AND tier = 'sessions' "
                            "ORDER BY lane")
    assert lanes == [(1,), (2,)]
    # Nothing is left behind or sent again, and status counts no backlog in any lane.
    again = run_cli(home, "sync", "push")
    assert again.returncode == 0 and again.stdout.startswith("pushed 0 operations"), again.stdout + again.stderr
    status = json.loads(run_cli(home, "sync", "status", "--json").stdout)
    assert status["tiers"]["sessions"]["backlog"] == 0 and set(status["tiers"]["sessions"]["lanes"]) == {"0", "1", "2"}
