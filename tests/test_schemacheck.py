"""The standard-library check behind `codi-queue enqueue` agrees with the Structs it is generated from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codi_queue.errors import InvalidOperation
from codi_queue.producers import schemacheck
from codi_queue.schemas import gen
from codi_queue.schemas.registry import OPS

from .conftest import modules_loaded


def test_generated_schema_matches_the_structs() -> None:
    on_disk = Path(gen.SCHEMA_FILE).read_text()
    assert on_disk == gen.render(), "ops.schema.json is stale: run `python -m codi_queue.schemas.gen`"


def test_generated_wire_format_matches_the_structs() -> None:
    on_disk = Path(gen.WIRE_FILE).read_text()
    assert on_disk == gen.render_wire(), "schemas/wire.py is stale: run `python -m codi_queue.schemas.gen`"


def test_an_api_process_checks_vocabularies_without_building_the_json_schema(home: Path) -> None:
    """The vocabulary and scale rules come from the generated wire.py: building them from the
    Struct's JSON Schema cost every API process about half a millisecond of its first enqueue.
    A word outside the vocabulary is still refused, and one inside accepted."""
    import subprocess
    import sys

    from .conftest import ROOT, cli_env

    code = (
        "import msgspec.json\n"
        "def no(*a, **k): raise AssertionError('the JSON schema was built')\n"
        "msgspec.json.schema = no\n"
        "from codi_queue import enqueue\n"
        "from codi_queue.errors import InvalidOperation\n"
        "assert enqueue('self_heal', {'severity': 'high', 'error_pattern': 'p', 'success': True})\n"
        "try:\n"
        "    enqueue('self_heal', {'severity': 'dire', 'error_pattern': 'p', 'success': True})\n"
        "except InvalidOperation as exc:\n"
        "    print(exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env(home),
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "severity" in res.stdout and "dire" in res.stdout


def test_json_records_decode_into_the_structs_with_each_operations_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard-library path builds envelopes from the published layout and versions."""
    from codi_queue.consumer.records import decode_record
    from codi_queue.producers import records
    from codi_queue.schemas import wire

    monkeypatch.setitem(wire.OP_VERSIONS, "tool_event", 7)
    (record,) = records.json_records([("tool_event", {"tool_name": "Bash"}, "op-1"), ("git_event", {}, None)], "t")
    decoded, _ = decode_record(bytes(record), True)
    assert [(e.op, e.v, e.producer) for e in decoded.ops] == [("tool_event", 7, "t"), ("git_event", 1, "t")]
    assert decoded.ops[0].id == "op-1" and decoded.n == 2


def test_both_paths_split_records_by_the_same_exact_rule() -> None:
    from codi_queue.producers.records import batches_within

    envs = [b"x" * 10] * 7
    # 64 bytes of record head, then each envelope's length and a separator.
    assert [len(b) for b in batches_within(envs, 64 + 3 * 11)] == [3, 3, 1]
    assert [len(b) for b in batches_within(envs, 64 + 3 * 11 - 1)] == [2, 2, 2, 1]
    assert [len(b) for b in batches_within([b"y" * 500], 100)] == [1]  # never an empty record


def _msgspec_verdict(op: str, body: Any) -> str | None:
    """What the API decides: the Struct, then our vocabularies and scales (schemas.vocab)."""
    from codi_queue.schemas.vocab import outside

    try:
        item = msgspec.json.decode(json.dumps(body, allow_nan=False).encode(), type=OPS[op].type)
    except msgspec.ValidationError as exc:
        return str(exc)
    refused = outside(op, item)
    return refused[0][1] if refused else None


def _fast_verdict(op: str, body: Any) -> str | None:
    try:
        out = schemacheck.check(op, body)
    except InvalidOperation as exc:
        return exc.reason
    # What passed must decode into the Struct as the consumer will decode it.
    msgspec.json.decode(json.dumps(out).encode(), type=OPS[op].type)
    return None


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.text(min_size=199, max_size=202),
    st.sampled_from(["success", "commit", "user", "pending", "medium", "2024-01-02T03:04:05Z", "1700000000"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    op = draw(st.sampled_from(sorted(OPS)))
    fields = [f.name for f in msgspec.structs.fields(OPS[op].type)]
    keys = draw(st.lists(st.sampled_from([*fields, "unknown_field"]), unique=True, max_size=len(fields) + 1))
    return op, {k: draw(values) for k in keys}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_same_verdict_as_msgspec(case: tuple[str, dict[str, Any]]) -> None:
    op, body = case
    ours = _fast_verdict(op, body)
    theirs = _msgspec_verdict(op, body)
    assert (ours is None) == (theirs is None), f"{op} {body!r}: schemacheck {ours!r} vs msgspec {theirs!r}"


@pytest.mark.parametrize(
    ("op", "body", "field", "reason"),
    [
        ("tool_event", {"success": True}, "tool_name", "Object missing required field `tool_name`"),
        ("tool_event", {"tool_name": "x", "success": 1}, "success", "Expected `bool`, got `int`"),
        ("session_outcome", {"messages_count": "12"}, "messages_count", "Expected `int | null`, got `str`"),
        ("session_outcome", {"outcome": "great"}, "outcome", "Invalid enum value 'great'"),
        ("session_outcome", {"quality": 9}, "quality", "Expected a value in [1.0, 5.0], got 9"),
        ("tool_event", {"tool_name": "", "success": True}, "tool_name", "Expected `str` of length >= 1"),
    ],
)
def test_messages_read_like_msgspec(op: str, body: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidOperation) as info:
        schemacheck.check(op, body)
    assert info.value.field == field and info.value.reason == reason
    assert reason in (_msgspec_verdict(op, body) or "")


def test_enqueue_command_never_imports_msgspec(home: Path) -> None:
    code = (
        "from codi_queue.cli import main\n"
        "assert main(['enqueue', 'tool_event', '{\"tool_name\": \"x\", \"success\": true}']) == 0\n"
        "assert main(['enqueue', 'tool_event', '{\"tool_name\": \"x\"}']) == 2\n"
    )
    assert modules_loaded(home, code, ("msgspec", "argparse", "apsw", "psycopg")) == []
