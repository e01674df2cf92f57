"""The legacy JSONL bridge: aliases, three timestamp formats, bad lines as dead letters, idempotent re-import,
and the consumer's tailer (partial lines, rotation, truncation, restarts)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from codi_queue.config import ConfigError, load_config
from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect
from codi_queue.paths import Paths
from codi_queue.producers.jsonl import import_file
from codi_queue.schemas.legacy import LEGACY_FIELDS, LEGACY_FILES, from_legacy

import pytest

from .conftest import cli_env, count_when_ready, query, named_rows, run_cli, wait_until

ROUTING = [
    {"ts": 1700000000, "id": "q1", "predicted": "haiku", "actual": "sonnet", "dq": 0.7, "correct": False, "savings": 0.01,
     "query": "what is x"},
    {"timestamp": 1700000001000, "query_id": "q2", "predicted_model": "opus", "actual_model": "opus", "dq_score": 0.9,
     "accuracy": True, "cost_saved": 0.2, "query_text": "y"},
    {"timestamp": "2023-11-14T22:13:22Z", "query_id": "q3", "predicted": "sonnet", "dq": "0.5"},
    "this line is not JSON",
    {"ts": 1700000003, "query_id": "q4", "complexity": 7},
    {"ts": "last tuesday", "query_id": "q5"},
    {"ts": 1700000006, "query_id": "q6", "reasoning": "ok", "unrelated": [1, 2]},
]


def _write(path: Path, rows: list[object], end: str = "\n") -> None:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    path.write_text(text + end)


def test_import_maps_aliases_and_files_bad_lines_as_dead_letters(tmp_path: Path, home: Path, paths: Paths) -> None:
    src = tmp_path / "routing-metrics.jsonl"
    _write(src, ROUTING)
    res = run_cli(home, "import", str(src))
    assert res.returncode == 3  # some lines were rejected, the others enqueued
    errors = [l for l in res.stderr.splitlines() if l.startswith("codi-queue: line")]
    # Complexity on another scale (7 of 10) is the platform's data: stored as given, not refused.
    assert [e.split(":")[1].strip() for e in errors] == ["line 4", "line 6"]
    assert "field timestamp" in errors[1]
    assert "5 enqueued as routing_metric, 2 rejected" in res.stdout
    assert run_cli(home, "run", "--once").returncode == 0
    rows = query(paths, "sessions", "SELECT timestamp, query_id, predicted_model, actual_model, dq_score, accuracy, "
                                    "cost_saved, query_text FROM routing_metrics_events ORDER BY query_id")
    assert rows == [
        (1700000000, "q1", "haiku", "sonnet", 0.7, 0, 0.01, "what is x"),
        (1700000001, "q2", "opus", "opus", 0.9, 1, 0.2, "y"),
        (1700000002, "q3", "sonnet", None, 0.5, 1, None, None),  # accuracy defaults to true
        (1700000003, "q4", None, None, None, 1, None, None),
        (1700000006, "q6", None, None, None, 1, None, None),
    ]
    assert query(paths, "sessions", "SELECT complexity FROM routing_metrics_events WHERE query_id = 'q4'") == [(7.0,)]
    # A key with no column is kept in the row's context, as the platform's backfill keeps extras.
    (ctx,) = query(paths, "sessions", "SELECT context FROM routing_metrics_events WHERE query_id = 'q6'")[0]
    assert json.loads(ctx) == {"unrelated": [1, 2]}
    dead = named_rows(paths, "state", "SELECT op, reason, format FROM cq_dead_letters ORDER BY reason")
    assert len(dead) == 2 and all(d["op"] == "routing_metric" and d["format"] == "rejected" for d in dead)
    assert "line 4" in dead[0]["reason"] and "line 6" in dead[1]["reason"]
    # A second import finds nothing new, and enqueues nothing.
    again = run_cli(home, "import", str(src))
    assert again.returncode == 0 and "0 new lines, 0 enqueued" in again.stdout
    assert collect(paths)["pending"] == 0


@pytest.mark.parametrize("timed", [True, False], ids=["lines with a timestamp", "lines without one"])
def test_reimport_after_lost_offsets_applies_nothing_twice(tmp_path: Path, paths: Paths,
                                                           monkeypatch: pytest.MonkeyPatch, timed: bool) -> None:
    """A line's id depends on what the line holds, never on when it was read: a line without a
    timestamp is stamped with the time of reading, and an id carrying that time stored the line
    again at every re-read (session 14: 3 lines imported three times gave 9 rows)."""
    import time

    src = tmp_path / "tool-usage.jsonl"
    _write(src, [{**({"ts": 1700000000 + i} if timed else {}), "tool": "Bash", "success": True} for i in range(20)])
    import_file(paths, str(src), "tool_event")
    Consumer(paths).run(once=True)
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)  # the re-read comes an hour later
    for f in Path(paths.state, "offsets").iterdir():
        f.unlink()  # the position is gone: everything is read and enqueued again
    result = import_file(paths, str(src), "tool_event")
    assert result.enqueued == 20
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(20,)]


_DAMAGED_POSITIONS = {
    "negative offset": lambda saved: json.dumps({**saved, "offset": -50}),
    "text line number": lambda saved: json.dumps({**saved, "line": "x"}),
    "fractional offset": lambda saved: json.dumps({**saved, "offset": 1.5}),
    "offset as text": lambda saved: json.dumps({**saved, "offset": "7"}),
    "no head": lambda saved: json.dumps({k: v for k, v in saved.items() if k != "head"}),
    "a list": lambda saved: "[1, 2]",
    "not UTF-8": lambda saved: b"\xff\xfe\x00",
    "NaN": lambda saved: '{"path": "x", "offset": NaN}',
}


@pytest.mark.parametrize("damage", list(_DAMAGED_POSITIONS.values()), ids=list(_DAMAGED_POSITIONS))
def test_a_damaged_saved_position_reads_the_file_again_and_stores_nothing_twice(
        tmp_path: Path, home: Path, paths: Paths, damage: object) -> None:
    """A saved position of the wrong shape (a negative offset, a text line number) made every later
    import of its file an "internal error", so no new line of it was ever imported again."""
    src = tmp_path / "tool-usage.jsonl"
    _write(src, [{"tool": f"t{i}", "success": True} for i in range(3)])
    assert run_cli(home, "import", str(src), "--op", "tool_event").returncode == 0
    (store,) = Path(paths.state, "offsets").iterdir()
    text = damage(json.loads(store.read_text()))  # type: ignore[operator]
    store.write_bytes(text if isinstance(text, bytes) else text.encode())
    with src.open("a") as fp:
        fp.write(json.dumps({"tool": "new", "success": True}) + "\n")
    res = run_cli(home, "import", str(src), "--op", "tool_event")
    assert res.returncode == 0, res.stderr
    assert "saved position" in res.stderr and "reading it from the start" in res.stderr
    assert run_cli(home, "run", "--once").returncode == 0
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == [
        "new", "t0", "t1", "t2"]


def test_partial_last_line_waits_for_its_newline(tmp_path: Path, paths: Paths) -> None:
    src = tmp_path / "x.jsonl"
    src.write_text(json.dumps({"ts": 1, "tool": "A", "success": True}) + "\n" + '{"ts": 2, "tool": "B", "succ')
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 1
    with open(src, "a") as fp:
        fp.write('ess": true}\n')
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 1
    Consumer(paths).run(once=True)
    assert sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")) == ["A", "B"]


def test_rotation_and_truncation_are_detected(tmp_path: Path, paths: Paths) -> None:
    src = tmp_path / "tool-usage.jsonl"
    _write(src, [{"ts": 10, "tool": "one", "success": True}, {"ts": 11, "tool": "two", "success": True}])
    import_file(paths, str(src), "tool_event", final=False)
    os.rename(src, tmp_path / "tool-usage.jsonl.1")  # logrotate: a new file takes the name
    _write(src, [{"ts": 12, "tool": "three", "success": True}])
    rotated = import_file(paths, str(src), "tool_event", final=False)
    assert rotated.enqueued == 1 and any("new file" in n for n in rotated.notes)
    with open(src, "w") as fp:  # copytruncate, then a fresh line
        fp.write(json.dumps({"ts": 13, "tool": "four", "success": True}) + "\n")
    truncated = import_file(paths, str(src), "tool_event", final=False)
    assert truncated.enqueued == 1 and truncated.notes
    Consumer(paths).run(once=True)
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == ["four", "one", "three", "two"]


def test_alias_table_covers_every_legacy_file() -> None:
    assert set(LEGACY_FILES.values()) <= set(LEGACY_FIELDS)
    body = from_legacy("session_outcome", {"models_used": ["opus", "haiku"], "messages": [1, 2, 3], "date": "2024-01-02",
                                           "summary": "kept: a column under its own name", "junk": 1},
                       ("summary", "timestamp", "model"))
    assert body == {"model": "opus, haiku", "messages_count": 3, "timestamp": "2024-01-02",
                    "summary": "kept: a column under its own name",
                    "context": {"junk": 1}}  # no column of its own: kept in context, never dropped


def test_config_file_is_validated(home: Path, paths: Paths, tmp_path: Path) -> None:
    assert load_config(paths).exists is False
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text('[watch.jsonl]\n"/x/routing-metrics.jsonl" = "auto"\n"/x/y.jsonl" = "tool_event"\n'
                                  '[watch]\ntranscripts = ["~/t"]\n')
    cfg = load_config(paths)
    assert cfg.jsonl == {"/x/routing-metrics.jsonl": "routing_metric", "/x/y.jsonl": "tool_event"}
    assert cfg.transcripts == [os.path.expanduser("~/t")]
    shown = run_cli(home, "config", "--show")
    assert shown.returncode == 0 and '"/x/y.jsonl" = "tool_event"' in shown.stdout
    Path(paths.config).write_text('[watch.jsonl]\n"/x/y.jsonl" = "nope"\n')
    with pytest.raises(ConfigError, match="unknown operation 'nope'"):
        load_config(paths)
    bad = run_cli(home, "config", "--show")
    assert bad.returncode == 1 and "unknown operation" in bad.stderr


def test_consumer_tails_configured_files_exactly_once_across_restarts(tmp_path: Path, home: Path, paths: Paths) -> None:
    src = tmp_path / "logs" / "recovery-outcomes.jsonl"
    src.parent.mkdir()
    src.write_text("")
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch.jsonl]\n"{src}" = "auto"\n')

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.2"], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows() -> int | None:
        return count_when_ready(paths, "sessions", "SELECT count(*) FROM recovery_events")

    def wait_rows(n: int) -> None:
        wait_until(lambda: rows() == n, 30, f"{n} rows")

    proc = start()
    try:
        with open(src, "a") as fp:
            for i in range(5):
                fp.write(json.dumps({"ts": 1700000000 + i, "type": "timeout", "recovered": True}) + "\n")
            fp.write('{"ts": 1700000099, "type": "half')  # the writer is mid-line
            fp.flush()
        wait_rows(5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with open(src, "a") as fp:
            fp.write('-written", "recovered": false}\n')
        proc = start()
        wait_rows(6)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    types = sorted(r[0] for r in query(paths, "sessions", "SELECT error_type FROM recovery_events"))
    assert types == ["half-written"] + ["timeout"] * 5
    methods = {r[0] for r in query(paths, "sessions", "SELECT recovery_method FROM recovery_events")}
    assert methods == {"auto"}  # the declared default


def test_import_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path, home: Path) -> None:
    import pty

    src = tmp_path / "tool-usage.jsonl"
    _write(src, [{"ts": 1700000000 + i, "tool": "Bash", "success": True} for i in range(50)])
    master, slave = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "codi_queue", "import", str(src)], stderr=slave,
                              stdout=subprocess.PIPE, env=cli_env(home), timeout=60)
        os.close(slave)
        slave = -1
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    assert b"tool-usage.jsonl [" in shown and b"100.0%" in shown
    piped = run_cli(home, "import", str(src))  # not a terminal: no bar, just the summary
    assert "[" not in piped.stderr


def test_a_source_directory_made_or_made_again_after_the_consumer_started_wakes_it(
        tmp_path: Path, home: Path, paths: Paths) -> None:
    """The consumer watched only the source directories that existed when it started: one
    created later, or deleted and created again (another inode at its path), was read only
    by the slow poll, never on a change. Here the poll is an hour away, so only a watch can
    bring the lines in."""
    import shutil

    folder = tmp_path / "later" / "logs"
    src = folder / "recovery-outcomes.jsonl"
    os.makedirs(home, exist_ok=True)
    Path(paths.config).write_text(f'[watch.jsonl]\n"{src}" = "auto"\n')
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "3600"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows() -> int | None:
        return count_when_ready(paths, "sessions", "SELECT count(*) FROM recovery_events")

    try:
        wait_until(lambda: rows() == 0, 60, "the consumer's first pass")  # it has read the sources once
        folder.mkdir(parents=True)  # two levels the consumer could not watch when it started
        _write(src, [{"ts": 1700000000 + i, "type": "timeout", "recovered": True} for i in range(3)])
        wait_until(lambda: rows() == 3, 30, "lines of a directory created after the start")
        shutil.rmtree(folder)
        folder.mkdir()
        _write(src, [{"ts": 1700000100 + i, "type": "crash", "recovered": False} for i in range(2)])
        wait_until(lambda: rows() == 5, 30, "lines of the directory made again")
        with open(src, "a") as fp:  # and the new directory itself is watched, not only its parent
            fp.write(json.dumps({"ts": 1700000200, "type": "hang", "recovered": True}) + "\n")
        wait_until(lambda: rows() == 6, 30, "a line appended in the directory made again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    types = sorted(r[0] for r in query(paths, "sessions", "SELECT error_type FROM recovery_events"))
    assert types == ["crash"] * 2 + ["hang"] + ["timeout"] * 3


def test_import_says_what_the_path_is_when_it_is_not_a_file(home: Path, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "routing-metrics.jsonl")  # a FIFO would have been waited on for ever
    for target, why in ((tmp_path / "routing-metrics.jsonl", "not a regular file"),
                        (tmp_path, "not a regular file"),
                        (tmp_path / "missing.jsonl", "no such file")):
        res = run_cli(home, "import", str(target), "--op", "routing_metric", timeout=30)
        assert res.returncode == 2 and res.stderr == f"codi-queue: {target}: {why}\n"
    res = run_cli(home, "import-transcripts", str(tmp_path / "routing-metrics.jsonl"), timeout=30)
    assert res.returncode == 2 and res.stderr.endswith(": not a directory\n")
    res = run_cli(home, "import-transcripts", str(tmp_path / "gone"), timeout=30)
    assert res.returncode == 2 and res.stderr.endswith(": no such directory\n")
