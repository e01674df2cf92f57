"""An existing claude.db, made by either of the platform's schemas, is adopted, never fought (issue: fidelity)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from codi_queue.paths import resolve

from ..conftest import query, run_cli
from .schemas import CCC, META_VENGINE, SEED, claude_db, home_pointing_at


def _snapshot(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in SEED}
    finally:
        conn.close()


OPS = [
    ("tool_event", {"tool_name": "Edit", "success": True, "duration_ms": 7, "session_id": "s-new"}),
    ("session_outcome", {"session_id": "s-new", "outcome": "success", "quality": 4, "model": "opus",
                         "messages_count": 10, "cost_usd": 0.5, "success": True}),
    ("session", {"session_id": "s-new", "status": "active", "host": "box", "pid": 42}),
    ("activity_event", {"event_type": "SessionStart", "session_id": "s-new", "data": {"model": "opus"}}),
]


@pytest.mark.parametrize("schema", [CCC, META_VENGINE], ids=["command-center", "meta-vengine"])
def test_an_existing_claude_db_is_adopted_on_first_run(tmp_path: Path, schema: list[tuple[str, str]]) -> None:
    db = claude_db(tmp_path, schema)
    before = _snapshot(db)
    home = home_pointing_at(tmp_path, "sessions", db)
    paths = resolve(str(home))
    shown = json.loads(run_cli(home, "paths", "--json").stdout)
    assert shown["databases"]["sessions"] == str(db) and "config file" in shown["databases_from"]["sessions"]
    for op, body in OPS:
        res = run_cli(home, "enqueue", op, json.dumps(body))
        assert res.returncode == 0, res.stderr
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    # Old rows intact (every column they had), new rows appended after them.
    after = _snapshot(db)
    for table, rows in before.items():
        width = len(rows[0])
        assert [r[:width] for r in after[table][: len(rows)]] == rows, table
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]
    # The dashboards' names for the outcome columns hold the new row's values.
    assert query(paths, "sessions", "SELECT quality_score, model_used, message_count, cost FROM session_outcome_events "
                                    "WHERE session_id = 's-new'") == [(4.0, "opus", 10, 0.5)]
    # The platform's sessions (its own row, and one kept for the session we saw) and our registry
    # live side by side, each with its own shape.
    assert query(paths, "sessions", "SELECT id FROM sessions ORDER BY id") == [("s-new",), ("sess-old",)]
    assert query(paths, "sessions", "SELECT session_id, host FROM session_registry") == [("s-new", "box")]
    assert query(paths, "sessions", "SELECT count(*) FROM v_recent_sessions") == [(2,)]
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert status["dead_letters"] == 0 and status["tiers_unavailable"] == {} and status["pending"] == 0
    assert run_cli(home, "db", "migrate").returncode == 0  # migrating again meets what is there: nothing to do


def test_a_fresh_database_has_the_dashboards_names_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", *(OPS[1][0], json.dumps(OPS[1][1]))).returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "sessions", "SELECT quality, quality_score, model, model_used, messages_count, message_count "
                                    "FROM session_outcome_events") == [(4.0, 4.0, "opus", "opus", 10, 10)]


def test_a_registry_released_as_sessions_is_renamed_not_mixed(tmp_path: Path) -> None:
    import apsw

    from codi_queue.consumer.db import adopt, split_statements
    from codi_queue.schemas.migrations import MIGRATIONS

    path = tmp_path / "sessions.db"
    conn = apsw.Connection(str(path))
    for step in MIGRATIONS["sessions"][0]:
        conn.execute(step) if isinstance(step, str) else step(conn)
    # What the first release's migration 2 created: the registry under the name "sessions".
    old = MIGRATIONS["sessions"][1][0]
    assert isinstance(old, str)
    for statement in split_statements(old.replace("CREATE TABLE session_registry", "CREATE TABLE sessions")):
        adopt(conn, statement)
    conn.execute("INSERT INTO sessions (timestamp, session_id, status, op_id) VALUES (1, 'kept', 'active', 'x')")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    from codi_queue.consumer.db import open_tier

    conn = open_tier(str(path), "sessions")
    try:
        assert conn.execute("SELECT session_id FROM session_registry").fetchall() == [("kept",)]
        cols = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
        assert {"started_at", "project_path", "quality_score"} <= cols  # the platform's table now
    finally:
        conn.close()


def test_a_tier_that_cannot_be_adopted_waits_while_the_others_apply(tmp_path: Path) -> None:
    bad = tmp_path / "elsewhere" / "project.db"
    bad.parent.mkdir(mode=0o700)
    conn = sqlite3.connect(bad)
    # Someone's tasks table whose task ids repeat: the upsert key cannot become unique.
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, timestamp INTEGER, task_id TEXT, title TEXT)")
    conn.executemany("INSERT INTO tasks (timestamp, task_id, title) VALUES (1, 'dup', ?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    home = home_pointing_at(tmp_path, "project", bad)
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "task", '{"task_id":"t1","title":"x"}').returncode == 0
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"Read","success":true}').returncode == 0
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and "project" in res.stderr and "Traceback" not in res.stderr
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("Read",)]
    log = Path(paths.error_log).read_text()
    assert "project database" in log and "cannot be opened or adopted" in log
    # Fix the user's table, and the task that waited in the spool arrives.
    conn = sqlite3.connect(bad)
    conn.execute("DELETE FROM tasks WHERE title = 'b'")
    conn.commit()
    conn.close()
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "project", "SELECT task_id FROM tasks ORDER BY id") == [("dup",), ("t1",)]
    assert os.path.exists(bad)


def test_the_dashboards_summaries_follow_each_batch(tmp_path: Path) -> None:
    db = claude_db(tmp_path, CCC)
    home = home_pointing_at(tmp_path, "sessions", db)
    paths = resolve(str(home))
    t0 = 1768903200  # 2026-01-20T10:00:00Z
    ops = [
        ("activity_event", {"event_type": "session_start", "session_id": "s-new", "timestamp": t0,
                            "data": {"cwd": "/work/q", "model": "claude-sonnet-4", "transcript_path": "/t.jsonl"}}),
        ("token_economics", {"message_id": "m1", "request_id": "r1", "session_id": "s-new", "timestamp": t0 + 60,
                             "model": "claude-sonnet-4", "input_tokens": 100, "output_tokens": 50,
                             "cache_read_input_tokens": 1000, "cost_usd": 0.25}),
        ("tool_event", {"tool_name": "Edit", "success": True, "duration_ms": 10, "session_id": "s-new",
                        "timestamp": t0 + 61}),
        ("tool_event", {"tool_name": "Edit", "success": False, "duration_ms": 30, "session_id": "s-new",
                        "timestamp": t0 + 62}),
        ("tool_event", {"tool_name": "Read", "success": True, "session_id": "sess-old", "timestamp": t0 + 63}),
        ("session_outcome", {"session_id": "s-new", "outcome": "success", "quality": 4, "timestamp": t0 + 90}),
        ("activity_event", {"event_type": "session_end", "session_id": "s-new", "timestamp": t0 + 120}),
    ]
    for op, body in ops:
        assert run_cli(home, "enqueue", op, json.dumps(body)).returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    new = query(paths, "sessions", "SELECT project_path, started_at, ended_at, model, tool_count, input_tokens, "
                                   "output_tokens, cache_read_tokens, outcome, quality_score, cost_estimate, "
                                   "transcript_path FROM sessions WHERE id = 's-new'")
    assert new == [("/work/q", "2026-01-20T10:00:00", "2026-01-20T10:02:00", "claude-sonnet-4", 2, 100, 50, 1000,
                    "success", 4.0, 0.25, "/t.jsonl")]
    # The platform's own row: empty values filled, counts only grow, nothing it had rewritten.
    old = query(paths, "sessions", "SELECT started_at, model, message_count, tool_count FROM sessions "
                                   "WHERE id = 'sess-old'")
    assert old == [("2026-01-20T10:00:00", "claude-opus-4", 12, 1)]
    usage = query(paths, "sessions", "SELECT tool_name, total_calls, success_count, failure_count, avg_duration_ms "
                                     "FROM tool_usage ORDER BY tool_name")
    assert ("Edit", 2, 1, 1, 20.0) in usage
    day = query(paths, "sessions", "SELECT sonnet_messages, sonnet_tokens_in, sonnet_tokens_out, sonnet_cache_read, "
                                   "tool_calls FROM daily_stats WHERE date = '2026-01-20'")
    assert day == [(1, 100, 50, 1000, 2 + 3)]  # tool calls that day: the platform's two and our three
    assert query(paths, "sessions", "SELECT session_count, message_count FROM hourly_activity "
                                    "WHERE date = '2026-01-20' AND hour = 10") == [(1, 1)]
    # Re-applying the journal changes nothing: summaries are recomputed, not incremented.
    assert run_cli(home, "replay", "--from-archive").returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "sessions", "SELECT tool_count, input_tokens FROM sessions WHERE id = 's-new'") == [(2, 100)]
    assert query(paths, "sessions", "SELECT total_calls FROM tool_usage WHERE tool_name = 'Edit'") == [(2,)]


def test_a_summary_table_shaped_otherwise_never_holds_back_the_events(tmp_path: Path) -> None:
    db = tmp_path / "data" / "claude.db"
    db.parent.mkdir(mode=0o700)
    conn = sqlite3.connect(db)
    # Someone's own "sessions" and "tool_usage", nothing like the platform's.
    conn.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, note TEXT NOT NULL)")
    conn.execute("CREATE TABLE tool_usage (tool_name TEXT PRIMARY KEY, weird INTEGER NOT NULL)")
    conn.commit()
    conn.close()
    home = home_pointing_at(tmp_path, "sessions", db)
    paths = resolve(str(home))
    for i in range(3):
        body = {"tool_name": "Edit", "success": True, "session_id": "s1", "timestamp": 1768903200 + i}
        assert run_cli(home, "enqueue", "tool_event", json.dumps(body)).returncode == 0
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(3,)]
    assert "summary tables not updated" in Path(paths.error_log).read_text()


def test_rows_another_writer_shaped_oddly_never_hold_back_the_drain(tmp_path: Path) -> None:
    """token_economics rows another writer put in our table (a timestamp stored as text, an op_id
    stored as a number) meeting our operations for the same responses: the batch commits, the
    summaries report what they could not do, and the drain never stalls on it."""
    db = claude_db(tmp_path, CCC)
    home = home_pointing_at(tmp_path, "sessions", db)
    paths = resolve(str(home))
    assert run_cli(home, "run", "--once").returncode == 0  # adopts the database, creates token_economics
    conn = sqlite3.connect(db)
    for message, ts, op_id in (("m-text", "'yesterday'", "'0'"), ("m-number", "1768903200", "7"),
                               ("m-blob", "1768903200", "X'07'")):
        conn.execute("INSERT INTO token_economics (message_id, request_id, session_id, timestamp, model, input_tokens, "
                     "output_tokens, cache_creation_input_tokens, cache_read_input_tokens, op_id) "
                     f"VALUES ('{message}', 'r1', 's1', {ts}, 'claude-opus-4', 5, 5, 0, 0, {op_id})")
    conn.commit()
    conn.close()
    for message in ("m-text", "m-number", "m-blob", "m-ours"):
        body = {"message_id": message, "request_id": "r1", "session_id": "s1", "timestamp": 1768903260,
                "model": "claude-opus-4", "input_tokens": 7, "output_tokens": 3}
        assert run_cli(home, "enqueue", "token_economics", json.dumps(body)).returncode == 0
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    # An operation replaces only a row of an older one: "0" is older than ours; "7" (the column's
    # text affinity made it text) and a blob (SQLite sorts blobs after text) are not.
    assert query(paths, "sessions", "SELECT message_id, input_tokens, output_tokens FROM token_economics "
                                    "WHERE message_id LIKE 'm-%' ORDER BY message_id") == [
        ("m-blob", 5, 5), ("m-number", 5, 5), ("m-ours", 7, 3), ("m-text", 7, 3)]
    assert "summary tables not updated" in Path(paths.error_log).read_text()  # the blob: reported, not fatal
    assert query(paths, "sessions", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    assert json.loads(run_cli(home, "status", "--json").stdout)["pending"] == 0


@pytest.mark.parametrize("schema", [None, CCC, META_VENGINE], ids=["fresh", "command-center", "meta-vengine"])
def test_a_sessions_start_and_end_are_found_by_index_not_by_scanning_it(tmp_path: Path, schema: list[tuple[str, str]] | None) -> None:
    """The summaries look up every touched session's first start and last end each batch: a scan
    of the session's activity made the drain slow down as sessions grew."""
    from codi_queue.consumer.db import open_tier
    from codi_queue.consumer.summaries import FIRST_START, LAST_END

    db = claude_db(tmp_path, schema) if schema is not None else tmp_path / "sessions.db"
    conn = open_tier(str(db), "sessions")
    try:
        for sql in (FIRST_START, LAST_END):
            plan = " ".join(str(row[-1]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("s1",)))
            assert "USING INDEX cq_activity_session_" in plan or "USING COVERING INDEX cq_activity_session_" in plan, plan
    finally:
        conn.close()


