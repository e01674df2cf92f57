"""Transcripts, the state.json mirror, the session registry and skill adoption."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue
from codi_queue.producers.statedirs import mirror_state_dirs
from codi_queue.producers.transcripts import import_transcripts
from codi_queue.queries import skill_adoption

from .conftest import ROOT, cli_env, query, run_cli, wait_until

FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"


def _projects_tree(tmp_path: Path) -> Path:
    """Claude Code's layout: projects/<project>/<session>.jsonl and <session>/subagents/agent-<id>.jsonl."""
    root = tmp_path / "projects"
    proj = root / "-home-dev-spotter"
    (proj / "sess-b" / "subagents").mkdir(parents=True)
    shutil.copy(FIXTURES / "short.jsonl", proj / "sess-a.jsonl")
    shutil.copy(FIXTURES / "tool_heavy.jsonl", proj / "sess-b.jsonl")
    shutil.copy(FIXTURES / "subagent.jsonl", proj / "sess-b" / "subagents" / "agent-1.jsonl")
    return root


def _independent_token_count() -> tuple[int, list[int]]:
    """Count usage with nothing but json: once per message.id + requestId, the response's final line."""
    final: dict[tuple[str, str], list[int]] = {}
    for name in ("short.jsonl", "tool_heavy.jsonl", "subagent.jsonl"):
        for line in (FIXTURES / name).read_text().splitlines():
            obj = json.loads(line)
            if obj.get("type") == "assistant":
                usage = obj["message"]["usage"]
                final[(obj["message"]["id"], obj["requestId"])] = [
                    usage["input_tokens"], usage["output_tokens"],
                    usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"],
                ]
    return len(final), [sum(v[i] for v in final.values()) for i in range(4)]


def test_fixture_transcripts_give_the_independent_token_totals(tmp_path: Path, home: Path, paths: Paths) -> None:
    root = _projects_tree(tmp_path)
    first = run_cli(home, "import-transcripts", str(root))
    assert first.returncode == 0 and "3 transcripts" in first.stdout
    again = run_cli(home, "import-transcripts", str(root))
    assert "0 new lines, 0 operations" in again.stdout
    assert run_cli(home, "run", "--once").returncode == 0
    responses, totals = _independent_token_count()
    got = query(paths, "sessions", "SELECT count(*), sum(input_tokens), sum(output_tokens), "
                                   "sum(cache_creation_input_tokens), sum(cache_read_input_tokens) FROM token_economics")
    assert got == [(responses, *totals)]
    roles = dict(query(paths, "sessions", "SELECT role, count(*) FROM messages GROUP BY role"))
    assert roles["user"] > 0 and roles["assistant"] > 0
    sessions = {r[0] for r in query(paths, "sessions", "SELECT DISTINCT session_id FROM messages")}
    assert len(sessions) == 3  # the subagent transcript carries its own session id
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]


def test_transcript_growing_line_by_line_counts_each_response_once(tmp_path: Path, paths: Paths) -> None:
    root = tmp_path / "projects" / "p"
    root.mkdir(parents=True)
    target = root / "s.jsonl"
    lines = (FIXTURES / "subagent.jsonl").read_text().splitlines(keepends=True)
    with open(target, "w") as out:
        for line in lines:
            out.write(line)
            out.flush()
            import_transcripts(paths, str(tmp_path / "projects"), final=False)
    Consumer(paths).run(once=True)
    final: dict[tuple[str, str], int] = {}
    for line in lines:
        obj = json.loads(line)
        if obj.get("type") == "assistant":
            final[(obj["message"]["id"], obj["requestId"])] = obj["message"]["usage"]["output_tokens"]
    assert query(paths, "sessions", "SELECT count(*), sum(output_tokens) FROM token_economics") == [
        (len(final), sum(final.values()))
    ]


def _state(session_dir: Path, state: object) -> None:
    session_dir.mkdir(parents=True, exist_ok=True)
    (session_dir / "state.json").write_text(json.dumps(state))
    old = time.time() - 5  # settled: the mirror debounces files still being written
    os.utime(session_dir / "state.json", (old, old))


