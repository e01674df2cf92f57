"""One rule per value class, the same at every entry point, decided at enqueue (issue: hardening).

Text that is not valid Unicode is stored with U+FFFD; numbers too large for a
double are kept as their literal text inside free-form JSON and refused in
typed fields; timestamps outside [1970, 5138) are refused. Whatever still
reaches the consumer (a hostile spool) becomes a dead letter or a row: it
never stops the consumer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue import InvalidOperation, enqueue
from codi_queue.paths import Paths, resolve
from codi_queue.producers.records import append_records
from codi_queue.queue.frame import JsonRecord

from .conftest import cli_env, query, run_cli

SURROGATE_LINE = '{"tool_name": "emoji \\ud83d", "success": true, "context": {"k\\udc00": "v\\ud83d"}}'


def _run(paths: Paths) -> None:
    proc = subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=cli_env(Path(paths.home)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _tool_names(paths: Paths) -> list[str]:
    return [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY id")]


def test_a_lone_surrogate_is_replaced_at_every_entry_point(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "tool_event", SURROGATE_LINE).returncode == 0
    assert run_cli(home, "enqueue", "tool_event", "-", stdin=SURROGATE_LINE + "\n").returncode == 0
    hook = json.dumps({"session_id": "s\ud83d", "hook_event_name": "UserPromptSubmit", "prompt": "cut \ud83d"})
    assert run_cli(home, "hook", stdin=hook).returncode == 0
    legacy = tmp_path / "tool-usage.jsonl"
    legacy.write_text('{"tool": "legacy \\ud83d", "success": true}\n')
    assert run_cli(home, "import", str(legacy)).returncode == 0
    assert enqueue("tool_event", {"tool_name": "api \ud83d", "success": True}, home=str(home)) is True
    producer = subprocess.run([sys.executable, "-m", "codi_queue", "enqueue", "--producer", b"bad\xff".decode(
        "utf-8", "surrogateescape"), "tool_event", '{"tool_name": "argv", "success": true}'],
        env=cli_env(home), capture_output=True, timeout=60)
    assert producer.returncode == 0, producer.stderr
    _run(paths)
    names = _tool_names(paths)
    assert names == ["emoji \ufffd", "emoji \ufffd", "legacy \ufffd", "api \ufffd", "argv"]
    (ctx,) = {r[0] for r in query(paths, "sessions", "SELECT context FROM tool_events WHERE context IS NOT NULL")}
    assert json.loads(ctx) == {"k\ufffd": "v\ufffd"}
    prompts = query(paths, "sessions", "SELECT data, session_id FROM activity_events")
    assert "cut \ufffd" in prompts[0][0] and prompts[0][1] == "s\ufffd"
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]


def test_invalid_utf8_bytes_are_replaced_on_every_stdin_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    raw = b'{"tool_name": "bytes \xff\xfe", "success": true}\n'
    env = cli_env(home)
    for args in (["enqueue", "tool_event", "-"],):
        proc = subprocess.run([sys.executable, "-m", "codi_queue", *args], input=raw, env=env, capture_output=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
    hook = b'{"session_id": "s", "hook_event_name": "UserPromptSubmit", "prompt": "p \xff"}'
    assert subprocess.run([sys.executable, "-m", "codi_queue", "hook"], input=hook, env=env, timeout=60).returncode == 0
    legacy = tmp_path / "tool-usage.jsonl"
    legacy.write_bytes(b'{"tool": "legacy \xc3", "success": true}\n')
    assert run_cli(home, "import", str(legacy)).returncode == 0
    _run(paths)
    assert _tool_names(paths) == ["bytes \ufffd\ufffd", "legacy \ufffd"]
    assert "p \ufffd" in query(paths, "sessions", "SELECT data FROM activity_events")[0][0]


def test_a_byte_order_mark_before_the_json_is_skipped_at_every_entry_point(tmp_path: Path) -> None:
    """A file saved by a Windows editor, or files joined with cat, start a line with a UTF-8
    byte-order mark: json refuses it, so the first line of such a legacy file became a dead
    letter that replay could never apply. It marks the encoding, not content, and is skipped."""
    home = tmp_path / "home"
    paths = resolve(str(home))
    bom = b"\xef\xbb\xbf"
    env = cli_env(home)
    stdin = bom + b'{"tool_name": "stdin", "success": true}\r\n'
    for args, data in ((["enqueue", "tool_event", "-"], stdin), (["hook"], bom + b'{"hook_event_name": "Stop"}'),
                       (["enqueue", "tool_event", '\ufeff{"tool_name": "argument", "success": true}'], b"")):
        proc = subprocess.run([sys.executable, "-m", "codi_queue", *args], input=data, env=env, capture_output=True,
                              timeout=60)
        assert proc.returncode == 0 and not proc.stderr, (args, proc.stderr)
    legacy = tmp_path / "tool-usage.jsonl"
    legacy.write_bytes(bom + b'{"tool": "first line", "success": true}\r\n' + bom + b'{"tool": "joined", "success": true}\n')
    res = run_cli(home, "import", str(legacy))
    assert res.returncode == 0 and "2 enqueued" in res.stdout, res.stdout + res.stderr
    _run(paths)
    assert sorted(_tool_names(paths)) == ["argument", "first line", "joined", "stdin"]
    assert query(paths, "sessions", "SELECT event_type FROM activity_events") == [("stop",)]


def test_no_record_in_the_spool_can_stop_the_consumer(tmp_path: Path) -> None:
    """Hostile records written straight into the spool: each is a row or a dead letter, the rest commit."""
    paths = resolve(str(tmp_path / "home"))
    assert enqueue("tool_event", {"tool_name": "before", "success": True}, home=paths.home)
    env = '["0190a1b2-0000-7000-8000-00000000000{n}","tool_event",1,1.0,"p",{body}]'
    bodies = [
        b'{"tool_name":"raw \xff bytes","success":true}',          # invalid UTF-8 inside a JSON record
        b'{"tool_name":"\\ud83d","success":true}',                 # a lone surrogate escape
        b'{"tool_name":"big","success":true,"context":{"n":1e400}}',  # a number no double holds
        b'{"tool_name":"big2","success":true,"duration_ms":1e400}',   # the same in a typed field
        b'{"tool_name":"nest","success":true,"context":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"tool_name":"ts","success":true,"timestamp":' + b"9" * 400 + b"}",
    ]
    records = [JsonRecord(b"[1,1.0,[" + env.format(n=n, body="{body}").encode().replace(b"{body}", body) + b"]]")
               for n, body in enumerate(bodies)]
    records.append(b"\x93\x01\xcb" + b"\x00" * 3)  # MessagePack cut short
    records.append(JsonRecord(b"[1,1.0,[[\"x\",\"tool_event\",1,1.0,\"\xff\",{}]]]"))
    append_records(paths, records)
    assert enqueue("tool_event", {"tool_name": "after", "success": True}, home=paths.home)
    _run(paths)
    names = _tool_names(paths)
    assert names[0] == "before" and names[-1] == "after"
    assert "raw \ufffd bytes" in names and "\ufffd" in names and "big" in names
    (ctx,) = query(paths, "sessions", "SELECT context FROM tool_events WHERE tool_name = 'big'")[0]
    assert json.loads(ctx) == {"n": "1e400"}
    dead = query(paths, "sessions", "SELECT count(*) FROM cq_dead_letters")[0][0]
    dead += query(paths, "state", "SELECT count(*) FROM cq_dead_letters")[0][0]
    assert dead == len(bodies) + 2 - 3  # big2, nest, ts, the cut record and the bad envelope


@pytest.mark.parametrize("body,field", [
    ('{"tool_name":"x","success":true,"duration_ms":1e400}', "duration_ms"),
    ('{"tool_name":"x","success":true,"timestamp":1e400}', "timestamp"),
    ('{"tool_name":"x","success":true,"timestamp":' + "1" * 400 + "}", "timestamp"),
    ('{"tool_name":"x","success":true,"timestamp":"9999-12-31T23:59:59"}', "timestamp"),
    ('{"tool_name":"x","success":true,"timestamp":"1960-01-01"}', "timestamp"),
])
def test_values_out_of_range_are_refused_at_enqueue_everywhere(tmp_path: Path, body: str, field: str) -> None:
    home = tmp_path / "home"
    res = run_cli(home, "enqueue", "tool_event", body)
    assert res.returncode == 2 and f"field {field}" in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(InvalidOperation) as err:
        enqueue("tool_event", json.loads(body), home=str(home))
    assert err.value.field == field
    legacy = tmp_path / "tool-usage.jsonl"
    legacy.write_text(body + "\n")
    res = run_cli(home, "import", str(legacy))
    assert res.returncode == 2, res.stderr  # every line refused: nothing but the rejection was enqueued
    assert "line 1" in res.stderr and "Traceback" not in res.stderr


def test_a_number_no_double_holds_is_kept_as_text_in_free_form_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"cli","success":true,"context":{"n":1e400}}').returncode == 0
    assert enqueue("tool_event", {"tool_name": "api", "success": True, "context": {"n": float("inf")}}, home=str(home))
    _run(paths)
    rows = dict(query(paths, "sessions", "SELECT tool_name, context FROM tool_events"))
    assert json.loads(rows["cli"]) == {"n": "1e400"}
    assert json.loads(rows["api"]) == {"n": "Infinity"}


@pytest.mark.parametrize("ending", [b"", b"\n"])
def test_import_rejects_a_malformed_last_line_with_its_number(tmp_path: Path, ending: bytes) -> None:
    home = tmp_path / "home"
    legacy = tmp_path / "tool-usage.jsonl"
    legacy.write_bytes(b'{"tool": "a", "success": true}\n{"tool": "b", "success": true}\n{"tool": "c", "succ' + ending)
    res = run_cli(home, "import", str(legacy))
    assert "line 3" in res.stderr, res.stderr
    assert "3 new lines" in res.stdout and "1 rejected" in res.stdout
    _run(resolve(str(home)))
    (reason,) = query(resolve(str(home)), "state", "SELECT reason FROM cq_dead_letters")[0]
    assert "line 3" in reason


def test_bodies_decoded_together_never_shift_onto_other_operations(tmp_path: Path) -> None:
    """The consumer decodes a table's bodies in one call over them joined; a body holding two
    values, or half of one, must not lend values to its neighbours: each is judged alone."""
    import msgspec

    from codi_queue.consumer.apply import Item, apply_items
    from codi_queue.consumer.db import open_tier
    from codi_queue.schemas.envelope import Envelope, new_op_id

    one = msgspec.msgpack.encode({"tool_name": "Read", "success": True, "timestamp": 1768903200})
    two = msgspec.msgpack.encode({"tool_name": "Edit", "success": False, "timestamp": 1768903201})
    half = len(one) // 2

    def items(*bodies: bytes) -> list[Item]:
        return [Item(Envelope(new_op_id(), "tool_event", 1, 0.0, "test", msgspec.Raw(b)), 1) for b in bodies]

    conn = open_tier(str(tmp_path / "sessions.db"), "sessions")
    cases = [(one + two, b""), (one[:half], one[half:] + two), (b"", one + two)]
    for n, bodies in enumerate(cases):
        result = apply_items(conn, f"seg{n}", 1, items(*bodies))
        assert len(result.dead) == 2 and not result.applied, (bodies, result)
    assert conn.execute("SELECT count(*) FROM tool_events").fetchone() == (0,)
    # Sound bodies in the same shape still go through the joined path, in order.
    result = apply_items(conn, "seg9", 1, items(one, two))
    assert result.applied == {"tool_events": 2} and not result.dead
    assert conn.execute("SELECT tool_name FROM tool_events ORDER BY id").fetchall() == [("Read",), ("Edit",)]


def test_bodies_decoded_without_post_init_equal_the_operations_own_structs() -> None:
    """The drain decodes a table's bodies into its Struct's settled twin (no __post_init__) and
    decodes again, as the Struct, every body its producer did not normalise: the values must be
    exactly those of decoding each body as the Struct, whatever the spool holds."""
    import msgspec

    from codi_queue.consumer.apply import Item, _decode_all, _decoder
    from codi_queue.schemas.envelope import Envelope, new_op_id
    from codi_queue.schemas.registry import OPS
    from codi_queue.schemas.types import settled_type

    for spec in OPS.values():
        assert msgspec.json.schema(settled_type(spec.type)) == msgspec.json.schema(spec.type), spec.name
    spec = OPS["activity_event"]
    raw: list[dict[str, object]] = [
        {"event_type": "prompt", "timestamp": 1768903200, "data": '{"settled": true}'},
        {"event_type": "prompt", "timestamp": 1768903200.75},  # not whole seconds
        {"event_type": "prompt", "timestamp": "2026-01-20T10:00:00Z", "data": None},
        {"event_type": "prompt", "data": {"k": [1, 2]}},  # no timestamp, JSON not yet text
        {"event_type": "prompt", "timestamp": 1768903200, "data": {"k": 1}},  # settled time, JSON not yet text
        {"event_type": "prompt", "timestamp": 1768903200123},  # milliseconds
        {"event_type": "prompt", "timestamp": True},
    ]
    for is_json in (False, True):
        encode = msgspec.json.encode if is_json else msgspec.msgpack.encode
        for order in (raw, raw[::-1], raw[:-1], raw[-2::-1], raw[:1] * 3, raw[1:2] * 3):
            items = [Item(Envelope(new_op_id(), spec.name, 1, 0.0, "test", msgspec.Raw(encode(b))), 1, is_json)
                     for b in order]
            expected = []
            for item in items:
                try:
                    expected.append(msgspec.to_builtins(_decoder(spec, is_json).decode(item.env.body)))
                except (msgspec.ValidationError, ValueError):
                    expected.append("refused")
            got = _decode_all(spec, items)
            if "refused" in expected:
                assert got is None  # then each body is decoded alone, and the refused one dead-lettered
                continue
            assert got is not None
            got_values = [msgspec.to_builtins(b) for b in got]
            for body, g, e in zip(order, got_values, expected):  # no timestamp: "now", and a second may pass
                if "timestamp" not in body and isinstance(e, dict) and isinstance(g, dict):
                    assert abs(g.pop("timestamp") - e.pop("timestamp")) <= 2
            assert got_values == expected


def test_a_producer_name_is_cut_like_any_name(tmp_path: Path) -> None:
    """A 10 MB producer= (API) or --producer (CLI) was written whole into every envelope: a
    record past the 32 MiB record limit from one call (session 13)."""
    import os

    home = tmp_path / "home"
    assert enqueue("tool_event", {"tool_name": "api", "success": True}, home=str(home), producer="p" * 10_000_000)
    cli = run_cli(home, "enqueue", "--producer", "q" * 100_000, "tool_event", '{"tool_name": "cli", "success": true}')
    assert cli.returncode == 0, cli.stderr
    spool = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(home / "spool") for f in files)
    assert spool < 100_000, spool
    paths = resolve(str(home))
    _run(paths)
    assert sorted(_tool_names(paths)) == ["api", "cli"]
