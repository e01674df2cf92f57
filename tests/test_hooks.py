"""Claude Code hooks: every event type through the real command ends as rows, silently, exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths
from codi_queue.producers.hooks import ORPHAN_REASON, operations_for
from codi_queue.producers.install import HOOK_EVENTS, SYNC_EVENTS, merge_settings

from .conftest import ROOT, cli_env, modules_loaded, named_rows, query

BASE = {"session_id": "sess-1", "transcript_path": "/tmp/t.jsonl", "cwd": "/work", "permission_mode": "default"}

PAYLOADS = [
    {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_use_id": "toolu_A"},
    {"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_use_id": "toolu_A",
     "tool_response": {"stdout": "x", "stderr": "", "interrupted": False}},
    {"hook_event_name": "PreToolUse", "tool_name": "Edit", "tool_input": {"file_path": "/a"}, "tool_use_id": "toolu_B"},
    {"hook_event_name": "PostToolUse", "tool_name": "Edit", "tool_input": {"file_path": "/a"}, "tool_use_id": "toolu_B",
     "tool_response": {"filePath": "/a", "oldString": "a", "newString": "b", "structuredPatch": []}},
    {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "sleep 99"}, "tool_use_id": "toolu_C"},
    {"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {"command": "sleep 99"}, "tool_use_id": "toolu_C",
     "tool_response": {"stdout": "", "stderr": "", "interrupted": True}},
    {"hook_event_name": "PreToolUse", "tool_name": "Write", "tool_input": {"file_path": "/denied"}, "tool_use_id": "toolu_D"},
    {"hook_event_name": "UserPromptSubmit", "prompt": "fix the bug"},
    {"hook_event_name": "Notification", "message": "Claude needs permission", "notification_type": "permission_prompt"},
    {"hook_event_name": "PreCompact", "trigger": "auto", "custom_instructions": ""},
    {"hook_event_name": "SubagentStop", "stop_hook_active": False, "agent_id": "a1", "agent_type": "Explore",
     "agent_transcript_path": "/tmp/a.jsonl", "last_assistant_message": "done"},
    {"hook_event_name": "Stop", "stop_hook_active": False, "last_assistant_message": "all done"},
    {"hook_event_name": "SessionStart", "source": "startup", "model": "claude-sonnet"},
    {"hook_event_name": "SessionEnd", "reason": "prompt_input_exit"},
    {"hook_event_name": "SomethingNew", "brand_new_field": {"nested": [1, 2]}, "prompt_id": "p1"},
]


def _hook(home: Path, payload: object) -> subprocess.CompletedProcess[bytes]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return subprocess.run(
        [sys.executable, "-m", "codi_queue", "hook"], input=data, capture_output=True, env=cli_env(home), timeout=60
    )


def test_every_event_type_becomes_rows_with_nothing_on_stdout(home: Path, paths: Paths) -> None:
    for payload in PAYLOADS:
        res = _hook(home, {**BASE, **payload})
        assert res.returncode == 0 and res.stdout == b"", (payload["hook_event_name"], res.stderr)
    Consumer(paths).run(once=True)
    tools = {r["tool_use_id"]: r for r in named_rows(paths, "sessions", "SELECT * FROM tool_events")}
    assert set(tools) == {"toolu_A", "toolu_B", "toolu_C", "toolu_D"}
    a, b, c, d = (tools[f"toolu_{k}"] for k in "ABCD")
    assert (a["tool_name"], a["success"], a["session_id"]) == ("Bash", 1, "sess-1") and a["duration_ms"] is not None
    assert b["success"] == 1
    assert (c["success"], c["error_message"]) == (0, "interrupted")
    assert (d["success"], d["error_message"]) == (0, ORPHAN_REASON)  # Pre only: swept at Stop
    kinds = sorted(r[0] for r in query(paths, "sessions", "SELECT event_type FROM activity_events WHERE session_id = 'sess-1'"))
    assert kinds == sorted(["prompt", "notification", "pre_compact", "subagent_stop", "stop", "session_start",
                            "session_end", "something_new"])
    (data,) = query(paths, "sessions", "SELECT data FROM activity_events WHERE event_type = 'prompt'")[0]
    assert json.loads(data)["prompt"] == "fix the bug"
    report = collect(paths)
    assert report["dead_letters"] == 0 and report["last_error"] is None


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'{"hook_event_name": 5}', b"\xff\xfe"])
def test_malformed_payloads_exit_zero_and_are_logged(home: Path, paths: Paths, payload: bytes) -> None:
    res = _hook(home, payload)
    assert res.returncode == 0 and res.stdout == b""
    if payload == b'{"hook_event_name": 5}':
        return  # a valid object with an odd event name is recorded as an activity, not an error
    report = collect(paths)
    assert report["last_error"]["source"] == "hook"
    assert report["producer_errors"] == 1  # a payload the hook could not record is counted, not only the last one


def test_hook_path_never_imports_msgspec_or_argparse(home: Path) -> None:
    code = (
        "import sys, io\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(b'{\"hook_event_name\": \"Stop\", \"session_id\": \"s\"}'))\n"
        "from codi_queue.cli import main\n"
        "assert main(['hook']) == 0\n"
    )
    heavy = ("msgspec", "argparse", "apsw", "watchdog", "sqlite3", "asyncio", "psycopg",
             # what persist-queue's module imports but a put never uses, and what our own
             # modules need only for annotations or rare paths (issue 11: start-up ≤ 3×)
             "typing", "logging", "tempfile", "shutil", "traceback", "random")
    # Nor the json package, whose pure-Python fallbacks import re, and re enum and
    # functools: 8 ms of a 10 ms interpreter here (codi_queue.jsontext instead).
    assert modules_loaded(home, code, (*heavy, "json", "re", "enum")) == []
    enqueue = "from codi_queue.cli import main\nassert main(['enqueue', 'tool_event', '{\"tool_name\": \"Bash\", \"success\": true}']) == 0\n"
    assert modules_loaded(home, enqueue, (*heavy[1:], "json", "re", "enum")) == []


def test_pre_and_post_pair_by_tool_use_id(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert operations_for({**BASE, **PAYLOADS[0]}, state, now=100.0) == []
    ((op, body, _),) = operations_for({**BASE, **PAYLOADS[1]}, state, now=100.25)
    assert op == "tool_event" and body["duration_ms"] == 250 and body["success"] is True
    assert os.listdir(os.path.join(state, "inflight")) == []


def test_post_whose_pre_never_comes_is_still_recorded(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert operations_for({**BASE, **PAYLOADS[1]}, state, now=5.0) == []  # its Pre may still come (async hooks)
    stop = {"hook_event_name": "Stop", "stop_hook_active": False}
    ops = operations_for({**BASE, **stop}, state, now=5.5)
    assert [op for op, _, _ in ops] == ["activity_event"]  # within the grace: not yet
    ops = operations_for({**BASE, **stop}, state, now=30.0)
    ((_, body, _),) = [o for o in ops if o[0] == "tool_event"]
    assert "duration_ms" not in body and body["tool_name"] == "Bash" and body["success"] is True
    assert os.listdir(os.path.join(state, "inflight")) == []
    assert [o for o in operations_for({**BASE, **stop}, state, now=90.0) if o[0] == "tool_event"] == []


def test_a_post_handled_before_its_pre_makes_one_event(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert operations_for({**BASE, **PAYLOADS[5]}, state, now=100.25) == []  # the interrupted call's Post
    ((op, body, _),) = operations_for({**BASE, **PAYLOADS[4]}, state, now=100.30)
    assert op == "tool_event" and body["tool_use_id"] == "toolu_C"
    assert body["success"] is False and body["error_message"] == "interrupted"
    assert "duration_ms" not in body  # the order the hooks ran in says nothing about how long the call took
    assert os.listdir(os.path.join(state, "inflight")) == []
    stop = {"hook_event_name": "Stop", "stop_hook_active": False}
    assert [o for o in operations_for({**BASE, **stop}, state, now=1000.0) if o[0] == "tool_event"] == []


def test_a_stop_handled_before_the_last_post_reports_no_orphan(tmp_path: Path) -> None:
    state = str(tmp_path)
    assert operations_for({**BASE, **PAYLOADS[0]}, state, now=100.0) == []
    stop = {"hook_event_name": "Stop", "stop_hook_active": False}
    assert [o[0] for o in operations_for({**BASE, **stop}, state, now=100.5)] == ["activity_event"]
    ((_, body, _),) = operations_for({**BASE, **PAYLOADS[1]}, state, now=100.6)
    assert body["success"] is True and body["duration_ms"] == 600


def test_pre_and_post_hooks_racing_as_real_processes_pair_exactly_once(home: Path, tmp_path: Path) -> None:
    """Claude Code runs async hooks in the background: a Pre and its Post may run at the same moment."""
    import random

    rng = random.Random(7)
    calls = [f"toolu_race{i}" for i in range(30)]
    payloads = []
    for tid in calls:
        pre = {**BASE, **PAYLOADS[0], "tool_use_id": tid}
        post = {**BASE, **PAYLOADS[1], "tool_use_id": tid}
        pair = [pre, post]
        rng.shuffle(pair)
        payloads += pair
    procs = [subprocess.Popen([sys.executable, "-m", "codi_queue", "hook"], env=cli_env(home), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in payloads]
    for proc, payload in zip(procs, payloads):  # all started first, then fed: they run together
        proc.stdin.write(json.dumps(payload).encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    from codi_queue.paths import resolve

    paths = resolve(str(home))
    Consumer(paths).run(once=True)
    found = named_rows(paths, "sessions", "SELECT tool_use_id, success FROM tool_events")
    assert sorted(r["tool_use_id"] for r in found) == sorted(calls)  # each call once: none lost, none twice
    assert all(r["success"] == 1 for r in found)
    assert [n for n in os.listdir(os.path.join(paths.state, "inflight"))] == []


@pytest.mark.parametrize("tool_use_id", [".", "..", "...", "a/../../x", "x+post", "+tmp.1.2", "\ud800", "T" * 300])
def test_any_tool_use_id_pairs_through_a_marker_of_its_own(tmp_path: Path, tool_use_id: str) -> None:
    """Before, "." and ".." named the markers' directory and its parent: the Pre's marker
    could not be written (EBUSY), its temporary file stayed for ever and the pair was lost;
    ids sharing their first 128 characters shared a marker (bug 28)."""
    state = str(tmp_path)
    inflight = os.path.join(state, "inflight")
    twin = tool_use_id[:128] + "-twin"  # same start, another call
    assert operations_for({**BASE, **PAYLOADS[0], "tool_use_id": tool_use_id}, state, now=100.0, problems=[]) == []
    assert operations_for({**BASE, **PAYLOADS[0], "tool_use_id": twin}, state, now=100.5, problems=[]) == []
    problems: list[str] = []
    ((_, body, _),) = operations_for({**BASE, **PAYLOADS[1], "tool_use_id": tool_use_id}, state, now=101.0,
                                     problems=problems)
    assert problems == [] and body["duration_ms"] == 1000
    assert body["tool_use_id"] == (tool_use_id if len(tool_use_id) <= 200 else tool_use_id[:199] + "…")
    assert len(os.listdir(inflight)) == 1  # only the twin's Pre, which its own Post will take
    ((_, twin_body, _),) = operations_for({**BASE, **PAYLOADS[1], "tool_use_id": twin}, state, now=101.0)
    assert twin_body["duration_ms"] == 500 and os.listdir(inflight) == []


def test_identifiers_longer_than_a_name_are_cut_and_the_events_still_land(home: Path, paths: Paths) -> None:
    """A session id, tool name or id longer than the name columns hold made every event of
    the session a dead letter (bug 28): the hook now cuts them, as it cuts text."""
    long = {"session_id": "S" * 5000, "tool_name": "N" * 300, "tool_use_id": "U" * 300}
    for payload in (PAYLOADS[0], PAYLOADS[1], PAYLOADS[7], {"hook_event_name": "E" * 400}):
        assert _hook(home, {**BASE, **payload, **long}).returncode == 0
    Consumer(paths).run(once=True)
    report = collect(paths)
    assert report["dead_letters"] == 0 and report["last_error"] is None
    (tool,) = named_rows(paths, "sessions", "SELECT tool_name, session_id, duration_ms FROM tool_events")
    assert tool["tool_name"] == "N" * 199 + "…" and tool["session_id"] == "S" * 199 + "…"
    assert tool["duration_ms"] is not None
    kinds = [r["event_type"] for r in named_rows(paths, "sessions", "SELECT event_type FROM activity_events")]
    assert sorted(kinds) == sorted(["prompt", "e" + "_e" * 99 + "…"])  # EEE… snake-cased, then cut


def test_a_marker_a_killed_hook_left_half_written_is_swept_once_stale(tmp_path: Path) -> None:
    inflight = tmp_path / "inflight"
    inflight.mkdir()
    (inflight / "+tmp.123.abcd").write_text('{"t": 1')
    os.utime(inflight / "+tmp.123.abcd", (1000.0, 1000.0))
    stop = {**BASE, "hook_event_name": "Stop", "stop_hook_active": False}
    operations_for(stop, str(tmp_path), now=1000.0 + 3600)
    assert os.listdir(inflight) == ["+tmp.123.abcd"]  # it may still be being written
    operations_for(stop, str(tmp_path), now=1000.0 + 2 * 86400)
    assert os.listdir(inflight) == []


_DAMAGED_PRE = {
    "infinite time": '{"t": -Infinity, "session_id": "sess-1", "tool_name": "Bash"}',
    "time not a number": '{"t": NaN, "session_id": "sess-1", "tool_name": "Bash"}',
    "time before 1970": '{"t": -1e18, "session_id": "sess-1", "tool_name": "Bash"}',
    "time past year 5138": '{"t": 1e300, "session_id": "sess-1", "tool_name": "Bash"}',
    "tool name a list": '{"t": 1.0, "session_id": "sess-1", "tool_name": [1, 2]}',
    "tool name too long": '{"t": 1.0, "session_id": "sess-1", "tool_name": "%s"}' % ("B" * 5000),
    "context a number": '{"t": 1.0, "session_id": "sess-1", "tool_name": "Bash", "context": 5}',
    "context too large": '{"t": 1.0, "session_id": "sess-1", "tool_name": "Bash", "context": {"tool_input": "%s"}}'
                         % ("x" * 100_000),
    # no session of its own, so only the sweep of markers older than a day reports it
    "session an object": '{"t": 2.0, "session_id": {"a": 1}, "tool_name": "Bash", "tool_use_id": 7}',
}


@pytest.mark.parametrize("marker", list(_DAMAGED_PRE.values()), ids=list(_DAMAGED_PRE))
@pytest.mark.parametrize("then", ["its Post", "the session's end"])
def test_a_damaged_marker_costs_at_most_a_duration(home: Path, paths: Paths, marker: str, then: str) -> None:
    """Markers are files under the home, read back. An infinite time raised OverflowError in the
    hook that found it (the SessionEnd it was handling lost too); a list as the tool name, a
    context too large, a time before 1970 made the tool call a dead letter. Every value read
    from a marker is now held to the rules the payload's were."""
    import time

    assert _hook(home, {**BASE, "hook_event_name": "SessionStart", "source": "startup"}).returncode == 0
    Path(paths.state).mkdir(mode=0o700, exist_ok=True)
    inflight = Path(paths.state, "inflight")
    inflight.mkdir(mode=0o700, exist_ok=True)
    pre = inflight / "toolu_Z"
    pre.write_text(marker.replace('"t": 1.0', f'"t": {time.time() - 5}').replace('"t": 2.0', f'"t": {time.time() - 2 * 86400}'))
    pre.chmod(0o600)
    if then == "its Post":
        post = {"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_use_id": "toolu_Z", "tool_response": {}}
        assert _hook(home, {**BASE, **post}).returncode == 0
    assert _hook(home, {**BASE, "hook_event_name": "SessionEnd", "reason": "exit"}).returncode == 0
    Consumer(paths).run(once=True)
    report = collect(paths)
    assert (report["dead_letters"], report["producer_errors"], report["last_error"]) == (0, 0, None)
    (tool,) = named_rows(paths, "sessions", "SELECT tool_name, success, tool_use_id FROM tool_events")
    assert tool["tool_use_id"] == "toolu_Z" and tool["success"] == (then == "its Post")
    kinds = sorted(r["event_type"] for r in named_rows(paths, "sessions", "SELECT event_type FROM activity_events"))
    assert kinds == ["session_end", "session_start"]
    assert os.listdir(inflight) == []


