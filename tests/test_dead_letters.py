"""``codi-queue dead-letters``: what failed, where it came from, and the id replay takes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers.records import append_records
from codi_queue.producers.validate import pack_records
from codi_queue.schemas.envelope import Envelope, Record, new_op_id

from .conftest import cli_env, run_cli


def _two_dead_letters(home: Path, paths: Paths) -> None:
    src = home.parent / "git-activity.jsonl"
    src.write_text(json.dumps({"type": "commit", "repo": "r", "ts": 1_700_000_000}) + "\n{not json\n")
    assert run_cli(home, "import", str(src), "--op", "git_event").returncode in (0, 3)
    # A body our producers would refuse, as an old or foreign writer could leave it: it fails at apply.
    append_records(paths, pack_records("tool_event", [msgspec.msgpack.encode({"op": "tool_event", "success": True})]))
    Consumer(paths).run(once=True)


def test_dead_letters_lists_each_with_its_reason_and_source(home: Path, paths: Paths) -> None:
    _two_dead_letters(home, paths)
    res = run_cli(home, "dead-letters", "--json")
    assert res.returncode == 0, res.stderr
    letters = {d["op"]: d for d in json.loads(res.stdout)}
    assert set(letters) == {"git_event", "tool_event"}
    assert letters["git_event"]["source"].endswith("git-activity.jsonl:2") and letters["git_event"]["tier"] == "state"
    assert letters["tool_event"]["tier"] == "sessions" and "tool_name" in letters["tool_event"]["reason"]
    assert all(d["attempts"] == 1 for d in letters.values())

    human = run_cli(home, "dead-letters", "--op", "tool_event")
    assert human.returncode == 0 and human.stdout.count("\n") == 2
    assert letters["tool_event"]["id"] in human.stdout and "1 dead letters; re-apply with" in human.stdout
    # The listed id is the one replay takes.
    again = run_cli(home, "replay", "--dead-letter", "--id", letters["tool_event"]["id"])
    assert again.returncode == 0, again.stderr


def test_since_filters_and_a_bad_since_is_usage(home: Path, paths: Paths) -> None:
    _two_dead_letters(home, paths)
    assert json.loads(run_cli(home, "dead-letters", "--since", "2999-01-01", "--json").stdout) == []
    bad = run_cli(home, "dead-letters", "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.startswith("codi-queue: --since:") and "Traceback" not in bad.stderr


def test_an_empty_home_has_none(home: Path) -> None:
    home.mkdir(mode=0o700)
    res = run_cli(home, "dead-letters")
    assert res.returncode == 0 and res.stdout == "0 dead letters\n"


def test_replay_subcommands_and_the_old_spellings_agree(home: Path, paths: Paths) -> None:
    _two_dead_letters(home, paths)
    new = run_cli(home, "replay", "dead-letters", "--op", "git_event")
    old = run_cli(home, "replay", "--dead-letter", "--op", "git_event")
    assert new.returncode == old.returncode == 0 and new.stdout == old.stdout
    assert run_cli(home, "replay", "archive").returncode == 0
    dry = run_cli(home, "rebuild", "--dry-run")
    assert dry.returncode == 0 and dry.stdout == run_cli(home, "replay", "--rebuild", "--dry-run").stdout
    for bad in (["replay"], ["replay", "archive", "--dead-letter"], ["replay", "dead-letters", "--rebuild"]):
        res = run_cli(home, *bad)
        assert res.returncode == 2 and res.stderr.startswith("codi-queue: ") and "Traceback" not in res.stderr, bad


def test_a_dead_letter_row_written_by_hand_is_listed_as_it_is(home: Path, paths: Paths) -> None:
    """The listing read its times back as numbers: a row edited by hand (a time that is text)
    ended ``dead-letters`` in an internal error."""
    import apsw

    append_records(paths, pack_records("tool_event", [msgspec.msgpack.encode({"tool_name": 5})]))
    Consumer(paths).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))  # where a body that fails its schema is kept
    conn.execute("UPDATE cq_dead_letters SET last_failed = 'yesterday', attempts = 'many'")
    assert conn.changes() == 1
    conn.close()
    res = run_cli(home, "dead-letters")
    assert res.returncode == 0, res.stderr
    assert "yesterday" in res.stdout and "1 dead letters" in res.stdout


def test_filters_typed_with_bytes_that_are_not_utf8_find_what_the_text_rule_stored(home: Path, paths: Paths) -> None:
    """``--op``/``--id`` are bound into the query: an argument that is not UTF-8 (Python hands
    it over with surrogates) ended ``dead-letters`` and ``replay dead-letters`` in an internal
    error. Names are stored under the text rule, so the filter is read by it too."""
    unknown = Envelope(new_op_id(), "gone\ufffd", 1, time.time(), "test", msgspec.Raw(msgspec.msgpack.encode({})))
    append_records(paths, [msgspec.msgpack.encode(Record(1, time.time(), [unknown]))])  # an op no one knows
    Consumer(paths).run(once=True)
    env = cli_env(home)
    for args in (["dead-letters", "--op", b"gone\xff"], ["dead-letters", "--op", b"\xff\xfe"],
                 ["replay", "dead-letters", "--id", b"\xff"], ["replay", "dead-letters", "--op", b"\xfe"]):
        res = subprocess.run([sys.executable, "-m", "codi_queue", *args], env=env, capture_output=True, timeout=60)
        err = res.stderr.decode("utf-8", "replace")
        assert "internal error" not in err and res.returncode in (0, 1), (args, err)
        if args == ["dead-letters", "--op", b"gone\xff"]:
            assert "gone\ufffd" in res.stdout.decode() and "1 dead letters" in res.stdout.decode()