def test_state_dirs_mirror_one_way_and_survive_a_malformed_file(tmp_path: Path, home: Path, paths: Paths) -> None:
    root = tmp_path / "sessions"
    state = {
        "project": {"id": "p1", "name": "spotter", "path": "/home/dev/spotter"},
        "session": {"id": "s1", "status": "running", "model": "opus", "cost_usd": 1.5, "input_tokens": 100,
                    "started_at": "2026-01-01T00:00:00Z"},
        "agents": [{"id": "a1", "name": "planner", "status": "done", "cost_usd": 0.5, "output_tokens": 7,
                    "logs": [{"ts": 1767225600, "level": "info", "message": "planned"},
                             {"ts": 1767225601, "level": "warn", "message": "retrying"}]}],
    }
    _state(root / "s1", state)
    (root / "broken").mkdir()
    (root / "broken" / "state.json").write_text("{not json")
    os.utime(root / "broken" / "state.json", (time.time() - 5, time.time() - 5))
    res = run_cli(home, "mirror-state", str(root))
    assert res.returncode == 3 and "broken/state.json: malformed" in res.stderr
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT project_id, name FROM projects") == [("p1", "spotter")]
    assert query(paths, "project", "SELECT session_id, status, cost_usd, input_tokens, started_at FROM sessions") == [
        ("s1", "running", 1.5, 100, 1767225600)
    ]
    assert query(paths, "project", "SELECT agent_id, status, output_tokens FROM agents") == [("a1", "done", 7)]
    # The file changes; a rescan mirrors the change and does not repeat the logs.
    state["session"]["status"] = "finished"  # type: ignore[index]
    _state(root / "s1", state)
    mirror_state_dirs(paths, str(root), rescan=True)
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT status FROM sessions") == [("finished",)]
    assert query(paths, "project", "SELECT message FROM agent_logs ORDER BY timestamp") == [("planned",), ("retrying",)]