def test_huge_fields_are_cut_to_fit(tmp_path: Path) -> None:
    ((_, body, _),) = operations_for({**BASE, "hook_event_name": "UserPromptSubmit", "prompt": "p" * 500_000}, str(tmp_path))
    assert len(body["data"]["prompt"]) == 4000


def test_settings_merge_keeps_what_is_there(tmp_path: Path) -> None:
    existing = {
        "model": "opus",
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "my-guard.sh"}]}]},
    }
    merged = merge_settings(existing, "/x/codi-queue hook")
    assert merged["model"] == "opus"
    assert merged["hooks"]["PreToolUse"][0]["hooks"][0]["command"] == "my-guard.sh"
    assert set(merged["hooks"]) == set(HOOK_EVENTS)
    assert merge_settings(merged, "/x/codi-queue hook") == merged  # idempotent
    moved = merge_settings(merged, "/y/codi-queue hook")  # a reinstall elsewhere updates ours only
    assert json.dumps(moved).count("/y/codi-queue hook") == len(HOOK_EVENTS)
    assert "/x/codi-queue hook" not in json.dumps(moved)


@pytest.mark.parametrize(("content", "said", "status"), [
    (None, "settings.json: not a regular file", 1),  # a FIFO: was waited on for ever
    (b"\xff\xfe{}", "settings.json: not a JSON settings file (", 2),
    (b'{"hooks": {"PreToolUse": [5, {"hooks": 7}]}}', "hooks.PreToolUse[1].hooks is not a list; refusing", 2),
    # Rewritten, 1e400 became Infinity, which is not JSON: Claude Code could no longer read its settings.
    (b'{"model": "x", "limit": 1e400}', "holds a number too large for a double", 2),
    (b'{"limit": NaN}', "not a JSON settings file (NaN is not JSON)", 2),
    (b"[" * 100_000 + b"]" * 100_000, "not a JSON settings file (nested too deeply to read)", 2),  # was an internal error
])
def test_install_hooks_refuses_a_settings_file_it_cannot_read_as_settings(home: Path, tmp_path: Path,
                                                                           content: bytes | None, said: str,
                                                                           status: int) -> None:
    """Before, a FIFO hung install-hooks and a hook list of another shape ended in an internal error."""
    settings = tmp_path / "settings.json"
    if content is None:
        os.mkfifo(settings)
    else:
        settings.write_bytes(content)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-hooks", str(settings)], capture_output=True,
                         text=True, env=cli_env(home), timeout=60)
    assert res.returncode == status and said in res.stderr and "internal error" not in res.stderr, res.stderr
    assert content is None or settings.read_bytes() == content  # untouched


