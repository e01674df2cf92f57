"""``sync pull``: other machines' shared knowledge reaches this one through its spool."""

from __future__ import annotations

import json
from pathlib import Path

from codi_queue.consumer.loop import Consumer
from codi_queue.producers.api import enqueue, enqueue_many
from tests.conftest import query, run_cli

from .conftest import configure, team_rows


def _decide(home: Path, decision_id: str, title: str) -> None:
    enqueue("decision", {"decision_id": decision_id, "title": title, "decision": f"{title}!"}, home=str(home))


def test_pull_converges_two_homes_org_knowledge(tmp_path: Path, team: str) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice, bob = configure(alice_home, team, "alice"), configure(bob_home, team, "bob")
    _decide(alice_home, "db", "use sqlite")
    _decide(alice_home, "lang", "python")
    enqueue("skill_learning", {"skill": "pytest", "pattern": "fixtures", "learning": "share them in conftest"}, home=str(alice_home))
    enqueue_many("tool_event", [{"tool_name": "Bash", "success": True}] * 5, home=str(alice_home))  # not pulled
    _decide(bob_home, "ci", "github actions")
    _decide(bob_home, "db", "use postgresql")  # newer than alice's: wins everywhere
    for home, paths in ((alice_home, alice), (bob_home, bob)):
        Consumer(paths).run(once=True)
        assert run_cli(home, "sync", "push").returncode == 0

    for home, paths in ((alice_home, alice), (bob_home, bob)):
        res = run_cli(home, "sync", "pull", "--json")
        assert res.returncode == 0, res.stderr
        Consumer(paths).run(once=True)
    expected = [("ci", "github actions"), ("db", "use postgresql"), ("lang", "python")]
    for paths in (alice, bob):
        assert sorted(query(paths, "org", "SELECT decision_id, title FROM decisions")) == expected
    assert query(bob, "org", "SELECT skill, pattern FROM skill_learnings") == [("pytest", "fixtures")]
    assert query(bob, "sessions", "SELECT count(*) FROM tool_events") == [(0,)]  # only [sync] pull tiers come in
    # Pulled rows keep their operation ids and are never pushed back as new.
    assert (query(alice, "org", "SELECT op_id FROM decisions WHERE decision_id = 'ci'")
            == query(bob, "org", "SELECT op_id FROM decisions WHERE decision_id = 'ci'"))
    for home in (alice_home, bob_home):
        res = run_cli(home, "sync", "push", "--json")
        assert json.loads(res.stdout)["tiers"]["org"]["operations"] == 0, res.stdout
    assert sorted(team_rows(team, "SELECT decision_id, machine FROM org.decisions")) == [
        ("ci", "bob"), ("db", "bob"), ("lang", "alice")]

    again = run_cli(alice_home, "sync", "pull", "--json")
    assert json.loads(again.stdout)["operations"] == 0  # nothing new since the last pull


def test_a_pull_repeated_after_a_crash_changes_nothing(tmp_path: Path, team: str) -> None:
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    configure(alice_home, team, "alice")
    bob = configure(bob_home, team, "bob")
    alice = configure(alice_home, team, "alice")
    for i in range(50):
        _decide(alice_home, f"d{i}", f"title {i}")
    Consumer(alice).run(once=True)
    assert run_cli(alice_home, "sync", "push").returncode == 0
    assert run_cli(bob_home, "sync", "pull").returncode == 0
    bob_pulled = Path(bob.sync_pull_file)
    bob_pulled.unlink()  # as if killed after enqueueing, before recording how far it got
    assert run_cli(bob_home, "sync", "pull").returncode == 0
    stats = Consumer(bob).run(once=True)
    assert stats.operations == 100 and stats.dead_letters == 0
    assert query(bob, "org", "SELECT count(*), count(DISTINCT op_id) FROM decisions") == [(50, 50)]


def test_a_pulled_row_whose_id_would_outrank_every_change_is_not_taken(tmp_path: Path, team: str) -> None:
    """Ids order upserts: a row another machine's name carries with an id that sorts after
    every real one (far in the future, or not an id of ours) would win over every later
    change here for good, the smuggling of issue 10 through the team database."""
    alice_home, bob_home = tmp_path / "alice", tmp_path / "bob"
    alice, bob = configure(alice_home, team, "alice"), configure(bob_home, team, "bob")
    _decide(alice_home, "db", "use sqlite")
    _decide(alice_home, "lang", "python")
    Consumer(alice).run(once=True)
    assert run_cli(alice_home, "sync", "push").returncode == 0
    import psycopg

    with psycopg.connect(team) as conn:  # what a hostile machine could write there
        conn.execute("UPDATE org.decisions SET machine = 'mallory', push_batch = 1, title = 'forged', "
                     "op_id = CASE decision_id WHEN 'db' THEN 'ffffffff-ffff-7fff-bfff-ffffffffffff' "
                     "ELSE 'zzzz' END")
        conn.execute("INSERT INTO codi_queue.push_cursors (machine, tier, batch) VALUES (%s, %s, 1)", ("mallory", "org"))
    res = run_cli(bob_home, "sync", "pull", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["unusable"] == 2 and "outrank every later change" in report["first_problem"], report
    Consumer(bob).run(once=True)
    assert query(bob, "org", "SELECT count(*) FROM decisions") == [(0,)]