def test_agent_logs_without_a_time_of_their_own_are_stored_once_across_rescans(
        tmp_path: Path, paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log entry's id carried the rescan's time when the entry had none, so every rescan (each
    change of the state.json the consumer watches) stored every such entry again."""
    root = tmp_path / "sessions"
    state = {"session": {"id": "s1", "status": "running"},
             "agents": [{"id": "a1", "logs": [{"message": "planned"}, {"level": "warn", "message": "retrying"},
                                              {"message": "planned"}]}]}
    _state(root / "s1", state)
    mirror_state_dirs(paths, str(root), rescan=True)
    Consumer(paths).run(once=True)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    state["session"]["status"] = "finished"  # type: ignore[index]
    _state(root / "s1", state)
    mirror_state_dirs(paths, str(root), rescan=True)
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT status FROM sessions") == [("finished",)]
    assert query(paths, "project", "SELECT message FROM agent_logs ORDER BY id") == [
        ("planned",), ("retrying",), ("planned",)]  # the same message twice in the list is two entries


def _messages(paths: Paths) -> int | None:
    """Transcript messages applied so far (None before the database has its table)."""
    try:
        return int(query(paths, "sessions", "SELECT count(*) FROM messages")[0][0])
    except (apsw.CantOpenError, apsw.SQLError):
        return None


def test_file_names_that_are_not_utf8_are_read_and_said_like_any_other(tmp_path: Path, home: Path,
                                                                        paths: Paths) -> None:
    """A file name is bytes; Python hands one that is not UTF-8 over with surrogates in it. Such a
    name ended ``import`` and ``import-transcripts`` (every file of the tree) in an internal error,
    made ``mirror-state`` call its state.json malformed, stopped the consumer's transcript watch
    on every poll, and lost any consumer log line naming it ("--- Logging error ---")."""
    root = os.fsencode(tmp_path)
    tree = root + b"/projects/p"
    os.makedirs(tree)
    line = {"type": "user", "sessionId": "s1", "timestamp": "2026-01-01T00:00:00Z", "message": {"role": "user"}}
    for n, name in enumerate((b"bad\xff\xfe.jsonl", b"new\nline.jsonl", b"plain.jsonl")):
        with open(tree + b"/" + name, "w") as fp:
            fp.write(json.dumps({**line, "uuid": f"u{n}", "message": {"role": "user", "content": f"m{n}"}}) + "\n")
    legacy = os.fsdecode(root + b"/tool-usage\xff.jsonl")
    Path(legacy).write_text(json.dumps({"tool": "Bash", "success": True}) + "\n")
    sessions = root + b"/sessions"
    os.makedirs(sessions + b"/s\xff1")
    with open(sessions + b"/s\xff1/state.json", "w") as fp:
        json.dump({"session": {"status": "running"}, "agents": [{"id": "a", "logs": [{"message": "hi"}]}]}, fp)
    os.makedirs(sessions + b"/f\xff")
    os.mkfifo(sessions + b"/f\xff/state.json", 0o600)  # said in the consumer's log, by name
    for args in (["import-transcripts", os.fsdecode(root + b"/projects")], ["import", legacy, "--op", "tool_event"],
                 ["import", legacy, "--op", "tool_event"], ["mirror-state", os.fsdecode(sessions)]):
        # the names are printed as they are, bytes and all, as ls would
        res = subprocess.run([sys.executable, "-m", "codi_queue", *args], env=cli_env(home), capture_output=True,
                             timeout=60)
        err = res.stderr.decode("utf-8", "replace")
        assert res.returncode == (3 if args[0] == "mirror-state" else 0) and "internal error" not in err, (args, err)
    assert "malformed" not in err
    home.joinpath("config.toml").write_text(f"[watch]\nstate_dirs = [{json.dumps(os.fsdecode(sessions))}]\n")
    home.joinpath("config.toml").chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.2"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        log = Path(paths.logs, "consumer.log")
        # The FIFO is said when the watch first polls, which can come before the first drain.
        wait_until(lambda: log.exists() and "f\ufffd/state.json" in log.read_text() and _messages(paths) == 3, 30,
                   "the consumer to log the FIFO's name and apply the transcripts")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Logging error" not in err.decode("utf-8", "replace")
    assert "f\ufffd/state.json: not read" in log.read_text()
    assert query(paths, "sessions", "SELECT count(*) FROM messages") == [(3,)]
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(1,)]  # imported twice, stored once
    assert query(paths, "project", "SELECT session_id, state_path FROM sessions") == [
        ("s\ufffd1", os.fsdecode(sessions).replace("\udcff", "\ufffd") + "/s\ufffd1/state.json")]


def test_session_registry_and_skill_adoption_rate(paths: Paths, home: Path) -> None:
    enqueue("session", {"session_id": "s1", "project": "spotter", "branch": "main"}, home=str(home))
    enqueue("session", {"session_id": "s1", "status": "ended"}, home=str(home))
    enqueue("lock", {"resource": "repo:spotter", "session_id": "s1"}, home=str(home))
    enqueue("override", {"scope": "model", "key": "default", "value": "opus"}, home=str(home))
    enqueue("worktree_link", {"worktree_path": "/w/a", "repo": "/r", "session_id": "s1"}, home=str(home))
    for s in ("s1", "s2", "s3", "s4"):
        enqueue("skill_suggestion", {"session_id": s, "skill": "pdf"}, home=str(home))
    enqueue("skill_suggestion", {"session_id": "s1", "skill": "xlsx"}, home=str(home))
    for s in ("s1", "s3"):
        enqueue("skill_invocation", {"session_id": s, "skill": "pdf", "success": True}, home=str(home))
    enqueue("skill_invocation", {"session_id": "s1", "skill": "pdf", "invocations": 2}, home=str(home))  # same key
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT status, project FROM session_registry") == [("ended", None)]
    assert query(paths, "sessions", "SELECT count(*) FROM locks") == [(1,)]
    conn = apsw.Connection(paths.database("sessions"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rates = {r["skill"]: (r["invoked"], r["suggested"], r["rate"]) for r in skill_adoption(conn)}
    finally:
        conn.close()
    assert rates == {"pdf": (2, 4, 0.5), "xlsx": (0, 1, 0.0)}
    res = run_cli(home, "adoption", "--json")
    assert json.loads(res.stdout)[0] == {"skill": "pdf", "suggested": 4, "invoked": 2, "rate": 0.5}


def test_consumer_watches_configured_transcripts_and_state_dirs(tmp_path: Path, home: Path, paths: Paths) -> None:
    from codi_queue.config import load_config

    root = _projects_tree(tmp_path)
    states = tmp_path / "states"
    _state(states / "s9", {"session": {"id": "s9", "status": "running"}})
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch]\ntranscripts = ["{root}"]\nstate_dirs = ["{states}"]\n')
    Consumer(paths, config=load_config(paths)).run(once=True)
    responses, _ = _independent_token_count()
    assert query(paths, "sessions", "SELECT count(*) FROM token_economics") == [(responses,)]
    assert query(paths, "project", "SELECT session_id FROM sessions") == [("s9",)]
    before = query(paths, "sessions", "SELECT count(*) FROM messages")
    Consumer(paths, config=load_config(paths)).run(once=True)  # nothing new: nothing added
    assert query(paths, "sessions", "SELECT count(*) FROM messages") == before


def _line(uuid: str, **extra: object) -> str:
    obj = {"type": "user", "sessionId": "s-hostile", "uuid": uuid, "timestamp": "2026-02-10T21:11:56.906Z",
           "message": {"role": "user", "content": f"said {uuid}"}}
    return json.dumps({**obj, **extra})


def test_a_damaged_line_or_a_fifo_in_a_transcript_tree_costs_only_itself(tmp_path: Path, home: Path,
                                                                         paths: Paths) -> None:
    """Before (bug 30): a backfill stopped at the first line that was not JSON and did not end
    in "}", for that file and every later run, so the lines after it never came in; a FIFO
    named *.jsonl held the import, and a consumer watching the tree, for ever; an ISO time
    outside 1970-5138 was dropped without a count; a session id, model or request id longer
    than a name made a dead letter."""
    root = tmp_path / "projects" / "p"
    root.mkdir(parents=True)
    long = "L" * 300
    (root / "a.jsonl").write_text("\n".join([
        _line("u1"), "torn{\"type\": \"us", _line("u2", timestamp="9999-12-31T23:59:59+14:00"),
        _line("u3", sessionId=long, requestId=long, message={"role": "assistant", "content": "x", "model": long}),
        _line("u4"),
    ]) + "\n" + _line("u5")[:20])  # the last line still being written
    os.mkfifo(root / "b.jsonl")
    (root / "c.jsonl").write_text(_line("u6") + "\n")
    res = run_cli(home, "import-transcripts", str(tmp_path / "projects"), timeout=60)
    assert res.returncode == 0, res.stderr
    assert "2 transcripts, 6 new lines, 4 operations enqueued, 2 unreadable lines skipped" in res.stdout, res.stdout
    assert res.stderr == f"codi-queue: {root / 'b.jsonl'}: not a regular file; passed over\n"
    assert run_cli(home, "run", "--once").returncode == 0
    got = query(paths, "sessions", "SELECT uuid, length(session_id), length(model) FROM messages ORDER BY uuid")
    assert got == [("u1", 9, None), ("u3", 200, 200), ("u4", 9, None), ("u6", 9, None)]
    assert query(paths, "sessions", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    with open(root / "a.jsonl", "a") as fp:  # the last line's newline comes: it is read then
        fp.write(_line("u5")[20:] + "\n")
    again = run_cli(home, "import-transcripts", str(tmp_path / "projects"), timeout=60)
    assert "1 new lines, 1 operations enqueued" in again.stdout, again.stdout


def test_a_consumer_watching_fifos_keeps_draining_and_says_so_once(tmp_path: Path, home: Path,
                                                                   paths: Paths) -> None:
    from codi_queue.config import load_config

    root = tmp_path / "projects"
    root.mkdir()
    os.mkfifo(root / "stuck.jsonl")
    os.mkfifo(tmp_path / "routing-metrics.jsonl")
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch]\ntranscripts = ["{root}"]\n[watch.jsonl]\n'
                                  f'"{tmp_path / "routing-metrics.jsonl"}" = "auto"\n')
    load_config(paths)  # valid
    enqueue("tool_event", {"tool_name": "through", "success": True}, home=str(home))
    # One consumer, two passes that meet the same FIFOs; in a process of its own with a
    # deadline, as a FIFO opened to read waits for a writer for ever.
    code = ("import sys\nfrom codi_queue.config import load_config\nfrom codi_queue.consumer.loop import Consumer\n"
            "from codi_queue.paths import resolve\npaths = resolve(sys.argv[1])\n"
            "consumer = Consumer(paths, config=load_config(paths))\n"
            "consumer.run(once=True)\nconsumer.run(once=True)\n")
    res = subprocess.run([sys.executable, "-c", code, str(home)], env=cli_env(home), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("through",)]
    lines = (home / "logs" / "errors.jsonl").read_text().splitlines()
    messages = [json.loads(line)["message"] for line in lines]
    assert sum("stuck.jsonl: not a regular file" in m for m in messages) == 1, messages
    assert sum("routing-metrics.jsonl" in m and "not a regular file" in m for m in messages) == 1, messages


def test_a_fifo_or_a_link_as_a_state_json_is_passed_over_and_said(tmp_path: Path, home: Path, paths: Paths) -> None:
    """A FIFO named state.json held mirror-state, and a consumer watching the directory, for ever."""
    root = tmp_path / "sessions"
    _state(root / "s1", {"session": {"id": "s1", "status": "running"}})
    (root / "s2").mkdir()
    os.mkfifo(root / "s2" / "state.json")
    (root / "s3").mkdir()
    (root / "s3" / "state.json").symlink_to(root / "s1" / "state.json")
    res = run_cli(home, "mirror-state", str(root), timeout=60)
    assert res.returncode == 3, res.stderr
    assert f"{root / 's2' / 'state.json'}: not read (not a regular file" in res.stderr
    assert f"{root / 's3' / 'state.json'}: not read (" in res.stderr
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "project", "SELECT session_id FROM sessions") == [("s1",)]


def test_the_watcher_reads_only_the_transcripts_that_changed(tmp_path: Path, home: Path, paths: Paths,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every poll opened every transcript of the tree: an idle consumer watching 2,000 of them
    used 12% of a core (session 13). Now a file unchanged since it was read to its end is
    passed over; one that grew is read from where it was left."""
    import codi_queue.producers.transcripts as transcripts
    from codi_queue.config import load_config

    root = _projects_tree(tmp_path)
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch]\ntranscripts = ["{root}"]\n')
    opened: list[str] = []

    class Counting(transcripts.SourceFile):
        def __init__(self, path: str, state_dir: str) -> None:
            opened.append(os.path.basename(path))
            super().__init__(path, state_dir)

    monkeypatch.setattr(transcripts, "SourceFile", Counting)
    consumer = Consumer(paths, config=load_config(paths))
    consumer.run(once=True)
    assert sorted(opened) == ["agent-1.jsonl", "sess-a.jsonl", "sess-b.jsonl"]
    before = query(paths, "sessions", "SELECT count(*) FROM messages")
    opened.clear()
    consumer.run(once=True)
    assert opened == []  # nothing changed: nothing opened
    with open(root / "-home-dev-spotter" / "sess-a.jsonl", "a") as fp:
        fp.write(json.dumps({"type": "user", "sessionId": "s-new", "uuid": "u-new", "timestamp": "2026-02-11T00:00:00Z",
                             "message": {"role": "user", "content": "one more"}}) + "\n")
    consumer.run(once=True)
    assert opened == ["sess-a.jsonl"]
    assert query(paths, "sessions", "SELECT count(*) FROM messages") == [(before[0][0] + 1,)]


