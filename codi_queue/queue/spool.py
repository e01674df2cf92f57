"""The spool: many producers append to ``inbox/``, the one consumer drains and later claims it.

Layout under the spool root::

    inbox.lock          flock held by a producer for open+put+fsync+close,
                        and by the consumer for the rename that claims the inbox
    inbox/              a persist-queue Queue directory (q00000.., info) plus ``id``
    segments/<id>/      claimed inboxes, owned by the consumer alone
    last_segment        the highest directory id ever issued (ids never repeat)

persist-queue's Queue is only safe with one process per directory: the lock
serialises producers on the inbox. The consumer reads the live inbox without
the lock, but only up to the head pointer in ``info``, which a producer
renames into place after the bytes it names are on disk; producers only
append, and only ever truncate bytes past that head. When the inbox is fully
applied and large or old enough, the consumer claims it (one rename under the
lock) and it is archived; a new inbox, with a new id, starts on the next put.

Every queue directory carries its id in a file, so the consumer's cursors
(keyed by id) survive the rename from inbox to segment.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from ..errors import CorruptRecord, SpoolError
from ..fsutil import FILE_MODE, ensure_private_dir, fsync_dir, write_atomic
from . import frame
from .pq import CHUNK_RECORDS, durable_queue_class

__all__ = ["Spool", "QueueDir", "ID_DIGITS", "read_dir_id", "dir_bytes"]

ID_DIGITS = 20
ID_FILE = "id"


class QueueDir(NamedTuple):
    id: str
    path: str
    live: bool  # the inbox: producers may still append past what was read


class Spool:
    def __init__(self, root: str, archive: str | None = None) -> None:
        self.root = root
        self.inbox = os.path.join(root, "inbox")
        self.segments = os.path.join(root, "segments")
        self.archive = archive or os.path.join(os.path.dirname(root), "archive")
        self.lock_path = os.path.join(root, "inbox.lock")
        self._ready = False
        # A producer that appends repeatedly keeps its persist-queue Queue open
        # between calls, but only while the inbox is byte for byte what it left
        # (its id and info files): any other writer, a claim or a rescue in
        # between means a fresh Queue. Checked under the lock.
        self._queue: Any = None
        self._left: tuple[bytes, bytes] | None = None
        self._owner_pid = 0
        self._lock_fd = -1

    # -- producer side --------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> None:
        """Durably append records (each one operation or one batch) to the inbox.

        Returns only when the records, persist-queue's ``info`` and every
        directory entry involved are on disk. Raises ``SpoolError``.

        Group commit: the lock covers only the writes and the rename (tens of
        microseconds); the fsyncs run after it is released, so producers
        that arrive together overlap them instead of queueing behind them.
        """
        syncs: list[int] = []
        try:
            self._prepare()
            with self._locked():
                queue = self._cached_inbox() or self._open_inbox()
                self._queue, self._left = None, None  # detached while in use
                try:
                    for record in records:
                        queue.put(record)
                    syncs = queue.pending_syncs()
                except BaseException:
                    queue.close()  # the next opener truncates whatever this left unacknowledged
                    raise
                inbox_id = read_dir_id(self.inbox)
                if inbox_id is not None and getattr(queue, "saved_info", None):
                    self._queue, self._left = queue, (inbox_id.encode(), queue.saved_info)
                else:
                    queue.close()
            for fd in syncs:
                os.fsync(fd)
        except OSError as exc:
            raise SpoolError(
                f"cannot append to spool {self.root}: {exc.strerror or exc}",
                path=exc.filename or self.root,
                errno=exc.errno,
            ) from exc
        finally:
            for fd in syncs:
                os.close(fd)

    def _open_inbox(self) -> Any:
        self._ensure_inbox_locked()
        cls = durable_queue_class()
        if not os.path.exists(os.path.join(self.inbox, "info")) and _has_chunk_data(self.inbox):
            # Without info, Queue() would start at offset 0 and truncate q00000:
            # every queued record gone. Hand the directory to the consumer's
            # scanner instead and start a fresh inbox.
            self._claim_locked()
            self._ensure_inbox_locked()
        try:
            queue = cls(self.inbox, chunksize=CHUNK_RECORDS, tempdir=self.inbox, serializer=frame)
        except CorruptRecord:
            queue = None  # info is unreadable: the same rescue
        if queue is None or not _consistent(queue):
            # Also when the head chunk is shorter than info says: an append
            # would land inside a span the consumer already stepped over as
            # damaged, and be skipped. We hold the lock: no other producer is
            # inside the directory.
            if queue is not None:
                queue.close()
            self._claim_locked()
            self._ensure_inbox_locked()
            queue = cls(self.inbox, chunksize=CHUNK_RECORDS, tempdir=self.inbox, serializer=frame)
        return queue

    def _inbox_state(self) -> tuple[bytes, bytes] | None:
        inbox_id = read_dir_id(self.inbox)
        try:
            with open(os.path.join(self.inbox, "info"), "rb") as fp:
                return (inbox_id.encode(), fp.read()) if inbox_id else None
        except FileNotFoundError:
            return None

    def _cached_inbox(self) -> Any:
        if self._queue is None or self._owner_pid != os.getpid():
            self._forget_queue()
            return None
        if self._left is None or self._inbox_state() != self._left or not _consistent(self._queue):
            self._forget_queue()
            return None
        return self._queue

    def _forget_queue(self) -> None:
        if self._queue is not None:
            if self._owner_pid == os.getpid():
                self._queue.close()
            self._queue, self._left = None, None

    def _ensure_inbox_locked(self) -> None:
        ensure_private_dir(self.inbox)
        if read_dir_id(self.inbox) is None:
            write_atomic(os.path.join(self.inbox, ID_FILE), self._next_id().encode())

    # -- consumer side --------------------------------------------------------------

    def queue_dirs(self) -> Iterator[QueueDir]:
        """Every directory that may hold unapplied records, oldest first (claimed, then inbox)."""
        try:
            names = sorted(n for n in os.listdir(self.segments) if n.isdigit() and len(n) == ID_DIGITS)
        except FileNotFoundError:
            names = []
        for name in names:
            yield QueueDir(name, os.path.join(self.segments, name), False)
        inbox_id = read_dir_id(self.inbox)
        if inbox_id is not None:
            yield QueueDir(inbox_id, self.inbox, True)

    def claim(self, expected_id: str) -> bool:
        """Move the inbox to ``segments/`` if it is still the one with ``expected_id``."""
        self._prepare()
        with self._locked():
            if read_dir_id(self.inbox) != expected_id:
                return False
            return self._claim_locked() is not None

    def _claim_locked(self) -> str | None:
        if not os.path.isdir(self.inbox):
            return None
        seg = read_dir_id(self.inbox)
        if seg is None:
            seg = self._next_id()
            write_atomic(os.path.join(self.inbox, ID_FILE), seg.encode())
        os.rename(self.inbox, os.path.join(self.segments, seg))
        fsync_dir(self.segments)
        fsync_dir(self.root)
        return seg

    def retire(self, seg: str) -> str:
        """Move a fully applied segment to the archive (the journal replay reads)."""
        ensure_private_dir(self.archive)
        dest = os.path.join(self.archive, seg)
        os.rename(os.path.join(self.segments, seg), dest)
        fsync_dir(self.archive)
        fsync_dir(self.segments)
        return dest

    def prune_archive(self, max_age_s: float, max_bytes: int, now: float | None = None) -> list[str]:
        """Delete the oldest archived segments beyond the age or total-size limit (0 = none)."""
        try:
            names = sorted(n for n in os.listdir(self.archive) if n.isdigit() and len(n) == ID_DIGITS)
        except FileNotFoundError:
            return []
        now = time.time() if now is None else now
        sizes = {n: dir_bytes(os.path.join(self.archive, n)) for n in names}
        total = sum(sizes.values())
        removed = []
        for name in names:  # oldest first
            too_old = max_age_s > 0 and now - int(name) / 1e9 > max_age_s
            too_big = max_bytes > 0 and total > max_bytes
            if not (too_old or too_big):
                break
            shutil.rmtree(os.path.join(self.archive, name))
            total -= sizes[name]
            removed.append(name)
        if removed:
            fsync_dir(self.archive)
        return removed

    def archive_bytes(self) -> tuple[int, int]:
        """(segments, bytes) in the archive."""
        try:
            names = [n for n in os.listdir(self.archive) if n.isdigit() and len(n) == ID_DIGITS]
        except FileNotFoundError:
            return 0, 0
        return len(names), sum(dir_bytes(os.path.join(self.archive, n)) for n in names)

    # -- internals ------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        ensure_private_dir(self.root)
        ensure_private_dir(self.segments)
        self._ready = True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The descriptor is kept for the next call, but not across fork: a
        # forked child shares the open file description, and with it the flock.
        if self._owner_pid != os.getpid() or self._lock_fd < 0:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            self._owner_pid = os.getpid()
            self._queue, self._left = None, None  # the parent's, not ours
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _next_id(self) -> str:
        # Time-ordered and never reused, even if the clock steps back: the
        # databases' cursors are keyed by these ids.
        marker = os.path.join(self.root, "last_segment")
        try:
            with open(marker, "rb") as fp:
                last = int(fp.read().strip())
        except (FileNotFoundError, ValueError):
            last = _max_existing(self.segments, self.archive)
        seg = max(time.time_ns(), last + 1)
        write_atomic(marker, str(seg).encode())
        return f"{seg:0{ID_DIGITS}d}"


def read_dir_id(path: str) -> str | None:
    try:
        with open(os.path.join(path, ID_FILE), "rb") as fp:
            text = fp.read().decode("ascii", "replace").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text if text.isdigit() and len(text) == ID_DIGITS else None


def _consistent(queue: Any) -> bool:
    """The head chunk holds exactly what info acknowledges (Queue() already cut anything past it)."""
    try:
        return bool(os.fstat(queue.headf.fileno()).st_size == int(queue.info["head"][2]))
    except (OSError, KeyError, TypeError, ValueError):
        return False


def _has_chunk_data(path: str) -> bool:
    return any(e.name.startswith("q") and e.is_file() and e.stat().st_size for e in os.scandir(path))


def dir_bytes(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.name.startswith("q") and entry.is_file():
            total += entry.stat().st_size
    return total


def _max_existing(*dirs: str) -> int:
    best = 0
    for d in dirs:
        try:
            for n in os.listdir(d):
                if n.isdigit():
                    best = max(best, int(n))
        except FileNotFoundError:
            continue
    return best
