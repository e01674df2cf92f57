"""Source lines too long to hold: a legacy log that wrote a blob, a writer that never ends its line,
a huge transcript line or state.json. None may take the consumer's memory, stop a file's later
lines, or end a command in an internal error; each is said, with its size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codi_queue.config import load_config
from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths
from codi_queue.producers import sources, statedirs
from codi_queue.producers.jsonl import import_file
from codi_queue.producers.statedirs import mirror_state_dirs
from codi_queue.producers.transcripts import import_transcripts

from .conftest import cli_env, query, run_cli

GOOD = json.dumps({"ts": 1700000000, "tool": "Bash", "success": True})


def _line(n: int) -> str:
    return json.dumps({"ts": 1700000000 + n, "tool": f"T{n}", "success": True})


def _tools(paths: Paths) -> list[str]:
    return [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events ORDER BY timestamp")]


def _dead(paths: Paths) -> list[str]:
    return [r[0] for r in query(paths, "state", "SELECT reason FROM cq_dead_letters")]


def test_a_line_past_the_frame_limit_is_refused_by_its_start_and_memory_stays_small(
        tmp_path: Path, home: Path, paths: Paths) -> None:
    """A 70 MiB line (one spool frame holds 64): ``import`` held it whole, copying it once per
    megabyte read, then ended in an internal error; a 200 MB one took 1 GB and 15 s."""
    src = tmp_path / "tool-usage.jsonl"
    head, tail = b'{"tool": "', b'", "success": true}'
    with open(src, "wb") as fp:
        fp.write(_line(1).encode() + b"\n" + head)
        for _ in range(70):
            fp.write(b"x" * (1 << 20))
        fp.write(tail + b"\n" + _line(3).encode() + b"\n")
    size = len(head) + (70 << 20) + len(tail)
    # The command in a process of its own that reports its peak memory as it exits (VmHWM: the
    # rusage figure would carry this process's own over the exec).
    code = ("import sys\nfrom codi_queue.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0], file=sys.stderr)\n"
            "sys.exit(rc)\n")
    res = subprocess.run([sys.executable, "-c", code, "import", str(src), "--op", "tool_event"], env=cli_env(home),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr  # some lines rejected, the others enqueued
    assert "internal error" not in res.stderr
    assert "2 enqueued as tool_event, 1 rejected" in res.stdout
    assert f"line 2: a line of {size:,} bytes is longer than the 16,777,216 a line may have" in res.stderr
    peak_kib = int(res.stderr.split("VmHWM:")[1].split()[0])
    assert peak_kib < 100 * 1024, peak_kib  # the line never held whole (at most 17 MiB of it)
    assert run_cli(home, "run", "--once").returncode == 0
    assert _tools(paths) == ["T1", "T3"]
    (reason,) = _dead(paths)
    assert f"line 2: a line of {size:,} bytes" in reason and "only its first 65,536 bytes are kept" in reason
    envelope = query(paths, "state", "SELECT length(envelope) FROM cq_dead_letters")[0][0]
    assert envelope < 70_000  # the start of the line, not all of it
    # Replayed, it stays what it was (its start alone is not the line), with the same reason.
    assert run_cli(home, "replay", "dead-letters").returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    assert _dead(paths) == [reason]
    assert _tools(paths) == ["T1", "T3"]


class _CountingReads:
    """Counts the bytes the sources module reads from the file it opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        opener = sources._open_regular

        def counted(path: str) -> Any:
            fp = opener(path)
            read = fp.read

            def reading(n: int = -1) -> bytes:
                got = read(n)
                self.bytes += len(got)
                return got

            fp.read = reading  # type: ignore[method-assign]
            return fp

        monkeypatch.setattr(sources, "_open_regular", counted)


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """The limit at 1 MiB, so that tests pass it with a few megabytes."""
    monkeypatch.setattr(sources, "LINE_MAX", 1 << 20)
    monkeypatch.setattr(statedirs, "LINE_MAX", 1 << 20)
    return 1 << 20


