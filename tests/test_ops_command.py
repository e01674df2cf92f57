"""``codi-queue ops``: every operation and field, generated from the Structs, so it cannot go stale."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from codi_queue.schemas.registry import OPS

from .conftest import run_cli


def test_every_operation_and_every_field_is_described(home: Path) -> None:
    res = run_cli(home, "ops", "--json")
    assert res.returncode == 0, res.stderr
    described = {d["op"]: d for d in json.loads(res.stdout)}
    assert set(described) == set(OPS)
    for name, spec in OPS.items():
        fields = {f["name"]: f for f in described[name]["fields"]}
        assert set(fields) == {f.name for f in msgspec.structs.fields(spec.type)}, name
        assert described[name]["table"] == spec.table and described[name]["tier"] == spec.tier
        for f in msgspec.structs.fields(spec.type):
            assert fields[f.name]["required"] == (f.required and f.name != "timestamp"), (name, f.name)


def test_one_operation_in_detail(home: Path) -> None:
    d = json.loads(run_cli(home, "ops", "session_outcome", "--json").stdout)
    fields = {f["name"]: f for f in d["fields"]}
    assert fields["outcome"]["limits"]["one_of"] == ["success", "partial", "failure", "abandoned"]
    assert fields["quality"]["limits"]["scale"] == [1.0, 5.0] and fields["quality"]["column_names"] == ["quality_score"]
    message = {f["name"]: f for f in json.loads(run_cli(home, "ops", "message", "--json").stdout)["fields"]}
    assert message["content"]["private"] is True and message["session_id"]["private"] is False
    assert "upsert on decision_id" in run_cli(home, "ops", "decision").stdout
    text = run_cli(home, "ops", "git_event").stdout
    assert "legacy names: type, event" in text and text.startswith("git_event: sessions tier")


def test_a_misspelt_operation_gets_a_suggestion_and_exit_2(home: Path) -> None:
    res = run_cli(home, "ops", "session_outcom")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(
        "codi-queue: unknown operation 'session_outcom' (did you mean `session_outcome`?); `codi-queue ops` lists them: "
    )
    assert "tool_event" in res.stderr and res.stderr.count("\n") == 1


def test_enqueue_help_points_to_ops(home: Path) -> None:
    assert "codi-queue ops" in run_cli(home, "enqueue", "--help").stdout


def test_a_misspelt_field_gets_a_suggestion_on_both_paths(home: Path) -> None:
    import pytest

    from codi_queue import enqueue
    from codi_queue.errors import InvalidOperation

    res = run_cli(home, "enqueue", "tool_event", '{"tool_nam": "Bash", "success": true}')
    assert res.returncode == 2 and "unknown field `tool_nam` (did you mean `tool_name`?)" in res.stderr
    with pytest.raises(InvalidOperation, match=r"did you mean `tool_name`\?"):
        enqueue("tool_event", {"tool_nam": "Bash", "success": True}, home=str(home))
    far = run_cli(home, "enqueue", "tool_event", '{"zzz": 1, "success": true}')
    assert far.returncode == 2 and "did you mean" not in far.stderr