def test_a_state_json_whose_append_failed_is_mirrored_on_the_next_poll(tmp_path: Path, home: Path, paths: Paths,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror remembered a state.json as mirrored before its operations were in the spool:
    when that append failed (a full disk), the change was never mirrored until the file changed
    again (session 13)."""
    import codi_queue.producers.records as records
    from codi_queue.errors import SpoolError

    root = tmp_path / "sessions"
    _state(root / "s1", {"session": {"id": "s1", "status": "running"}})
    real = records.append_ops

    def full(*_args: object, **_kwargs: object) -> None:
        raise SpoolError("cannot append to spool: No space left on device")

    monkeypatch.setattr(records, "append_ops", full)
    with pytest.raises(SpoolError):
        mirror_state_dirs(paths, str(root))
    monkeypatch.setattr(records, "append_ops", real)
    assert mirror_state_dirs(paths, str(root)).operations > 0
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT session_id, status FROM sessions") == [("s1", "running")]


def test_a_transcripts_root_holding_the_home_never_reads_codi_queue_s_own_files(tmp_path: Path, home: Path,
                                                                              paths: Paths) -> None:
    """``transcripts = ["~"]`` holds the home: its error log (JSON lines) was read as a transcript,
    and every line logged woke the watch."""
    root = _projects_tree(tmp_path)
    run_cli(home, "enqueue", "tool_event", "{}")  # makes the home
    Path(paths.error_log).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.error_log).write_text(json.dumps({"type": "user", "sessionId": "own", "uuid": "e1",
                                              "timestamp": "2026-01-01T00:00:00Z",
                                              "message": {"role": "user", "content": "ours"}}) + "\n")
    for where in (tmp_path, home, Path(paths.logs)):
        assert import_transcripts(paths, str(where)).files == (3 if where == tmp_path else 0), where
    assert root.exists()
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM messages WHERE session_id = 'own'") == [(0,)]


def test_a_transcript_that_cannot_be_opened_is_said_and_the_rest_of_the_tree_read(tmp_path: Path, home: Path,
                                                                                   paths: Paths) -> None:
    """A link loop (``a.jsonl`` → ``b.jsonl`` → ``a.jsonl``) ended ``import-transcripts`` of the
    whole tree with one line of error, and stopped the consumer's watch at that file on every
    poll: every transcript after it in the walk was never read."""
    root = _projects_tree(tmp_path)
    proj = root / "-home-dev-spotter"
    (proj / "a-loop.jsonl").symlink_to("b-loop.jsonl")
    (proj / "b-loop.jsonl").symlink_to("a-loop.jsonl")
    res = run_cli(home, "import-transcripts", str(root))
    assert res.returncode == 0, res.stderr
    assert "3 transcripts" in res.stdout
    assert res.stderr.count("not read (Too many levels of symbolic links); passed over") == 2
    assert run_cli(home, "run", "--once").returncode == 0
    total, _ = _independent_token_count()
    assert query(paths, "sessions", "SELECT count(*) FROM token_economics") == [(total,)]


def test_a_directory_of_transcripts_that_cannot_be_listed_is_said(tmp_path: Path, paths: Paths,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``os.walk`` passes over a directory it may not list without a word (run as root, the
    tests cannot be refused by permissions: the refusal is made here)."""
    root = _projects_tree(tmp_path)
    hidden = root / "-home-dev-spotter" / "sess-b"
    scandir = os.scandir

    def refusing(path: Any) -> Any:
        if os.fspath(path) == str(hidden):
            raise PermissionError(13, "Permission denied", str(hidden))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    res = import_transcripts(paths, str(root))
    assert res.files == 2  # the subagent's transcript lies in the directory refused
    assert f"{hidden}: not read (Permission denied); passed over" in res.notes
