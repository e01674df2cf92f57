"""The spool: many producers append to ``inbox/``, the one consumer claims it as a segment.

Layout under the spool root::

    inbox.lock          flock: held by a producer for open+put+fsync+close,
                        and by the consumer for the rename that claims the inbox
    inbox/              a persist-queue Queue directory (q00000.., info)
    segments/<id>/      claimed inboxes, owned by the consumer alone, drained in id order
    last_segment        the highest segment id ever issued (ids never repeat)

persist-queue's Queue is only safe with one process per directory. The lock
serialises producers on the inbox, and the claim (one rename under the same
lock) hands the directory to the consumer: from then on no producer can touch
it, so persist-queue is used the way it is supported.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..errors import CorruptRecord, SpoolError
from ..fsutil import FILE_MODE, ensure_private_dir, fsync_dir, write_atomic
from . import frame
from .pq import CHUNK_RECORDS, durable_queue_class, read_info

__all__ = ["Spool"]

_SEGMENT_DIGITS = 20


class Spool:
    def __init__(self, root: str, archive: str | None = None) -> None:
        self.root = root
        self.inbox = os.path.join(root, "inbox")
        self.segments = os.path.join(root, "segments")
        self.archive = archive or os.path.join(os.path.dirname(root), "archive")
        self.lock_path = os.path.join(root, "inbox.lock")
        self._ready = False

    # -- producer side --------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> None:
        """Durably append records (each one operation or one batch) to the inbox.

        Returns only when the records, persist-queue's ``info`` and every
        directory entry involved are on disk. Raises ``SpoolError``.
        """
        try:
            self._prepare()
            with self._locked():
                ensure_private_dir(self.inbox)
                queue = self._open_inbox()
                try:
                    for record in records:
                        queue.put(record)
                finally:
                    queue.close()
        except OSError as exc:
            raise SpoolError(
                f"cannot append to spool {self.root}: {exc.strerror or exc}",
                path=exc.filename or self.root,
                errno=exc.errno,
            ) from exc

    def _open_inbox(self) -> object:
        cls = durable_queue_class()
        try:
            return cls(self.inbox, chunksize=CHUNK_RECORDS, tempdir=self.inbox, serializer=frame)
        except CorruptRecord:
            # The inbox's info is unreadable: hand the whole directory to the
            # consumer (which scans it frame by frame) and start a fresh one.
            # We hold the lock, so no other producer is inside it.
            self._claim_locked(force=True)
            ensure_private_dir(self.inbox)
            return cls(self.inbox, chunksize=CHUNK_RECORDS, tempdir=self.inbox, serializer=frame)

    # -- consumer side --------------------------------------------------------------

    def claim(self) -> str | None:
        """Move a non-empty inbox to ``segments/`` and return its id, or None if empty."""
        self._prepare()
        with self._locked():
            return self._claim_locked(force=False)

    def _claim_locked(self, force: bool) -> str | None:
        if not os.path.isdir(self.inbox):
            return None
        if not force and not _has_records(self.inbox):
            return None
        seg = self._next_segment_id()
        os.rename(self.inbox, os.path.join(self.segments, seg))
        fsync_dir(self.segments)
        fsync_dir(self.root)
        return seg

    def pending_segments(self) -> list[str]:
        """Claimed segments not yet archived, oldest first."""
        try:
            names = os.listdir(self.segments)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.isdigit() and len(n) == _SEGMENT_DIGITS)

    def segment_path(self, seg: str) -> str:
        return os.path.join(self.segments, seg)

    def retire(self, seg: str) -> str:
        """Move a fully applied segment to the archive (the journal replay reads)."""
        ensure_private_dir(self.archive)
        dest = os.path.join(self.archive, seg)
        os.rename(self.segment_path(seg), dest)
        fsync_dir(self.archive)
        fsync_dir(self.segments)
        return dest

    def queue_dirs(self) -> Iterator[tuple[str, str]]:
        """(segment id or "inbox", path) of everything not yet applied, oldest first."""
        for seg in self.pending_segments():
            yield seg, self.segment_path(seg)
        if os.path.isdir(self.inbox):
            yield "inbox", self.inbox

    # -- internals ------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        ensure_private_dir(self.root)
        ensure_private_dir(self.segments)
        self._ready = True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _next_segment_id(self) -> str:
        # Ids are time-ordered and never reused, even if the clock steps back:
        # cursors in the databases are keyed by segment id.
        marker = os.path.join(self.root, "last_segment")
        try:
            with open(marker, "rb") as fp:
                last = int(fp.read().strip())
        except (FileNotFoundError, ValueError):
            last = _max_existing(self.segments, self.archive)
        seg = max(time.time_ns(), last + 1)
        write_atomic(marker, str(seg).encode())
        return f"{seg:0{_SEGMENT_DIGITS}d}"


def _has_records(path: str) -> bool:
    try:
        return int(read_info(path)["size"]) > 0
    except FileNotFoundError:
        # A producer died between creating the directory and saving info:
        # nothing was acknowledged, unless chunk files say otherwise.
        return any(n.startswith("q") and os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))
    except (CorruptRecord, ValueError, TypeError, KeyError):
        return True  # let the consumer's scanner salvage what it can


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
