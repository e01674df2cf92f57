"""The spool: many producers append to ``inbox/``, the one consumer drains and later claims it.

Layout under the spool root::

    inbox.lock          flock held by a producer for open+put+fsync+close,
                        and by the consumer for the rename that claims the inbox
    inbox/              a persist-queue Queue directory (q00000.., info) plus ``id``
    inbox-<n>.lock      lanes 1..: more inboxes, each with its own lock, so
    inbox-<n>/          concurrent producers do not queue behind one lock
                        (their directories also hold ``lane``)
    segments/<id>/      claimed inboxes, owned by the consumer alone
    ids.lock            flock around issuing a directory id
    last_segment        the highest directory id ever issued (ids never repeat)

persist-queue's Queue is only safe with one process per directory: each
lane's lock serialises the producers on its inbox. A process takes the first
lane whose lock is free at its first append (lane 0 when nothing contends)
and keeps it, so one producer's records stay in order; records of different
producers have no order between them (op ids carry time). The consumer reads
the live inbox without the lock, but only up to the head pointer in ``info``, which a producer
renames into place after the bytes it names are on disk; producers only
append, and only ever truncate bytes past that head. When the inbox is fully
applied and large or old enough, the consumer claims it (one rename under the
lock) and it is archived; a new inbox, with a new id, starts on the next put.

Every queue directory carries its id in a file, so the consumer's cursors
(keyed by id) survive the rename from inbox to segment.

An inbox in a state no producer leaves it in (no ``id`` or ``info`` beside
queued bytes, an unreadable ``info``, a link or anything but a regular file
inside, a directory that is not private) is never appended to or read live:
whoever finds it, producer or consumer, moves it to ``segments/`` under the
lock, where the consumer reads what it holds and reports the rest.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

from ..errors import CorruptRecord, SpoolError, UnsafePath
from ..fsutil import (DIR_FLAGS, FILE_MODE, NOFOLLOW, check_private, ensure_private_dir, fsync_dir, unsafe_ancestor,
                      write_atomic)
from .durable_queue import (POS_SHIFT, acknowledge, cannot_read_now, check_head, open_queue, publish_acked,
                            publish_written, read_acked, read_acked_ops, read_info)


__all__ = ["Spool", "shared_spool", "OPEN_SPOOLS", "QueueDir", "ID_DIGITS", "LANES", "lane_count", "lane_inbox",
           "lane_lock", "read_dir_id", "read_dir_lane", "dir_bytes", "list_ids", "is_dir_id", "inbox_problem",
           "publish_acked", "read_acked", "read_acked_ops"]

ID_DIGITS = 20
ID_FILE = "id"
LANE_FILE = "lane"  # in the directories of lanes 1..: which lane's journal they belong to
# Threads of one process append through one lock descriptor, and flock does not exclude
# holders of the same open file description: without this, two threads enqueueing at once
# wrote into one chunk together (damage, operations lost). Taken before the flock and
# released after it; reentrant, as a claim or a rescue runs inside an append. A forked
# child gets a fresh one: the parent's may be held by a thread the child does not have.
_THREADS = threading.RLock()


def _fresh_thread_lock() -> None:
    global _THREADS
    _THREADS = threading.RLock()


os.register_at_fork(after_in_child=_fresh_thread_lock)

LANES = 4  # inboxes producers spread over (CODI_QUEUE_LANES overrides)
MAX_LANES = 64  # the consumer drains every lane up to this, whatever a producer's setting


def lane_count() -> int:
    """How many lanes this process's producers spread over: ``CODI_QUEUE_LANES`` (1-64) or ``LANES``."""
    try:
        n = int(os.environ.get("CODI_QUEUE_LANES", LANES))
    except ValueError:
        return LANES
    return min(max(n, 1), MAX_LANES)


def lane_inbox(root: str, lane: int) -> str:
    return os.path.join(root, "inbox" if lane == 0 else f"inbox-{lane}")


def lane_lock(root: str, lane: int) -> str:
    return os.path.join(root, "inbox.lock" if lane == 0 else f"inbox-{lane}.lock")


def lane_of_name(name: str) -> int | None:
    """The lane whose inbox is named ``name`` in the spool root, or None."""
    if name == "inbox":
        return 0
    if name.startswith("inbox-") and name[6:].isascii() and name[6:].isdigit():
        lane = int(name[6:])
        if 0 < lane < MAX_LANES and name == f"inbox-{lane}":
            return lane
    return None