def _session_tokens_as_summed(paths: Any, sid: str) -> tuple[Any, ...]:
    """The oracle: a session's token columns as the platform would sum them over all its responses."""
    from codi_queue.consumer.summaries import SESSION_TOKENS, TOP_MODEL

    sums = query(paths, "sessions", SESSION_TOKENS, (sid,))[0]
    model = query(paths, "sessions", TOP_MODEL, (sid,))
    return (*sums[:4], model[0][0] if model else "unknown", sums[4])


def test_our_sessions_token_totals_kept_by_deltas_match_summing_every_response(tmp_path: Path) -> None:
    """Twelve batches of responses (new, re-counted, moved between sessions and days, without a model
    or a cost), a replay, and a batch whose summaries fail part-way: after each, every session of
    ours, day and hour shows exactly what summing all of its responses shows, though a batch never
    sums them itself."""
    import random

    from codi_queue.consumer.loop import Consumer
    from codi_queue.producers.api import enqueue_many

    home = tmp_path / "home"
    paths = resolve(str(home))
    rng = random.Random(11)
    sessions = [f"s{i}" for i in range(4)]
    responses = [f"m{i}" for i in range(40)]

    def check(days: bool) -> None:
        for family in ("opus", "sonnet", "haiku") if days else ():
            kept = query(paths, "sessions", f"SELECT date, {family}_messages, {family}_tokens_in, {family}_tokens_out, "
                                            f"{family}_cache_read FROM daily_stats WHERE {family}_messages > 0 ORDER BY date")
            summed = query(paths, "sessions", "SELECT date(timestamp, 'unixepoch'), COUNT(*), SUM(input_tokens), "
                                              "SUM(output_tokens), SUM(cache_read_input_tokens) FROM token_economics "
                                              "WHERE model LIKE ? GROUP BY 1 ORDER BY 1", (f"%{family}%",))
            assert kept == summed, family
        if days:
            kept = query(paths, "sessions", "SELECT date, hour, message_count FROM hourly_activity "
                                            "WHERE message_count > 0 ORDER BY 1, 2")
            summed = query(paths, "sessions", "SELECT date(timestamp, 'unixepoch'), timestamp % 86400 / 3600, COUNT(*) "
                                              "FROM token_economics GROUP BY 1, 2 ORDER BY 1, 2")
            assert kept == summed
        for sid in sessions:
            row = query(paths, "sessions", "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                                           "model, cost_estimate FROM sessions WHERE id = ?", (sid,))
            if not row:
                assert not query(paths, "sessions", "SELECT 1 FROM token_economics WHERE session_id = ?", (sid,))
                continue
            expected = _session_tokens_as_summed(paths, sid)
            assert row[0][:5] == expected[:5], sid
            assert row[0][5] == pytest.approx(expected[5]), sid  # float sums taken in another order

    for batch in range(12):
        bodies = []
        for _ in range(rng.randint(1, 30)):
            body: dict[str, Any] = {
                "message_id": rng.choice(responses), "request_id": "r", "session_id": rng.choice(sessions),
                "timestamp": 1768903200 + rng.randint(0, 3 * 86400), "input_tokens": rng.randint(0, 500),
                "output_tokens": rng.randint(0, 50), "cache_read_input_tokens": rng.randint(0, 9),
                "cache_creation_input_tokens": rng.randint(0, 9)}
            if rng.random() < 0.8:
                body["model"] = rng.choice(["claude-opus-4", "claude-sonnet-4", "claude-haiku-4"])
            if rng.random() < 0.5:
                body["cost_usd"] = rng.choice([0.25, 0.5, 1.0])
            bodies.append(body)
        if batch == 9:  # after the failed batch: every session is touched again
            bodies += [{**bodies[0], "message_id": f"again-{sid}", "session_id": sid} for sid in sessions]
        assert enqueue_many("token_economics", bodies, home=str(home))
        Consumer(paths).run(once=True)
        if batch == 8:
            # Another writer stores an op_id the summaries cannot compare; a batch meeting that row
            # commits its events, reports the summaries it could not update, and forgets what it kept.
            odd = bodies[0]["message_id"]
            conn = sqlite3.connect(paths.database("sessions"))
            conn.execute("UPDATE token_economics SET op_id = X'07' WHERE message_id = ?", (odd,))
            conn.commit()
            assert enqueue_many("token_economics", [{**bodies[0], "input_tokens": 3}], home=str(home))
            Consumer(paths).run(once=True)
            assert "summary tables not updated" in Path(paths.error_log).read_text()
            assert query(paths, "sessions", "SELECT count(*) FROM cq_session_tokens") == [(0,)]
            # What it owed was repaid by the same run's housekeeping (the next batch's own path is
            # test_summary_rows_a_failed_batch_could_not_update_are_repaid_exactly_by_the_next).
            assert query(paths, "sessions", "SELECT count(*) FROM cq_summary_debt") == [(0,)]
            conn.execute("UPDATE token_economics SET op_id = '0' WHERE message_id = ?", (odd,))
            conn.commit()
            conn.close()
            continue
        check(days=True)  # after a batch whose summaries failed, the next one repaid what it owed
        assert query(paths, "sessions", "SELECT count(*) FROM cq_summary_debt") == [(0,)]
    kept = query(paths, "sessions", "SELECT count(*) FROM cq_session_tokens")[0][0]
    assert kept, "no session's totals were kept: the delta path was never taken"
    assert run_cli(home, "replay", "--from-archive").returncode == 0
    Consumer(paths).run(once=True)
    check(days=True)


def _owing_home(tmp_path: Path) -> tuple[Path, Any, str]:
    """A home whose last batch's summaries failed: a re-counted response lowered a day of ours
    from 300 to 210 input tokens, and another writer's row kept the summaries from following."""
    from codi_queue.consumer.loop import Consumer
    from codi_queue.producers.api import enqueue_many

    home = tmp_path / "home"
    paths = resolve(str(home))
    day = 1768903200  # 2026-01-20 10:00 UTC, a day no platform tool wrote: ours
    responses = [{"message_id": f"m{i}", "request_id": "r", "session_id": "s1", "model": "claude-sonnet-4",
                  "timestamp": day + 3600 * i, "input_tokens": 100, "output_tokens": 1} for i in range(3)]
    assert enqueue_many("token_economics", responses, home=str(home))
    Consumer(paths).run(once=True)
    daily = "SELECT sonnet_messages, sonnet_tokens_in, session_count FROM daily_stats WHERE date = '2026-01-20'"
    assert query(paths, "sessions", daily) == [(3, 300, 1)]
    conn = sqlite3.connect(paths.database("sessions"))
    conn.execute("UPDATE token_economics SET op_id = X'07' WHERE message_id = 'm2'")  # another writer's op_id
    conn.commit()
    # m0 re-counted lower (its row is rewritten); m2 meets the row the summaries cannot compare.
    assert enqueue_many("token_economics", [{**responses[0], "input_tokens": 10}, {**responses[2], "input_tokens": 50}],
                        home=str(home))
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT input_tokens FROM token_economics WHERE message_id = 'm0'") == [(10,)]
    assert "summary tables not updated" in Path(paths.error_log).read_text()
    conn.execute("UPDATE token_economics SET op_id = '0' WHERE message_id = 'm2'")
    conn.commit()
    conn.close()
    return home, paths, daily


def test_summary_rows_a_failed_batch_could_not_update_are_repaid_exactly_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose summaries fail (another writer's row they cannot read) commits its events and
    owes the summary rows it touched; status shows the debt, and the next batch recomputes them from
    the tables: a day of ours is set to what they say (a re-counted response lowered it), not kept
    at the larger stale value."""
    from codi_queue.consumer.loop import Consumer
    from codi_queue.producers.api import enqueue

    monkeypatch.setattr(Consumer, "_repay_summaries", lambda self: None)  # the next batch's path alone
    home, paths, daily = _owing_home(tmp_path)
    day = 1768903200
    assert query(paths, "sessions", daily) == [(3, 300, 1)]  # not updated: owed
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert status["summaries_owed"] == 2  # the day and the session
    assert "summaries owed   2 rows" in run_cli(home, "status").stdout
    assert enqueue("tool_event", {"tool_name": "Bash", "success": True, "timestamp": day + 60}, home=str(home))
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", daily) == [(3, 210, 1)]
    assert query(paths, "sessions", "SELECT hour, session_count, message_count FROM hourly_activity "
                                    "WHERE date = '2026-01-20' ORDER BY hour") == [(10, 1, 1), (11, 1, 1), (12, 1, 1)]
    assert query(paths, "sessions", "SELECT input_tokens FROM sessions WHERE id = 's1'") == [(210,)]
    assert json.loads(run_cli(home, "status", "--json").stdout)["summaries_owed"] == 0


def test_summary_rows_owed_by_an_idle_homes_last_batch_are_repaid_by_housekeeping(tmp_path: Path) -> None:
    """No next batch comes: the consumer's housekeeping (once a minute, and at the end of a
    ``run --once``) repays the debt on its own."""
    home, paths, daily = _owing_home(tmp_path)  # the failed batch's run ended with its housekeeping
    assert query(paths, "sessions", daily) == [(3, 210, 1)]
    assert query(paths, "sessions", "SELECT count(*) FROM cq_summary_debt") == [(0,)]
    assert json.loads(run_cli(home, "status", "--json").stdout)["summaries_owed"] == 0


def test_a_repayment_that_fails_holds_back_neither_the_batch_nor_its_own_summaries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is owed stays owed (and reported) when recomputing it fails; the batch that tried still
    writes its own events and summary rows, and a malformed owed day is dropped, not retried forever."""
    from codi_queue.consumer import apply
    from codi_queue.consumer.loop import Consumer
    from codi_queue.consumer.summaries import Summaries
    from codi_queue.producers.api import enqueue

    home = tmp_path / "home"
    paths = resolve(str(home))
    assert enqueue("tool_event", {"tool_name": "Read", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    conn = sqlite3.connect(paths.database("sessions"))
    conn.executemany("INSERT INTO cq_summary_debt (kind, key, since) VALUES (?, ?, 0)",
                     [("tool", "Read"), ("day", "not a day")])
    conn.commit()

    def broken(self: Summaries) -> int:
        raise ValueError("a row no recompute can read")

    monkeypatch.setattr(Summaries, "repay", broken)
    monkeypatch.setattr(apply, "_repay_after", type(apply._repay_after)())
    assert enqueue("tool_event", {"tool_name": "Bash", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT total_calls FROM tool_usage WHERE tool_name = 'Bash'") == [(1,)]
    assert query(paths, "sessions", "SELECT count(*) FROM cq_summary_debt") == [(2,)]
    assert "owed ValueError: a row no recompute can read" in Path(paths.error_log).read_text()
    monkeypatch.undo()
    Consumer(paths).run(once=True)  # housekeeping repays: the tool recomputed, the malformed day dropped
    assert query(paths, "sessions", "SELECT count(*) FROM cq_summary_debt") == [(0,)]
    assert query(paths, "sessions", "SELECT total_calls FROM tool_usage WHERE tool_name = 'Read'") == [(1,)]
    conn.close()
