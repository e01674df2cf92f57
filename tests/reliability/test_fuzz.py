"""Hostile and malformed input at every boundary: a clear refusal or a dead letter, never a crash.

Example counts scale with CODI_FUZZ_EXAMPLES (the long run sets it high).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codi_queue.consumer.loop import Consumer
from codi_queue.errors import InvalidOperation
from codi_queue.paths import resolve
from codi_queue.producers.schemacheck import check, decode_line
from codi_queue.producers.hooks import ACTIVITY_TYPES, operations_for
from codi_queue.producers.jsonl import _convert
from codi_queue.producers.records import append_ops, append_records
from codi_queue.queue.frame import JsonRecord
from codi_queue.producers.sources import Line
from codi_queue.schemas.registry import OPS

EXAMPLES = int(os.environ.get("CODI_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["'; DROP TABLE tool_events; --", "\x00\x01\x1b[2J", "\ud800" if False else "\u202e", "1e999",
                     "2024-13-45T99:99:99", "NaN", "-0", "💥" * 50]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=25)
raw_lines = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e999}', b'{"tool_name": "x", "tool_name": "y"}',
                     b"[" * 5000 + b"]" * 5000, b'{"x": "\\ud800"}', b'\xff\xfe{"x": 1}', b"", b"null"]),
)


def _op_bodies() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        op = draw(st.sampled_from(sorted(OPS)))
        fields = [f.name for f in msgspec.structs.fields(OPS[op].type)]
        keys = draw(st.lists(st.sampled_from([*fields, "unknown", "op"]), unique=True, max_size=6))
        return op, {k: draw(json_values) for k in keys}
    return build()


@FUZZ
@given(st.sampled_from(sorted(OPS)), raw_lines)
def test_enqueue_input_is_refused_clearly_or_valid_for_the_consumer(op: str, line: bytes) -> None:
    try:
        body = check(op, decode_line(op, line, 1), 1)
    except InvalidOperation as err:
        assert err.record == 1 and err.reason
        return
    msgspec.json.decode(json.dumps(body).encode(), type=OPS[op].type)  # what passes, the Struct accepts


@FUZZ
@given(st.one_of(st.sampled_from([*ACTIVITY_TYPES, "PreToolUse", "PostToolUse", "PostToolUseFailure", "Odd"]),
                 st.text(max_size=20), st.none(), st.integers()),
       st.dictionaries(st.sampled_from(["session_id", "tool_name", "tool_use_id", "tool_input", "tool_response",
                                        "prompt", "cwd", "agent_id", "error", "message", "x"]), json_values, max_size=8))
def test_hook_payloads_never_make_a_body_that_would_be_dead_lettered(event: Any, fields: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as state:
        ops = operations_for({**fields, "hook_event_name": event}, state, now=1_700_000_000.0)
        for op, body, _ in ops:
            checked = check(op, json.loads(json.dumps(body, allow_nan=False)))
            msgspec.json.decode(json.dumps(checked).encode(), type=OPS[op].type)


@FUZZ
@given(st.sampled_from(["routing_metric", "session_outcome", "self_heal", "recovery", "git_event", "tool_event"]),
       raw_lines)
def test_legacy_lines_become_operations_or_clear_rejections(op: str, raw: bytes) -> None:
    try:
        item, _stamp = _convert(op, Line(7, raw, 0), OPS[op].columns)
    except InvalidOperation as err:
        assert err.record == 7 and err.reason
        return
    assert isinstance(item, OPS[op].type)


def _outcome(paths: Any, op: str, body: dict[str, Any], op_id: str) -> tuple[bool, bool]:
    """(has its effect, is a dead letter) for one operation."""
    import apsw

    dead = False
    for tier in ("platform", "org", "sessions", "project", "state"):
        conn = apsw.Connection(paths.database(tier), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            dead |= conn.execute("SELECT count(*) FROM cq_dead_letters WHERE op_id = ?", (op_id,)).get > 0
        finally:
            conn.close()
    spec = OPS.get(op)
    if spec is None:
        return False, dead
    conn = apsw.Connection(paths.database(spec.tier), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if spec.is_upsert:
            where = " AND ".join(f'"{k}" = ?' for k in spec.key)
            keys = [body.get(k) for k in spec.key]
            # A key SQLite cannot hold (an integer past 64 bits) cannot have been stored either.
            effect = all(isinstance(k, str) or isinstance(k, int) and -2**63 <= k < 2**63 for k in keys) and conn.execute(
                f'SELECT count(*) FROM "{spec.table}" WHERE {where}', keys).get > 0
        else:
            effect = conn.execute(f'SELECT count(*) FROM "{spec.table}" WHERE op_id = ?', (op_id,)).get == 1
    finally:
        conn.close()
    return bool(effect), dead


@settings(max_examples=max(10, EXAMPLES // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(_op_bodies(), st.tuples(st.text(max_size=10), st.dictionaries(st.text(max_size=5), scalars))),
                min_size=1, max_size=25))
def test_consumer_files_every_operation_as_a_row_or_a_dead_letter(ops: list[tuple[str, dict[str, Any]]]) -> None:
    from codi_queue.ids import new_op_id

    with tempfile.TemporaryDirectory() as home:
        paths = resolve(home)
        sendable = [(op, body, new_op_id()) for op, body in ops]
        append_ops(paths, sendable, "fuzz")  # unvalidated, straight to the consumer
        # A body nested deeper than any decoder will follow, written by hand.
        deep_id = new_op_id()
        deep = f'[1,1.0,[["{deep_id}","activity_event",1,1.0,"fuzz",{{"event_type":"deep","data":'
        append_records(paths, [JsonRecord((deep + "[" * 100_000 + "]" * 100_000 + "}]]]").encode())])
        stats = Consumer(paths, batch_ops=7).run(once=True)
        assert stats.operations == len(sendable)
        assert _outcome(paths, "activity_event", {}, deep_id)[0] is False
        import apsw

        conn = apsw.Connection(paths.database("state"), flags=apsw.SQLITE_OPEN_READONLY)
        try:  # too deep to decode even as a record: filed whole, with the reason
            reasons = [r[0] for r in conn.execute("SELECT reason FROM cq_dead_letters WHERE op = '?'")]
        finally:
            conn.close()
        assert any("undecodable record" in r and "recursion" in r for r in reasons)
        for op, body, op_id in sendable:
            effect, dead = _outcome(paths, op, body, op_id)
            # Upserts of one key overwrite each other, so a later op's effect can stand for an earlier one's.
            assert effect != dead or (dead and OPS.get(op) is not None and OPS[op].is_upsert), (op, body)