def test_install_hooks_dry_run_backup_and_rerun(home: Path, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"theme": "dark"}))
    run = lambda *a: subprocess.run([sys.executable, "-m", "codi_queue", "install-hooks", str(settings), *a],  # noqa: E731
                                    capture_output=True, text=True, env=cli_env(home), timeout=60)
    dry = run("--dry-run")
    assert dry.returncode == 0 and "+    \"PreToolUse\"" in dry.stdout.replace("'", '"') or '"PreToolUse"' in dry.stdout
    assert json.loads(settings.read_text()) == {"theme": "dark"}
    res = run()
    assert res.returncode == 0 and "backup" in res.stdout
    installed = json.loads(settings.read_text())
    assert installed["theme"] == "dark" and set(installed["hooks"]) == set(HOOK_EVENTS)
    assert list(tmp_path.glob("settings.json.bak-*"))
    again = run()
    assert "already installed" in again.stdout


def test_install_hooks_keeps_a_settings_file_that_is_the_user_s_link(home: Path, tmp_path: Path) -> None:
    """~/.claude/settings.json is often a link into a dotfiles repository. It was replaced by a
    file of ours (0600), so the repository's copy no longer was the settings and said nothing."""
    dotfiles = tmp_path / "dotfiles" / "settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(json.dumps({"theme": "dark"}))
    dotfiles.chmod(0o644)
    settings = tmp_path / "claude" / "settings.json"
    settings.parent.mkdir()
    settings.symlink_to(dotfiles)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-hooks", str(settings)], capture_output=True,
                         text=True, env=cli_env(home), timeout=60)
    assert res.returncode == 0, res.stderr
    assert settings.is_symlink() and os.readlink(settings) == str(dotfiles)
    installed = json.loads(dotfiles.read_text())
    assert installed["theme"] == "dark" and set(installed["hooks"]) == set(HOOK_EVENTS)
    assert dotfiles.stat().st_mode & 0o777 == 0o644
    assert json.loads(next(settings.parent.glob("settings.json.bak-*")).read_text()) == {"theme": "dark"}


