"""A spool file that cannot be read now is not damage (bug 71).

A permission taken away (a user's ``chmod``, a backup tool's ACLs) or descriptors run out
leave the bytes as they were. Before the fix the consumer took such a chunk in a claimed
segment for damage: its operations were counted lost, the segment archived, and they were
never applied once it could be read again. In the live inbox it read nothing and said nothing.
Now the directory waits, said once, the rest of the spool goes on, and it is applied in full
once it can be read.

Root reads any file, so the permission is taken away by the reader's own open here; as a
user that is not root, the last test takes it away with chmod.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.consumer.status import collect, prometheus_text, render_human
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue
from codi_queue.queue.spool import Spool, read_dir_id

from .conftest import cli_env, query
from .test_lanes import in_lane


def _events(paths: Paths, tag: str, n: int) -> None:
    for i in range(n):
        assert enqueue("tool_event", {"tool_name": "Bash", "success": True, "tool_use_id": f"{tag}{i}"},
                       home=paths.home)


def _stored(paths: Paths) -> list[str]:
    return sorted(r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events"))


def _refuse_chunks_in(monkeypatch: pytest.MonkeyPatch, directory: str) -> None:
    """Opening a chunk file of ``directory`` for reading fails as it does once its permission is
    taken away (every reader of the spool opens chunks by name beside a directory descriptor)."""
    real = os.open

    def refusing(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if dir_fd is not None and isinstance(path, str) and path.startswith("q") and \
                os.readlink(f"/proc/self/fd/{dir_fd}") == directory:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", refusing)


def _said(paths: Paths, what: str) -> list[dict[str, Any]]:
    try:
        lines = Path(paths.error_log).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, lines) if what in e["message"]]


def test_a_segment_that_cannot_be_read_now_waits_and_is_applied_once_it_can(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(paths, "a", 3)
    spool = Spool(paths.spool, paths.archive)
    seg = read_dir_id(os.path.join(paths.spool, "inbox"))
    assert seg is not None and spool.claim(seg)
    _events(paths, "b", 2)  # a new inbox, readable
    _refuse_chunks_in(monkeypatch, os.path.join(paths.spool, "segments", seg))
    consumer = Consumer(paths)
    consumer.run(once=True)  # three passes
    assert _stored(paths) == ["b0", "b1"]  # the rest of the spool went on
    said = _said(paths, "")
    assert len(said) == 1 and "cannot be read now (Permission denied: q00000)" in said[0]["message"], said
    assert os.path.isdir(os.path.join(paths.spool, "segments", seg))  # not archived as applied
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    monkeypatch.undo()
    Consumer(paths).run(once=True)
    assert _stored(paths) == ["a0", "a1", "a2", "b0", "b1"]
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    assert not os.path.exists(os.path.join(paths.spool, "segments", seg))


def test_a_live_inbox_that_cannot_be_read_now_is_said_not_passed_over_in_silence(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(paths, "a", 3)
    _refuse_chunks_in(monkeypatch, os.path.join(paths.spool, "inbox"))
    Consumer(paths).run(once=True)
    assert _stored(paths) == []
    said = _said(paths, "cannot be read now")
    assert len(said) == 1 and said[0]["message"].startswith(os.path.join(paths.spool, "inbox")), said
    status = collect(paths)  # answers, and says why
    assert "cannot be read now" in status["last_error"]["message"], status
    assert status["out_of_reach"] == [f"{os.path.join(paths.spool, 'inbox')}: Permission denied (q00000)"]
    assert "out of reach     " in render_human(status, paths.home)
    assert "codi_queue_out_of_reach_directories 1\n" in prometheus_text(status)
    monkeypatch.undo()
    Consumer(paths).run(once=True)
    assert _stored(paths) == ["a0", "a1", "a2"]


def _refuse_directory(monkeypatch: pytest.MonkeyPatch, directory: str) -> None:
    """The directory behaves as one whose permissions were taken away (mode 000): its own
    entry can be looked at, nothing in it can be listed or opened."""
    real_open, real_scandir = os.open, os.scandir

    def denied(path: Any) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    def opening(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        where = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        full = os.path.join(where, path) if isinstance(path, str) else ""
        if full == directory or full.startswith(directory + os.sep):
            raise denied(full)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def scanning(path: Any = ".") -> Any:
        if path == directory:
            raise denied(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "scandir", scanning)


def test_a_lane_inbox_out_of_reach_is_said_once_and_the_other_lanes_go_on(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    _events(paths, "a", 3)
    inbox = os.path.join(paths.spool, "inbox")
    with in_lane(paths, 1):
        _events(paths, "b", 2)
    _refuse_directory(monkeypatch, inbox)
    consumer = Consumer(paths)
    consumer.run(once=True)
    assert _stored(paths) == ["b0", "b1"]  # lane 1 was drained; before, every pass failed at lane 0
    said = _said(paths, "")
    assert [e["message"] for e in said] == [f"{inbox} cannot be read now (Permission denied): its operations "
                                            "wait there until it can"]
    consumer.drain(max_passes=2)  # the same consumer does not say it again
    assert len(_said(paths, "")) == 1
    assert collect(paths)["out_of_reach"] == [f"{inbox}: Permission denied"]
    monkeypatch.undo()
    Consumer(paths).run(once=True)
    assert _stored(paths) == ["a0", "a1", "a2", "b0", "b1"]


def test_a_chunk_whose_permission_was_taken_away(paths: Paths, home: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its mode (the tests above take the permission away for it)")
    _events(paths, "a", 3)
    chunk = os.path.join(paths.spool, "inbox", "q00000")
    os.chmod(chunk, 0)
    try:
        out = subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=cli_env(home),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "cannot be read now (Permission denied" in out.stderr, out.stderr
        assert _stored(paths) == []
    finally:
        os.chmod(chunk, 0o600)
    inbox = os.path.dirname(chunk)
    os.chmod(inbox, 0)
    try:
        out = subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=cli_env(home),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and f"{inbox} cannot be read now (Permission denied)" in out.stderr, out.stderr
    finally:
        os.chmod(inbox, 0o700)
    Consumer(paths).run(once=True)
    assert _stored(paths) == ["a0", "a1", "a2"]


def test_a_rebuild_that_cannot_read_a_directory_now_replaces_nothing(paths: Paths,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuild passing over a directory it could not read would put databases without its
    operations in place of the ones that hold them."""
    from codi_queue.errors import CodiQueueError
    from codi_queue.recovery.rebuild import rebuild_in_place

    _events(paths, "a", 3)
    spool = Spool(paths.spool, paths.archive)
    seg = read_dir_id(os.path.join(paths.spool, "inbox"))
    assert seg is not None and spool.claim(seg)
    Consumer(paths).run(once=True)  # applied and archived
    archived = spool.archived_dirs()
    assert len(archived) == 1
    before = Path(paths.database("sessions")).read_bytes()
    _refuse_chunks_in(monkeypatch, archived[0].path)
    with pytest.raises(CodiQueueError, match="cannot be read now .*nothing was rebuilt or replaced"):
        rebuild_in_place(paths)
    monkeypatch.undo()
    assert Path(paths.database("sessions")).read_bytes() == before
    assert [n for n in os.listdir(paths.db_dir) if n.startswith(".rebuild-")] == []
    assert _stored(paths) == ["a0", "a1", "a2"]
