"""Schemas: one definition per operation, migrations that match it, validation that names the field."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import msgspec
import pytest

from codi_queue.consumer.db import migrate, open_tier, schema_version
from codi_queue.errors import InvalidOperation, SchemaTooNew
from codi_queue.schemas.columns import PLATFORM_NAMES
from codi_queue.producers.validate import decode_json, validate
from codi_queue.schemas.registry import OPS, TIERS
from codi_queue.schemas.migrations import MIGRATIONS, latest_version
from codi_queue.schemas.types import normalize_timestamp

REQUIRED_OPS = {
    "tool_event": ("tool_events", "sessions"),
    "activity_event": ("activity_events", "sessions"),
    "git_event": ("git_events", "sessions"),
    "routing_metric": ("routing_metrics_events", "sessions"),
    "session_outcome": ("session_outcome_events", "sessions"),
    "self_heal": ("self_heal_events", "sessions"),
    "recovery": ("recovery_events", "sessions"),
    "message": ("messages", "sessions"),
    "tool_analytics": ("tool_analytics", "sessions"),
    "token_economics": ("token_economics", "sessions"),
    "decision": ("decisions", "org"),
    "skill_learning": ("skill_learnings", "org"),
    "error_solution": ("error_solutions", "org"),
    "component": ("components", "platform"),
    "task": ("tasks", "project"),
}


def test_every_required_operation_has_its_table_and_tier() -> None:
    for op, (table, tier) in REQUIRED_OPS.items():
        assert OPS[op].table == table
        assert OPS[op].tier == tier


def test_struct_tags_are_the_operation_names() -> None:
    for name, spec in OPS.items():
        assert spec.type.__struct_config__.tag == name


@pytest.mark.parametrize("tier", TIERS)
def test_migrated_tables_match_the_structs(tmp_path: Path, tier: str) -> None:
    conn = open_tier(str(tmp_path / f"{tier}.db"), tier)
    try:
        assert schema_version(conn) == latest_version(tier)
        for spec in OPS.values():
            if spec.tier != tier:
                continue
            cols = {r[1] for r in conn.execute(f'PRAGMA table_info("{spec.table}")')}
            platform_names = set(PLATFORM_NAMES.get(spec.table, {}).values())  # what the dashboards query
            assert cols == {"id", "op_id", *spec.columns} | platform_names, spec.name
    finally:
        conn.close()


def test_existing_schema_columns_are_all_present(tmp_path: Path) -> None:
    # Columns the platform's dashboards read today (existing-schema.md).
    legacy = {
        "tool_events": "timestamp tool_name success duration_ms error_message context",
        "activity_events": "timestamp event_type data session_id",
        "git_events": "timestamp event_type repo branch commit_hash message files_changed additions deletions author",
        "routing_metrics_events": "timestamp query_id predicted_model actual_model dq_score complexity accuracy "
        "cost_saved reasoning query_text",
        "session_outcome_events": "timestamp session_id outcome quality complexity intent model messages_count "
        "duration_minutes cost_usd success summary",
        "self_heal_events": "timestamp error_pattern fix_applied success execution_time_ms error_message context "
        "severity",
        "recovery_events": "timestamp error_type recovery_strategy success attempts time_to_recover_ms "
        "error_details recovery_method",
    }
    conn = open_tier(str(tmp_path / "sessions.db"), "sessions")
    try:
        for table, cols in legacy.items():
            have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
            assert set(cols.split()) <= have, table
    finally:
        conn.close()


def test_an_existing_database_is_adopted_not_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "sessions.db")
    conn = apsw.Connection(path)
    conn.execute(
        "CREATE TABLE tool_events (id INTEGER PRIMARY KEY, timestamp INT NOT NULL, tool_name TEXT NOT NULL, "
        "success INT NOT NULL, duration_ms INT, error_message TEXT, context TEXT)"
    )
    conn.execute("INSERT INTO tool_events (timestamp, tool_name, success) VALUES (1, 'old', 1)")
    conn.close()
    conn = open_tier(path, "sessions")
    try:
        assert [tuple(r) for r in conn.execute("SELECT tool_name, op_id FROM tool_events")] == [("old", None)]
        cols = {r[1] for r in conn.execute("PRAGMA table_info(tool_events)")}
        assert {"op_id", "session_id", "tool_use_id"} <= cols
    finally:
        conn.close()


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "org.db")
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA user_version = {latest_version('org') + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        open_tier(path, "org")
    assert info.value.found == latest_version("org") + 1
    assert "newer" in str(info.value)


def test_migrations_are_idempotent_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "platform.db")
    open_tier(path, "platform").close()
    conn = open_tier(path, "platform")
    try:
        assert migrate(conn, "platform") == len(MIGRATIONS["platform"])
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1700000000, 1700000000),
        (1700000000.9, 1700000000),
        (1700000000123, 1700000000),
        ("1700000000", 1700000000),
        ("2023-11-14T22:13:20Z", 1700000000),
        ("2023-11-14T22:13:20+00:00", 1700000000),
        ("2023-11-14T23:13:20+01:00", 1700000000),
        ("2023-11-14", 1699920000),
    ],
)
def test_timestamps_in_three_formats(value: object, expected: int) -> None:
    assert normalize_timestamp(value) == expected


@pytest.mark.parametrize("value", ["yesterday", -5, float("nan"), float("inf"), True, 10**20, [1]])
def test_bad_timestamps_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        normalize_timestamp(value)


def test_missing_timestamp_defaults_to_now() -> None:
    before = int(time.time())
    op = validate("tool_event", {"tool_name": "Bash", "success": True})
    assert before <= op.timestamp <= int(time.time())  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("op", "body", "field", "fragment"),
    [
        ("session_outcome", {"quality": 6}, "quality", "in [1.0, 5.0]"),
        ("session_outcome", {"complexity": 1.5}, "complexity", "in [0.0, 1.0]"),
        ("session_outcome", {"outcome": "great"}, "outcome", "Invalid enum value"),
        ("session_outcome", {"messages_count": "12"}, "messages_count", "Expected `int | null`, got `str`"),
        ("tool_event", {"success": True}, "tool_name", "missing required field"),
        ("tool_event", {"tool_name": "x", "success": True, "sucess": 1}, "sucess", "unknown field"),
        ("tool_event", {"tool_name": "", "success": True}, "tool_name", "length >= 1"),
        ("tool_event", {"tool_name": "x", "success": True, "timestamp": "soon"}, "timestamp", "ISO 8601"),
        ("routing_metric", {"cost_saved": float("nan")}, "cost_saved", ""),
        ("recovery", {"error_type": "x", "success": True, "attempts": -1}, "attempts", ">= 0"),
    ],
)
def test_validation_names_the_field_and_the_reason(op: str, body: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(InvalidOperation) as info:
        validate(op, body, record=3)
    err = info.value
    assert err.field == field
    assert fragment in err.reason
    assert err.record == 3 and err.op == op


def test_unknown_operation_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidOperation) as info:
        validate("nope", {})
    assert "unknown operation 'nope'" in info.value.reason and "tool_event" in info.value.reason


def test_json_path_refuses_nan_and_bad_json() -> None:
    with pytest.raises(InvalidOperation, match="not valid JSON"):
        decode_json("routing_metric", b'{"dq_score": NaN}')
    with pytest.raises(InvalidOperation, match="not valid JSON"):
        decode_json("routing_metric", b'{"dq_score": 1')


def test_json_fields_are_stored_as_json_text() -> None:
    op = validate("activity_event", {"event_type": "prompt", "data": {"a": [1, 2]}})
    assert op.data == '{"a":[1,2]}'  # type: ignore[attr-defined]


def test_operation_structs_only_grow_with_defaults() -> None:
    # A field added later must have a default, or old spool records stop decoding.
    # Required fields are the ones each op was released with.
    released_required = {
        "tool_event": {"tool_name", "success"},
        "activity_event": {"event_type"},
        "git_event": {"event_type"},
        "self_heal": {"error_pattern", "success"},
        "recovery": {"error_type", "success"},
        "message": {"session_id", "role", "content"},
        "tool_analytics": {"tool_name"},
        "token_economics": {"message_id", "request_id"},
        "decision": {"decision_id", "title", "decision"},
        "skill_learning": {"skill", "pattern", "learning"},
        "error_solution": {"error_signature", "solution"},
        "component": {"kind", "name"},
        "task": {"task_id", "title"},
        "session": {"session_id"},
        "lock": {"resource", "session_id"},
        "override": {"scope", "key", "value"},
        "worktree_link": {"worktree_path", "repo"},
        "skill_suggestion": {"session_id", "skill"},
        "skill_invocation": {"session_id", "skill"},
        "project": {"project_id"},
        "session_state": {"session_id"},
        "agent": {"session_id", "agent_id"},
        "agent_log": {"session_id", "agent_id", "message"},
        "command_event": {"command"},
        "coordinator_event": {"action"},
        "expertise_routing_event": {"domain"},
        "autonomy_event": {"event_type"},
    }
    for name, spec in OPS.items():
        required = {f.name for f in msgspec.structs.fields(spec.type) if f.required}
        assert required == released_required.get(name, set()), name


def test_sql_is_built_only_from_schema_identifiers() -> None:
    for spec in OPS.values():
        assert spec.sql.count("?") == len(spec.columns) + 1
        assert spec.sql.startswith(f'INSERT INTO "{spec.table}"')


def test_a_version_1_database_migrates_to_the_latest(tmp_path: Path) -> None:
    from codi_queue.schemas.migrations import MIGRATIONS as M

    for tier in ("sessions", "project"):
        path = str(tmp_path / f"{tier}.db")
        conn = apsw.Connection(path)
        conn.execute("BEGIN")
        for step in M[tier][0]:
            conn.execute(step) if isinstance(step, str) else step(conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
        conn.close()
        conn = open_tier(path, tier)
        try:
            assert schema_version(conn) == latest_version(tier) >= 2
            assert conn.execute("SELECT count(*) FROM sessions").get == 0
        finally:
            conn.close()


def test_trigger_tables_are_declared(tmp_path: Path) -> None:
    # apply.py counts rows with total_changes unless a table is declared to have triggers.
    for tier in TIERS:
        conn = open_tier(str(tmp_path / f"{tier}.db"), tier)
        try:
            with_triggers = {r[0] for r in conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'")}
        finally:
            conn.close()
        for spec in OPS.values():
            if spec.tier == tier:
                assert spec.has_triggers == (spec.table in with_triggers), spec.table