def test_the_ops_snippet_lists_the_same_events() -> None:
    snippet = json.loads((ROOT / "ops" / "claude-hooks.json").read_text())
    assert set(snippet["hooks"]) == set(HOOK_EVENTS)
    for event, entries in snippet["hooks"].items():
        assert ("matcher" in entries[0]) == HOOK_EVENTS[event]
        assert entries[0]["hooks"][0].get("async", False) == (event not in SYNC_EVENTS)


def test_our_hooks_run_in_the_background_and_others_stay_as_they_are() -> None:
    guard = {"type": "command", "command": "my-guard.sh"}  # a blocking hook of another tool
    old = {"type": "command", "command": "/old/codi-queue hook", "timeout": 10}  # an install from before async
    settings = {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [guard]}, {"matcher": "*", "hooks": [old]}],
                          "SessionEnd": [{"hooks": [{**old, "async": True}]}]}}
    merged = merge_settings(settings, "/x/codi-queue hook")
    assert merged["hooks"]["PreToolUse"][0]["hooks"] == [guard]
    for event in HOOK_EVENTS:
        ours = [h for e in merged["hooks"][event] for h in e["hooks"] if h["command"] == "/x/codi-queue hook"]
        assert len(ours) == 1 and ours[0].get("async", False) == (event != "SessionEnd"), event
    assert merge_settings(merged, "/x/codi-queue hook") == merged