def test_the_tailer_passes_over_a_long_unfinished_line_once_and_files_it_when_it_ends(
        tmp_path: Path, paths: Paths, small_limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "tool-usage.jsonl"
    src.write_text("\n\n" + _line(1) + "\n")
    with open(src, "ab") as fp:
        fp.write(b'{"tool": "' + b"y" * (3 * small_limit))  # no newline yet: still being written
    first = import_file(paths, str(src), "tool_event", final=False)
    assert (first.enqueued, first.rejected) == (1, [])
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 0  # notes how far it looked
    reads = _CountingReads(monkeypatch)
    with open(src, "ab") as fp:
        fp.write(b"y" * small_limit)
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 0
    # Only the line's start (to know it, and again as the new scan is noted) and what was added
    # since: not all of it again.
    assert reads.bytes < small_limit + 2 * sources.LINE_KEPT + 4096, reads.bytes
    with open(src, "ab") as fp:
        fp.write(b'", "success": true}\n' + _line(3).encode() + b"\n")
    last = import_file(paths, str(src), "tool_event", final=False)
    assert last.enqueued == 1 and [e.record for e in last.rejected] == [4]
    size = len('{"tool": "') + 4 * small_limit + len('", "success": true}')
    assert f"a line of {size:,} bytes" in last.rejected[0].reason
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 0  # nothing twice
    Consumer(paths).run(once=True)
    assert _tools(paths) == ["T1", "T3"]
    assert len(_dead(paths)) == 1


def test_a_long_line_among_short_ones_is_cut_wherever_its_newline_falls(
        tmp_path: Path, paths: Paths, small_limit: int) -> None:
    """Long lines ending in the chunk that takes them past the limit, or in a later one, or at
    the very end of the file (no newline, a one-off import), are all refused alike."""
    src = tmp_path / "tool-usage.jsonl"
    sizes = [small_limit + 10, small_limit - 5, 3 * small_limit + 7, small_limit * 2]
    with open(src, "wb") as fp:
        for n, size in enumerate(sizes):
            fp.write(_line(2 * n).encode() + b"\n" + b"z" * size + (b"\n" if n < len(sizes) - 1 else b""))
    res = import_file(paths, str(src), "tool_event")
    assert res.enqueued == 4
    refused = {e.record: e.reason for e in res.rejected}
    assert sorted(refused) == [2, 4, 6, 8]
    assert "not valid JSON" in refused[4]  # just under the limit: read whole, and not JSON
    for line, size in ((2, sizes[0]), (6, sizes[2]), (8, sizes[3])):
        assert f"a line of {size:,} bytes" in refused[line]


def test_a_saved_scan_is_not_taken_for_another_file(tmp_path: Path, paths: Paths, small_limit: int) -> None:
    """Where the last read stopped in a long line belongs to that file at that position: a
    rotated file is read from its start."""
    src = tmp_path / "tool-usage.jsonl"
    src.write_bytes(b"w" * (2 * small_limit))
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 0
    src.unlink()
    src.write_text("".join(_line(n) + "\n" for n in range(3)) + "x" * (3 * small_limit))  # longer than the scan
    assert import_file(paths, str(src), "tool_event", final=False).enqueued == 3


def test_a_transcript_line_too_long_is_counted_and_the_rest_read(tmp_path: Path, paths: Paths,
                                                                 small_limit: int) -> None:
    root = tmp_path / "projects" / "p"
    root.mkdir(parents=True)
    msg = {"type": "user", "sessionId": "s1", "timestamp": "2026-01-01T00:00:00Z"}
    with open(root / "s1.jsonl", "w") as fp:
        fp.write(json.dumps({**msg, "uuid": "u1", "message": {"role": "user", "content": "one"}}) + "\n")
        fp.write(json.dumps({**msg, "uuid": "u2", "message": {"role": "user", "content": "x" * 2 * small_limit}}) + "\n")
        fp.write(json.dumps({**msg, "uuid": "u3", "message": {"role": "user", "content": "three"}}) + "\n")
    res = import_transcripts(paths, str(tmp_path / "projects"))
    assert (res.lines, res.skipped) == (3, 1)
    assert any("line 2: a line of" in note and "passed over" in note for note in res.notes)
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM messages") == [(2,)]


def test_a_state_json_too_large_is_said_and_not_read(tmp_path: Path, paths: Paths, small_limit: int) -> None:
    for name, size in (("big", 2 * small_limit), ("ok", 10)):
        (tmp_path / name).mkdir()
        state = {"session": {"status": "running", "title": "t" * size}}
        (tmp_path / name / "state.json").write_text(json.dumps(state))
    res = mirror_state_dirs(paths, str(tmp_path), rescan=True)
    assert res.files == 1
    assert [p for p in res.problems if "larger than the 1,048,576 bytes a state.json may have" in p]
    Consumer(paths).run(once=True)
    assert query(paths, "project", "SELECT session_id FROM sessions") == [("ok",)]


def test_the_consumer_tails_past_a_long_line(tmp_path: Path, home: Path, paths: Paths) -> None:
    """The consumer's own tailer, with the real limit: the lines after a 70 MiB one arrive (they
    waited behind it for good: every poll ended in "payload exceeds the frame limit")."""
    src = tmp_path / "tool-usage.jsonl"
    src.write_text(_line(1) + "\n")
    home.mkdir(mode=0o700)
    home.joinpath("config.toml").write_text(f"[watch.jsonl]\n{json.dumps(str(src))} = \"tool_event\"\n")
    home.joinpath("config.toml").chmod(0o600)
    config = load_config(paths)
    Consumer(paths, config=config).run(once=True)
    with open(src, "ab") as fp:
        for _ in range(70):
            fp.write(b"[" * (1 << 20))
        fp.write(b"\n" + _line(2).encode() + b"\n")
    Consumer(paths, config=config).run(once=True)
    assert _tools(paths) == ["T1", "T2"]
    assert os.path.getsize(src) > 70 << 20
    assert len(_dead(paths)) == 1