class QueueDir:
    """One queue directory of the spool (a plain slotted class: a NamedTuple costs start-up)."""

    __slots__ = ("id", "path", "live", "_lane")

    def __init__(self, id: str, path: str, live: bool, lane: int | None = None) -> None:
        self.id = id
        self.path = path
        self.live = live  # the inbox: producers may still append past what was read
        self._lane = lane

    @property
    def lane(self) -> int:
        """The lane whose journal this directory belongs to (read from it once, when asked)."""
        if self._lane is None:
            self._lane = read_dir_lane(self.path)
        return self._lane

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueDir) and (self.id, self.path, self.live) == (other.id, other.path, other.live)

    def __hash__(self) -> int:
        return hash((self.id, self.path, self.live))

    def __repr__(self) -> str:
        return f"QueueDir(id={self.id!r}, path={self.path!r}, live={self.live!r})"


class Spool:
    def __init__(self, root: str, archive: str | None = None, lane: int | None = None) -> None:
        """``lane`` pins this object to one lane; by default a producer takes a free one at its first append."""
        self.root = root
        self.segments = os.path.join(root, "segments")
        self.archive = archive or os.path.join(os.path.dirname(root), "archive")
        self._pinned = lane is not None
        self._set_lane(lane or 0)
        self._lanes: dict[int, Spool] = {}  # consumer side: one pinned Spool per lane it claims or rescues
        self._ready = False
        # A producer that appends repeatedly keeps its persist-queue Queue open
        # between calls, but only while the inbox path still names the directory
        # it holds and the head is where it or a producer that published left it:
        # a claim or a rescue in between means a fresh Queue. Checked under the lock.
        self._queue: Any = None
        self._queue_inbox_id: str | None = None  # the inbox id the cached Queue appends to
        self._queue_id_file: tuple[int, ...] | None = None  # that id file as it was when read (_names)
        self._owner_pid = 0
        self._lock_fd = -1
        self._lane_pid = 0  # the process that took this object's lane (a forked child takes its own)
        self.home = os.path.dirname(os.path.abspath(root))

    def _set_lane(self, lane: int) -> None:
        self.lane = lane
        self.inbox = lane_inbox(self.root, lane)
        self.lock_path = lane_lock(self.root, lane)

    # -- producer side --------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> None:
        """Durably append records (each one operation or one batch) to the inbox.

        Returns only when the records, and every directory entry they need,
        are on disk: one sync of the data (``fsutil.sync_data``), shared with concurrent
        producers (``durable_queue.acknowledge``), plus the directory, under
        the lock, when a chunk file was created. ``info`` is renamed into place
        but not synced: it is a hint that readers verify past
        (``durable_queue.recover_head``). Raises ``SpoolError``.

        Group commit: the lock covers only the writes (tens of microseconds);
        the sync runs after it is released, and one producer's sync covers
        every append completed before it, so producers that arrive together
        share it instead of queueing behind one another's.
        """
        syncs: list[int] = []  # the descriptors the shared sync needs, closed here whatever happens
        try:
            with _THREADS:  # the writes only: the shared sync below runs outside it
                head, ops = self._write(records, syncs)
            if syncs:
                # One sync, shared with the producers whose appends it covers; then the
                # consumer may read this far (the acked file of the directory we appended
                # to, even if the inbox was claimed since).
                acknowledge(syncs[0], syncs[2], (int(head[0]) << POS_SHIFT) | int(head[2]), ops)
        except SpoolError:
            raise  # says what it is already (an unsafe home, ...)
        except OSError as exc:
            raise SpoolError(
                f"cannot append to spool {self.root}: {exc.strerror or exc}",
                path=exc.filename or self.root,
                errno=exc.errno,
            ) from exc
        finally:
            for fd in syncs:
                os.close(fd)

    def _write(self, records: Sequence[bytes], syncs: list[int]) -> tuple[list[int], int]:
        """The records written under the lane's lock: (the head after them, the operation count
        published with it); ``syncs`` receives the data, directory and ``acked`` descriptors."""
        self._prepare()
        lock = self._locked() if self._pinned or self._lane_pid == os.getpid() else self._take_lane()
        with lock:
            # The inbox id only changes under this lock (claim, a fresh inbox), so the
            # cached queue's id, checked on the way in, still names it on the way out.
            queue = self._cached_inbox()
            inbox_id, id_file = self._queue_inbox_id, self._queue_id_file
            if queue is None:
                queue = self._open_inbox()
                inbox_id = read_dir_id(self.inbox)
                id_file = _id_identity(queue.dir_fd())
            self._queue, self._queue_inbox_id = None, None  # detached while in use
            start = list(queue.info["head"])
            size, ops_before = int(queue.info["size"]), int(queue.info.get("ops", 0))
            try:
                for record in records:
                    queue.put(record)
                data_fd, dir_fd, acked_fd, sync_dir = queue.pending_syncs()
                syncs += [data_fd, dir_fd, acked_fd]
                head = list(queue.info["head"])
                ops = int(queue.info.get("ops", 0))
                if sync_dir:
                    # A chunk file (or a fresh inbox's first files) was created: its name is
                    # made durable before any producer can append, and acknowledge, past it.
                    os.fsync(dir_fd)
                publish_written(acked_fd, queue.head_state())
            except BaseException:
                # Not acknowledged, so not kept: whatever this append wrote is cut off
                # here, or a later opener's recovery would adopt intact frames of it.
                _cut_back(self.inbox, start, queue)
                try:
                    # and info, which the append may have rewritten (at a new chunk, ...)
                    queue.rewind(start, size, ops_before)
                except OSError:
                    pass  # a failing disk: the next opener rewinds it (outran_its_data)
                queue.close()
                raise
            if inbox_id is not None and id_file is not None:
                self._queue, self._queue_inbox_id, self._queue_id_file = queue, inbox_id, id_file
            else:
                queue.close()
        return head, ops

    def _open_inbox(self) -> Any:
        why = inbox_problem(self.inbox)
        if why is not None:
            # Appending could write through a planted link, truncate what only a
            # scan can recover, or land inside a span already stepped over as
            # damaged: move it aside for the consumer and start a fresh inbox.
            self._claim_locked()
        self._ensure_inbox_locked()
        try:
            queue = open_queue(self.inbox)
        except CorruptRecord:
            # info became unreadable after the check, or the data ends short of what
            # was acknowledged (damage): appending would reuse positions the consumer
            # may have read past. Moved aside below; the consumer reads and reports it.
            queue = None
        if queue is not None and queue.outran_its_data():
            # info names a chunk only an append that failed reached, and rewinding it at
            # the failure failed too: rewound here to what the last completed append
            # published, or, if even that fails, the directory is moved aside below.
            rewound = queue.rewind_to_written()
            queue.close()
            queue = open_queue(self.inbox) if rewound else None
        if queue is None or not _consistent(queue):
            # Also when the head chunk is shorter than info says. We hold the
            # lock: no other producer is inside the directory.
            if queue is not None:
                queue.close()
            self._claim_locked()
            self._ensure_inbox_locked()
            queue = open_queue(self.inbox)
        return queue

    def _cached_inbox(self) -> Any:
        if self._queue is None or self._owner_pid != os.getpid():
            self._forget_queue()
            return None
        if self._queue_inbox_id is None or not _names(self.inbox, self._queue, self._queue_id_file):
            self._forget_queue()
            return None
        # Another producer appended since ours: carry on from where it says it
        # left the head (cheap), or reopen when the chunk is not what it says.
        if not _untouched(self._queue) and not self._queue.follow():
            self._forget_queue()
            return None
        return self._queue

    def _forget_queue(self) -> None:
        if self._queue is not None:
            if self._owner_pid == os.getpid():
                self._queue.close()
            self._queue, self._queue_inbox_id = None, None

    def close(self) -> None:
        """Close the descriptors kept between appends; the next append opens them again, in the
        same lane (an append in flight on another thread finishes first)."""
        with _THREADS:
            self._forget_queue()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _ensure_inbox_locked(self) -> None:
        ensure_private_dir(self.inbox, under=self.root)
        if read_dir_id(self.inbox) is None:
            if self.lane:  # before the id: a directory with an id always says its lane
                write_atomic(os.path.join(self.inbox, LANE_FILE), str(self.lane).encode())
            write_atomic(os.path.join(self.inbox, ID_FILE), self._next_id().encode())

    # -- consumer side --------------------------------------------------------------

    def lanes(self) -> list[int]:
        """The lanes whose inbox exists, in order."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(lane for lane in map(lane_of_name, names) if lane is not None)

    def queue_dirs(self) -> Iterator[QueueDir]:
        """Every directory that may hold unapplied records: claimed ones oldest first, then each lane's inbox.

        A lane's own directories come in the order it wrote them."""
        for name in list_ids(self.segments):
            yield QueueDir(name, os.path.join(self.segments, name), False)
        for lane in self.lanes():
            path = lane_inbox(self.root, lane)
            inbox_id = read_dir_id(path)
            if inbox_id is not None:
                yield QueueDir(inbox_id, path, True, lane)

    def archived_dirs(self) -> list[QueueDir]:
        """Applied segments kept for replay and sync, oldest first."""
        if self.archive is None:
            return []
        return [QueueDir(name, os.path.join(self.archive, name), False) for name in list_ids(self.archive)]

    def journal(self, archived: bool = True, pending: bool = True) -> list[QueueDir]:
        """Every record still on disk: archived, claimed, then the inboxes (each lane in the order it was written)."""
        return (self.archived_dirs() if archived else []) + (list(self.queue_dirs()) if pending else [])

    def rescue_inboxes(self, out_of_reach: dict[str, OSError] | None = None) -> list[str]:
        """``rescue_inbox`` for every lane: what was wrong with each inbox moved aside. An inbox
        that cannot be read now (``cannot_read_now``) goes into ``out_of_reach`` (its path → the
        error) and the other lanes are looked at; without it, the error is raised."""
        found = []
        for lane in self.lanes():
            try:
                why = self._lane(lane).rescue_inbox()
            except OSError as exc:
                if out_of_reach is None or not cannot_read_now(exc):
                    raise
                out_of_reach[lane_inbox(self.root, lane)] = exc
                continue
            if why is not None:
                found.append(why)
        return found

    def _lane(self, lane: int) -> Spool:
        if lane == self.lane and self._pinned:
            return self
        pinned = self._lanes.get(lane)
        if pinned is None:
            pinned = self._lanes[lane] = Spool(self.root, self.archive, lane)
        return pinned

    def rescue_inbox(self) -> str | None:
        """Move this lane's inbox to ``segments/`` if no producer could have left it as it is; what was wrong, or None.

        The consumer calls this on every pass: it reads a live inbox only up
        to an acknowledged head, so without it a lost ``id`` or ``info`` would
        hide queued operations until the next enqueue.
        """
        if _inbox_looks_sound(self.inbox) or inbox_problem(self.inbox) is None:
            return None
        if not self._pinned and self._lane_pid != os.getpid():
            return self._lane(self.lane).rescue_inbox()  # no lane taken yet: never take one here
        self._prepare()
        with _THREADS, self._locked():
            why = inbox_problem(self.inbox)  # a producer may have been mid-way through its first record
            if why is None:
                return None
            seg = self._claim_locked()
        name = os.path.basename(self.inbox)
        return f"{name} {why}: moved to segments/{seg} to be read in full"

    def claim(self, expected_id: str, lane: int = 0) -> bool:
        """Move ``lane``'s inbox to ``segments/`` if it is still the one with ``expected_id``."""
        if not (self._pinned and lane == self.lane):
            return self._lane(lane).claim(expected_id, lane)
        self._prepare()
        with _THREADS, self._locked():
            if read_dir_id(self.inbox) != expected_id:
                return False
            return self._claim_locked() is not None

    def _claim_locked(self) -> str | None:
        try:
            st = os.lstat(self.inbox)
        except FileNotFoundError:
            return None
        # The directory (or whatever stands in its place) moves as it is: its
        # id, when it has a sound one, keeps its cursors valid.
        seg = read_dir_id(self.inbox) if stat.S_ISDIR(st.st_mode) else None
        if seg is None or os.path.lexists(os.path.join(self.segments, seg)):
            seg = self._next_id()
        os.rename(self.inbox, os.path.join(self.segments, seg))
        fsync_dir(self.segments)
        fsync_dir(self.root)
        return seg

    def retire(self, seg: str) -> str:
        """Move a fully applied segment to the archive (the journal replay reads)."""
        ensure_private_dir(self.archive, under=os.path.dirname(self.root))
        dest = os.path.join(self.archive, seg)
        os.rename(os.path.join(self.segments, seg), dest)
        fsync_dir(self.archive)
        fsync_dir(self.segments)
        return dest

    def quarantine(self, seg: str) -> str:
        """Move a claimed entry that cannot be read as a queue directory out of the way."""
        dest_dir = os.path.join(self.root, "quarantine")
        ensure_private_dir(dest_dir, under=self.root)
        dest = os.path.join(dest_dir, seg)
        os.rename(os.path.join(self.segments, seg), dest)
        fsync_dir(dest_dir)
        fsync_dir(self.segments)
        return dest

    def prune_archive(
        self, max_age_s: float, max_bytes: int, now: float | None = None, keep_from: dict[int, str] | None = None
    ) -> list[str]:
        """Delete the oldest archived segments beyond the age or total-size limit (0 = none).

        A lane's segments from ``keep_from[lane]`` on are never deleted: someone
        (a push to the team database) has not read them yet; a lane missing
        from ``keep_from`` keeps all of its segments.
        """
        def held(name: str) -> bool:
            if keep_from is None:
                return False
            return name >= keep_from.get(read_dir_lane(os.path.join(self.archive, name)), "")

        # Only real directories: a link planted under the archive is never followed or removed through.
        names = [n for n in list_ids(self.archive) if not held(n) and _is_real_dir(os.path.join(self.archive, n))]
        if not names:
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
            import shutil  # only pruning needs it (and shutil pulls in bz2 and lzma)

            shutil.rmtree(os.path.join(self.archive, name))
            total -= sizes[name]
            removed.append(name)
        if removed:
            fsync_dir(self.archive)
        return removed

    def archive_bytes(self) -> tuple[int, int]:
        """(segments, bytes) in the archive."""
        names = list_ids(self.archive)
        return len(names), sum(dir_bytes(os.path.join(self.archive, n)) for n in names)

    # -- internals ------------------------------------------------------------------

    def _prepare(self) -> None:
        if self._ready:
            return
        for path, follow in ((self.home, True), (self.root, False), (self.segments, False)):
            why = check_private(path, follow=follow) or (unsafe_ancestor(path) if path == self.home else None)
            if why:
                raise SpoolError(f"cannot append to spool {self.root}: {UnsafePath(path, why)}", path=path)
        ensure_private_dir(self.root)
        ensure_private_dir(self.segments, under=self.root)
        self._ready = True

    def _locked(self) -> _SpoolLock:
        # The descriptor is kept for the next call, but not across fork: a
        # forked child shares the open file description, and with it the flock.
        if self._owner_pid != os.getpid() or self._lock_fd < 0:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE)
            self._owner_pid = os.getpid()
            self._queue, self._queue_inbox_id = None, None  # the parent's, not ours
        return _SpoolLock(self._lock_fd)

    def _take_lane(self) -> _SpoolLock:
        """This process's first append: the first lane whose lock is free, held; kept from then on.

        Uncontended, that is lane 0 at the cost of the one flock it always took.
        When every lane is busy the process waits on one picked by its pid.
        """
        pid = os.getpid()
        self._lane_pid = pid
        self._owner_pid, self._lock_fd = pid, -1
        self._queue, self._queue_inbox_id = None, None  # another lane's (or the parent's)
        lanes = lane_count()
        usable = []
        for lane in range(lanes):
            try:
                fd = os.open(lane_lock(self.root, lane), os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE)
            except OSError:
                continue  # a lock that cannot be opened (a link planted there): another lane serves
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                usable.append(lane)
                continue
            except BaseException:
                os.close(fd)
                raise
            self._set_lane(lane)
            self._lock_fd = fd
            return _SpoolLock(fd, held=True)
        self._set_lane(usable[pid % len(usable)] if usable else 0)  # none usable: lane 0's error is reported
        return self._locked()

    def _next_id(self) -> str:
        # Time-ordered and never reused, even if the clock steps back: the
        # databases' cursors are keyed by these ids. Lanes issue ids under
        # their own locks, so issuing takes one more, shared by all of them.
        fd = os.open(os.path.join(self.root, "ids.lock"), os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE)
        try:
            with _SpoolLock(fd):
                return self._issue_id()
        finally:
            os.close(fd)

    def _issue_id(self) -> str:
        marker = os.path.join(self.root, "last_segment")
        try:
            fd = os.open(marker, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
            with os.fdopen(fd, "rb") as fp:
                last = max(int(fp.read(64).strip()), _max_existing(self.segments))
        except (OSError, ValueError):
            last = _max_existing(self.segments, self.archive)
        seg = max(time.time_ns(), last + 1)
        write_atomic(marker, str(seg).encode())
        return f"{seg:0{ID_DIGITS}d}"


# A process that appends keeps each spool's descriptors open between appends (the lane's lock,
# the head chunk, its reader, the directory and ``acked``: five). A process that appends to many
# homes (a test runner, an analyzer walking projects) would otherwise hold five per home for good
# and run out at the usual limit of 1,024 descriptors, failing its own opens as well as ours.
OPEN_SPOOLS = 8  # spools whose descriptors stay open, the most recently used
KNOWN_SPOOLS = 1024  # spools remembered (closed): each keeps its lane for this process's order
_shared: dict[str, Spool] = {}  # spool root → its Spool, the most recently used last
_open: dict[str, None] = {}  # the roots whose descriptors are open, the most recently used last
_SHARED = threading.Lock()


def _fresh_shared_lock() -> None:
    global _SHARED
    _SHARED = threading.Lock()  # a child forked while another thread held it would wait for ever


os.register_at_fork(after_in_child=_fresh_shared_lock)


def shared_spool(root: str, archive: str) -> Spool:
    """This process's Spool for ``root``: the same object for every append (its lane, and with
    it the order of this process's records, stays), with the descriptors of at most
    ``OPEN_SPOOLS`` of them kept open."""
    with _SHARED:
        spool = _shared.pop(root, None)
        if spool is None:
            spool = Spool(root, archive)
        _shared[root] = spool
        _open.pop(root, None)
        _open[root] = None
        closing = None
        if len(_open) > OPEN_SPOOLS:
            oldest = next(iter(_open))
            del _open[oldest]
            closing = _shared.get(oldest)
        if len(_shared) > KNOWN_SPOOLS:
            del _shared[next(r for r in _shared if r not in _open)]  # closed already
    if closing is not None:
        closing.close()  # outside _SHARED: it waits for an append in flight on another thread
    return spool


class _SpoolLock:
    """The spool's exclusive flock for one ``with`` (a class: contextlib costs start-up on the hook path)."""

    __slots__ = ("fd", "held")

    def __init__(self, fd: int, held: bool = False) -> None:
        self.fd = fd
        self.held = held  # already taken (a lane's lock, tried without waiting)

    def __enter__(self) -> None:
        if not self.held:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def is_dir_id(name: str) -> bool:
    """Whether ``name`` is a queue directory's id (its creation time in nanoseconds, fixed width)."""
    return len(name) == ID_DIGITS and name.isascii() and name.isdigit()


def list_ids(path: str) -> list[str]:
    """The queue-directory names (ids) in ``path``, oldest first."""
    try:
        return sorted(n for n in os.listdir(path) if is_dir_id(n))
    except (FileNotFoundError, NotADirectoryError):
        return []


def read_dir_id(path: str) -> str | None:
    try:
        dfd = os.open(path, DIR_FLAGS)
    except OSError:
        return None  # missing, or not a directory we may enter (a link)
    try:
        fd = os.open(ID_FILE, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=dfd)
        try:
            text = os.read(fd, 64).decode("ascii", "replace").strip()  # written whole by one rename
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(dfd)
    return text if is_dir_id(text) else None


def read_dir_lane(path: str) -> int:
    """The lane a queue directory was written in: its ``lane`` file, 0 without one (lane 0, or older
    than lanes). The file is written before the directory's id and never changes."""
    try:
        dfd = os.open(path, DIR_FLAGS)
    except OSError:
        return 0
    try:
        fd = os.open(LANE_FILE, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=dfd)
        try:
            text = os.read(fd, 8).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return 0
    finally:
        os.close(dfd)
    return int(text) if text.isascii() and text.isdigit() and int(text) < MAX_LANES else 0


def _inbox_looks_sound(path: str) -> bool:
    """The cheap check the consumer makes every pass: a private directory with a readable id and
    a readable info (or no inbox at all). Anything else gets ``inbox_problem``'s full look."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode) or check_private(path) is not None:
        return False
    try:
        _sound_info(path)  # never through a link, it must decode, and its head must name a chunk
    except (OSError, CorruptRecord, ValueError, TypeError, KeyError):
        return False
    return read_dir_id(path) is not None


def inbox_problem(path: str) -> str | None:
    """Why the inbox at ``path`` must not be appended to or read live, or None (also when absent).

    Sound: a private directory of regular files whose ``id`` reads, and whose
    ``info`` reads whenever a chunk holds bytes.
    """
    if not os.path.lexists(path):
        return None
    why = check_private(path)
    if why:
        return f"is {why}"
    has_data = False
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    est = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # info.tmp renamed by a producer as we looked: gone is fine
                if not stat.S_ISREG(est.st_mode):
                    return f"holds {entry.name!r}, which is not a regular file"
                if entry.name.startswith("q") and est.st_size:
                    has_data = True
    except FileNotFoundError:
        return None  # claimed meanwhile: nothing to rescue
    if not has_data:
        return None
    if read_dir_id(path) is None:
        return "has queued bytes but no readable id"
    try:
        _sound_info(path)
    except FileNotFoundError:
        return "has queued bytes but no info"
    except (OSError, CorruptRecord, ValueError, TypeError, KeyError) as exc:
        return f"has an unreadable info ({exc})"
    return None


def _sound_info(path: str) -> None:
    """Raises unless ``path``'s info decodes and its head names a chunk the directory holds."""
    dfd = os.open(path, DIR_FLAGS)
    try:
        check_head(read_info(path, dfd), dfd)
    finally:
        os.close(dfd)


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _cut_back(path: str, start: list[int], queue: Any) -> None:
    """Truncate a queue directory's chunks back to ``start`` ([chunk, count, offset]) after a
    failed append. Through the queue's own descriptor where it can (the one the bytes went
    through); best effort: if even this fails, the next producer's recovery decides."""
    head = int(queue.info["head"][0])
    first = int(start[0])
    try:
        if head == first:
            os.ftruncate(queue.headf.fileno(), int(start[2]))
            return
        dfd = os.open(path, DIR_FLAGS)
    except (OSError, AttributeError, ValueError):
        return
    try:
        for chunk in range(first, head + 1):
            try:
                fd = os.open(f"q{chunk:05d}", os.O_WRONLY | NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except OSError:
                continue
            try:
                os.ftruncate(fd, int(start[2]) if chunk == first else 0)
            except OSError:
                pass  # a read-only or failing disk: recovery at the next open decides
            finally:
                os.close(fd)
    finally:
        os.close(dfd)


def _names(path: str, queue: Any, id_file: tuple[int, ...] | None) -> bool:
    """``path`` still names the directory this Queue holds open, and its id is the file read when
    the Queue was opened (two ``stat`` calls, where reading the id took five). The directory's
    inode cannot be reused while we hold it, so the same device and inode means the same
    directory: a claim renamed it away, a fresh inbox is another inode, a link planted there is
    the link's own. An id is written once, by a rename, so any change to it (deleted, replaced,
    rewritten) shows in its inode, size or time: then the inbox is checked again on the way in,
    and one no producer leaves is moved aside, never appended to."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != queue.dir_identity():
            return False
        return id_file is not None and _id_identity(queue.dir_fd()) == id_file
    except OSError:
        return False


def _id_identity(dir_fd: int) -> tuple[int, ...] | None:
    """What identifies this directory's id file as written (None without one): see ``_names``."""
    try:
        st = os.stat(ID_FILE, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns)


def _untouched(queue: Any) -> bool:
    """Nobody appended since this Queue did: its head chunk ends where it left it, and
    no next chunk exists (another producer would have started one at the rollover)."""
    if not _consistent(queue):
        return False
    try:  # in the directory the queue holds (_names has checked that the inbox path still leads there)
        # access, not stat: on every enqueue the answer is "no such file", and a raised
        # FileNotFoundError cost 4-6 µs of an 85 µs enqueue. (An error other than "no such
        # file" reads as none there too: the head chunk checked above is what we append to.)
        return not os.access(f"q{int(queue.info['head'][0]) + 1:05d}", os.F_OK, dir_fd=queue.dir_fd(),
                             follow_symlinks=False)
    except (OSError, KeyError, TypeError, ValueError, NotImplementedError):
        return False  # NotImplementedError: no faccessat here; the queue is reopened instead


def _consistent(queue: Any) -> bool:
    """The head chunk holds exactly what info acknowledges (Queue() already cut anything past it)."""
    try:
        return bool(os.fstat(queue.headf.fileno()).st_size == int(queue.info["head"][2]))
    except (OSError, KeyError, TypeError, ValueError):
        return False


def dir_bytes(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.name.startswith("q") and entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def _max_existing(*dirs: str) -> int:
    best = 0
    for d in dirs:
        try:
            for n in os.listdir(d):
                if is_dir_id(n):
                    best = max(best, int(n))
        except FileNotFoundError:
            continue
    return best
