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
from codi_queue.producers import fastcheck
from codi_queue.schemas import gen
from codi_queue.schemas.registry import OPS

from .conftest import modules_loaded


def test_generated_schema_matches_the_structs() -> None:
    on_disk = Path(gen.SCHEMA_FILE).read_text()
    assert on_disk == gen.render(), "ops.schema.json is stale: run `python -m codi_queue.schemas.gen`"


def test_lite_records_carry_every_operations_version() -> None:
    from codi_queue.producers.lite import OP_VERSION

    assert {spec.version for spec in OPS.values()} == {OP_VERSION}


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
        out = fastcheck.check(op, body)
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
    assert (ours is None) == (theirs is None), f"{op} {body!r}: fastcheck {ours!r} vs msgspec {theirs!r}"


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
        fastcheck.check(op, body)
    assert info.value.field == field and info.value.reason == reason
    assert reason in (_msgspec_verdict(op, body) or "")


def test_enqueue_command_never_imports_msgspec(home: Path) -> None:
    code = (
        "from codi_queue.cli import main\n"
        "assert main(['enqueue', 'tool_event', '{\"tool_name\": \"x\", \"success\": true}']) == 0\n"
        "assert main(['enqueue', 'tool_event', '{\"tool_name\": \"x\"}']) == 2\n"
    )
    assert modules_loaded(home, code, ("msgspec", "argparse", "apsw", "psycopg")) == []
