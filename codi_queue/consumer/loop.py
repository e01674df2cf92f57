"""The consumer: the only process that writes the tier databases.

One pass walks every queue directory oldest first (claimed segments, then
the live inbox), reads records past the lowest tier cursor, routes each
operation to its tier and applies batches there (``apply.apply_items``).
Between batches it checks the stop flag that SIGTERM/SIGINT set, so a
signal lets the batch in flight commit (or roll back) and the process exit 0.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..config import Config
from ..errors import CodiQueueError, HomeReplaced, TierUnavailable, UnsafePath, shown
from ..errorlog import ensure_reserve, record_error
from ..fsutil import ensure_private_dir
from ..paths import Paths
from ..signals import calling_on
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import QUARANTINE_INLINE, Entry, SegmentReader, cannot_read_now, describe_lost, describe_pos
from ..queue.spool import QueueDir, Spool, dir_bytes
from ..schemas.registry import ALL_TIERS, STATE_TIER
from .apply import DeadLetter, apply_items, get_cursor, repay_owed
from .batch import Batch
from .db import BUSY_TIMEOUT_MS, open_tier
from .lock import ConsumerLock
from .metrics import Metrics
from .pushed import retention_hold
from .records import decode_record
from .tail import Tailers
from .turns import BREAK_S, HOLD_S, WriteTurns
from .wake import UNWATCHED_POLL_S, Waker

__all__ = ["Consumer", "ConsumerStats"]

log = logging.getLogger("codi_queue.consumer")

# Readers that overlap without a gap (dashboards) starve SQLite's passive
# autocheckpoint, and the WAL grows without bound. Past this size the
# consumer checkpoints with TRUNCATE, which waits out the current readers.
WAL_CHECKPOINT_BYTES = 32 * 1024 * 1024
# How long that checkpoint may wait for readers. It holds the write lock while it waits, so this
# stays well under the busy timeout of the platform's own writers (5 s): past it, the checkpoint
# copies what it can without waiting and is tried again on a later pass.
CHECKPOINT_WAIT_MS = 1000
TIER_RETRY_S = 60.0  # how often a tier that could not be opened or adopted is tried again
# How long the consumer waits for producers to publish an acknowledged position
# that lags info (normally a millisecond: the fsyncs) before syncing the head itself.
HINT_GRACE_S = 1.0
# Faults that pass by themselves (a lock, a full disk): retried with backoff like any
# pass. Anything else while opening or adopting a tier sets that tier aside.
_PASSING = (apsw.BusyError, apsw.LockedError, apsw.IOError, apsw.FullError, apsw.NoMemError)
_PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})

@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """A drain allocates several objects per operation, none in cycles, and the cyclic collector
    would walk them again and again; reference counting frees them all the same. It runs again
    (on what piled up) as soon as the queue directory is drained."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class ConsumerStats:
    operations: int = 0  # operations applied or dead-lettered
    applied: int = 0  # rows changed
    dead_letters: int = 0
    batches: int = 0
    damaged_spans: int = 0
    lost_operations: int = 0  # operations that damage destroyed (counted where the frames tell)
    started: float = field(default_factory=time.time)


class Consumer:
    def __init__(
        self,
        paths: Paths,
        *,
        batch_ops: int = 20_000,
        poll_interval: float = 2.0,
        rotate_bytes: int = 16 * 1024 * 1024,
        rotate_age_s: float = 3600.0,
        max_backoff_s: float = 30.0,
        config: Config | None = None,
        tiers: tuple[str, ...] = ALL_TIERS,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        self.paths = paths
        self.config = config
        self.tiers = tiers  # a rebuild may write only some
        self.busy_timeout_ms = busy_timeout_ms
        self._identity: dict[str, tuple[int, int]] = {}  # tier → (st_dev, st_ino) of the file opened
        self.spool = Spool(paths.spool, paths.archive)
        self.batch_ops = batch_ops
        self.poll_interval = poll_interval
        self.rotate_bytes = rotate_bytes
        self.rotate_age_s = rotate_age_s
        self.max_backoff_s = max_backoff_s
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._waker: Waker | None = None
        self._lock: ConsumerLock | None = None  # held while run() runs
        self._unwatched: list[str] = []  # what the waker could not watch, as last reported
        self._conns: dict[str, apsw.Connection] = {}
        self._turns: dict[str, WriteTurns] = {}  # each connection's turns at its write lock
        self._wal_held: set[str] = set()  # tiers whose WAL readers keep from being truncated, as said
        # Tiers whose database could not be opened or adopted, and why: the
        # others go on applying; their operations wait in the spool.
        self.unavailable: dict[str, str] = {}
        self._retry_tiers_at = 0.0
        # inbox id → (the info position the acknowledged one must reach, since when)
        self._hint_lag: dict[str, tuple[int, float]] = {}
        self._once = False
        self._pending_ids: list[str] = []  # directories not archived, as last listed: their cursors stay
        # Claimed directories that must stay where they are (the archive or quarantine is a link we
        # never write through), and why, as last said: the rest of the spool goes on, and each
        # pass tries again. Unreadable ones are never archived as if applied.
        self._stuck: dict[str, str] = {}
        self._unreadable: set[str] = set()
        self._waiting: dict[str, str] = {}  # directories that cannot be read now, and why, as last said
        self._inboxes_waiting: dict[str, str] = {}  # the same for lane inboxes whose id cannot be read
        self._cursors: dict[str, dict[str, int]] = {}
        self.tailers = Tailers(paths, config, self._report) if config is not None else None
        self.metrics = Metrics(paths.metrics)
        self._housekeeping_at = 0.0
        self._metrics_error: str | None = None
        # Called after each batch commits (the team push thread wakes on it); must not block.
        self.on_commit: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------

    def run(self, once: bool = False, on_start: Callable[[], None] | None = None) -> ConsumerStats:
        """Hold the home's consumer lock and drain; with ``once``, stop when nothing is left.

        ``on_start`` is called once the home is ours and checked (the CLI says so).
        """
        with ConsumerLock(self.paths) as lock:
            self._lock = lock
            self._check_dirs()
            if on_start is not None:
                on_start()
            self._once = once
            try:
                if once:
                    # Pass 1 applies everything acknowledged before it began;
                    # the next ones retire what it claimed and catch stragglers.
                    self._open_databases()
                    self._poll_sources()
                    self.drain(max_passes=3)
                    self._housekeeping(force=True)
                    if self.unavailable:
                        raise TierUnavailable(self.unavailable)
                else:
                    self._serve()  # opens the databases inside its retry loop: a locked one only delays
            finally:
                self._close_databases()
                if lock.still_guards():  # else the metrics file is the new home's, its consumer's to write
                    self._flush_metrics(force=True, running=False)
        return self.stats

    def _flush_metrics(self, force: bool = False, running: bool = True) -> None:
        why = self.metrics.flush(force=force, running=running)
        if why and why != self._metrics_error:
            self._report(why)  # once per distinct failure: a full disk must not flood the log
        self._metrics_error = why

    def request_stop(self) -> None:
        """Finish the batch in flight, then return from ``run``. Takes locks: never call it from a
        signal handler (``signals.calling_on`` runs it on a thread of its own)."""
        self._stop.set()
        if self._waker is not None:
            self._waker.wake()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _serve(self) -> None:
        backoff = 0.0
        extra = self.tailers.watch_dirs() if self.tailers else []
        with Waker(self.paths.spool, self.poll_interval, extra) as waker, self._signals():
            self._waker = waker
            try:
                while not self.stopping:
                    if self._lock is not None and not self._lock.still_guards():
                        self._report(str(HomeReplaced(self.paths.home)))
                        raise HomeReplaced(self.paths.home)
                    self._note_unwatched(waker)
                    try:
                        self._poll_sources()
                        self.drain()
                        self._housekeeping()
                        backoff = 0.0
                    except Exception as exc:  # noqa: BLE001 - nothing may stop the consumer; reported, retried
                        # Infrastructure trouble (disk full, database locked or gone), or
                        # a defect of ours: everything not committed stays queued, the
                        # reason goes to the log and status, and we retry with backoff.
                        backoff = min(self.max_backoff_s, max(0.5, backoff * 2))
                        self._report(f"drain failed, retrying in {backoff:.1f}s: {type(exc).__name__}: {exc}")
                        self._reopen_databases()
                        self._stop.wait(backoff)
                        continue
                    if not self.stopping:
                        waker.watch_sources()  # a source created, deleted or replaced since: watched anew
                        waker.wait()
            finally:
                self._waker = None

    @contextmanager
    def _signals(self) -> Iterator[None]:
        def stop(signum: int) -> None:  # on calling_on's thread, never inside the handler
            log.info("signal %d: finishing the batch in flight, then exiting", signum)
            self.request_stop()

        # A file-size limit must surface as an error we back off from (EFBIG),
        # not as the default SIGXFSZ that kills the process mid-batch.
        ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN) if _in_main_thread() else None
        try:
            with calling_on((signal.SIGTERM, signal.SIGINT), stop):
                yield
        finally:
            if ignored is not None:
                signal.signal(signal.SIGXFSZ, ignored)

    def _check_dirs(self) -> None:
        self.paths.check_safe()
        for path in (self.paths.spool, self.paths.db_dir, self.paths.state, self.paths.logs):
            ensure_private_dir(path)

    def _open_databases(self) -> None:
        """Open (and migrate or adopt) every tier; one that fails is reported and set aside."""
        for tier in self.tiers:
            if tier in self._conns:
                continue
            path = self.paths.database(tier)
            try:
                self._conns[tier] = conn = open_tier(self.paths.database_file(tier), tier, self.busy_timeout_ms)
                # An adopted database has writers of its own: take turns with them from the start.
                # Its breaks wait on the stop flag: a SIGTERM is answered at once, not after a break.
                self._turns[tier] = WriteTurns(conn, shared=self.paths.configured_database(tier), sleep=self._stop.wait)
                st = os.stat(path)
            except (apsw.Error, OSError, CodiQueueError) as exc:
                self._turns.pop(tier, None)
                failed = self._conns.pop(tier, None)
                if failed is not None:
                    failed.close()
                if isinstance(exc, _PASSING) or isinstance(exc, OSError) and exc.errno in _PASSING_ERRNOS:
                    raise  # a lock or a full disk: the whole pass backs off and retries soon
                why = f"{type(exc).__name__}: {exc}"
                if self.unavailable.get(tier) != why:
                    self._report(f"{tier} database {path} cannot be opened or adopted, its operations wait in the "
                                 f"spool (the other tiers go on): {why}")
                self.unavailable[tier] = why
                self._retry_tiers_at = time.monotonic() + TIER_RETRY_S
                continue
            if self.unavailable.pop(tier, None) is not None:
                log.info("%s database %s is available again", tier, path)
            # The first file seen is the one to compare with; a reopen after a
            # fault keeps it, so _check_databases notices a replacement.
            self._identity.setdefault(tier, (st.st_dev, st.st_ino))
        self.metrics.unavailable = dict(self.unavailable)

    @property
    def available(self) -> tuple[str, ...]:
        return tuple(t for t in self.tiers if t in self._conns)

    def _check_databases(self) -> None:
        """A tier file deleted or replaced under us: reopen it and refill it from the journal.

        Writes to a deleted file vanish with it, so the fresh file gets every
        archived operation again (pending ones follow from its empty cursors);
        op ids make any overlap harmless.
        """
        for tier, conn in list(self._conns.items()):
            path = self.paths.database(tier)
            try:
                st = os.stat(path)
                same = (st.st_dev, st.st_ino) == self._identity.get(tier)
            except FileNotFoundError:
                same = False
            if same:
                continue
            self._report(f"{tier} database {path} was deleted or replaced while open: recreating it from the journal")
            conn.close()
            del self._conns[tier], self._turns[tier]
            self._cursors.clear()
            self._open_databases()
            st = os.stat(path)
            self._identity[tier] = (st.st_dev, st.st_ino)
            for qd in self.spool.archived_dirs():  # the journal's archived part, into this tier only
                try:
                    self._drain_dir(qd, tiers=(tier,))
                except FileNotFoundError:
                    continue

    def _close_databases(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._turns.clear()

    def _reopen_databases(self) -> None:
        self._close_databases()
        self._cursors.clear()  # reload from what actually committed
        try:
            self._open_databases()
        except (apsw.Error, OSError) as exc:
            self._report(f"cannot reopen databases: {exc}")

    # -- draining -------------------------------------------------------------------

    def drain(self, max_passes: int | None = None) -> int:
        """Pass over the spool until a pass finds nothing new; the number of operations handled."""
        if not self._conns or self.unavailable and time.monotonic() >= self._retry_tiers_at:
            self._open_databases()
        self._pending_ids = [qd.id for qd in self.spool.queue_dirs()]  # before a refill commits anything
        self._check_databases()
        total = passes = 0
        while not self.stopping and (max_passes is None or passes < max_passes):
            passes += 1
            handled = 0
            out_of_reach: dict[str, OSError] = {}
            for rescued in self.spool.rescue_inboxes(out_of_reach):
                self._report(rescued)
            said, self._inboxes_waiting = self._inboxes_waiting, {}
            for path, exc in out_of_reach.items():  # listed by no pass (their id cannot be read): said here
                why = _waiting_reason(path, exc)
                if said.get(path) != why:
                    self._report(why)
                self._inboxes_waiting[path] = why
            dirs = list(self.spool.queue_dirs())
            self._pending_ids = [qd.id for qd in dirs]
            self._unreadable.clear()
            for qd in dirs:
                n, complete = self._drain_dir(qd)
                handled += n
                if self.stopping or not complete:
                    break
                if self.unavailable:
                    continue  # a tier that cannot be written still needs these records: nothing moves
                if qd.live:
                    self._maybe_rotate(qd)
                elif qd.id not in self._unreadable:
                    self._retire(qd.id)
            total += handled
            self._bound_wal()
            if not handled:
                break
        return total

    def _bound_wal(self) -> None:
        for tier, conn in self._conns.items():
            try:
                size = os.path.getsize(self.paths.database(tier) + "-wal")
            except FileNotFoundError:
                continue
            if size <= WAL_CHECKPOINT_BYTES:
                continue
            with self._turns[tier](may_hold=CHECKPOINT_WAIT_MS / 1000):
                conn.set_busy_timeout(CHECKPOINT_WAIT_MS)
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    conn.set_busy_timeout(self.busy_timeout_ms)
            if row is None or row[0]:
                if tier not in self._wal_held:  # said once, not at every pass while readers stay
                    self._report(f"{tier}: WAL is {size} bytes and readers kept it from being checkpointed; "
                                 "retrying")
                self._wal_held.add(tier)
            else:
                self._wal_held.discard(tier)
                log.info("%s: checkpointed and truncated a %d-byte WAL", tier, size)

    def apply_journal(self, dirs: list[QueueDir], progress: Callable[[int], None] | None = None) -> ConsumerStats:
        """Apply queue directories in order without claiming or archiving anything (a rebuild)."""
        self._once = True  # the inbox too, up to its info: no producer's acknowledgement to wait for
        self._pending_ids = [qd.id for qd in self.spool.queue_dirs()]
        self._open_databases()
        try:
            for n, qd in enumerate(dirs, 1):
                try:
                    self._drain_dir(qd)
                except FileNotFoundError:
                    continue  # the live consumer archived it meanwhile; it is listed again below
                if qd.id in self._waiting:  # a rebuild without its operations would replace what holds them
                    raise CodiQueueError(f"{self._waiting[qd.id]}; nothing was rebuilt or replaced")
                if progress:
                    progress(n)
        finally:
            self._close_databases()
        return self.stats

    def _retire(self, seg: str) -> None:
        """Archive an applied directory; one the archive cannot take safely stays in the spool."""
        try:
            self.spool.retire(seg)
        except UnsafePath as exc:
            self._stays(seg, f"segment {seg} is applied but stays in the spool: {exc}")
            return
        self._stuck.pop(seg, None)
        self._cursors.pop(seg, None)

    def _stays(self, seg: str, why: str) -> None:
        # Said once per directory and reason, not on every pass.
        if self._stuck.get(seg) != why:
            self._report(why)
        self._stuck[seg] = why

    def _cursor_map(self, seg: str) -> dict[str, int]:
        cursors = self._cursors.get(seg)
        if cursors is None:
            cursors = {}
            for t in ALL_TIERS:
                pos = get_cursor(self._conns[t], seg) if t in self._conns else 0
                if pos is None:
                    self._report(f"segment {seg}: the {t} database's cursor there is not a position; "
                                 "reading it again from its start (operation ids keep each applied once)")
                cursors[t] = pos or 0
            self._cursors[seg] = cursors
        return cursors

    def _drain_dir(self, qd: QueueDir, tiers: tuple[str, ...] | None = None) -> tuple[int, bool]:
        """Apply what ``qd`` holds past the cursors of ``tiers`` (default: every tier open)."""
        cursors = self._cursor_map(qd.id)
        tiers = tiers or self.available
        if not tiers:
            return 0, False
        start = min(cursors[t] for t in tiers)
        try:
            reader = SegmentReader(qd.path, live=qd.live, trust_info=qd.live and self._hint_overdue(qd.id))
        except OSError as exc:
            if cannot_read_now(exc):
                return self._waits(qd, exc, 0)
            if qd.live or isinstance(exc, FileNotFoundError):
                raise
            # A link or a file where a segment should be: never read, moved out
            # of the way, and the pass goes on (1 handled: the next pass runs).
            try:
                dest = self.spool.quarantine(qd.id)
            except UnsafePath as unsafe:
                self._stays(qd.id, f"segment {qd.id} cannot be read as a queue directory ({exc.strerror or exc}), "
                                   f"and stays where it is: {unsafe}")
                self._unreadable.add(qd.id)
                return 0, True
            self._report(f"segment {qd.id} cannot be read as a queue directory ({exc.strerror or exc}): moved to {dest}")
            return 1, False
        with reader:
            for warning in reader.warnings:
                self._report(warning)
            if qd.live:
                self._note_hint(qd.id, reader)
            if max(cursors[t] for t in tiers) > reader.info_end and (reader.info_end or not qd.live):
                # Past everything the directory holds (a live inbox's acknowledged line may trail a
                # cursor after a power cut, never the data): a cursor written from outside, or data
                # cut after it was applied. Read it again; operation ids keep each applied once.
                # (A live inbox whose info is missing or damaged says nothing of its extent: it is
                # moved aside, and judged once claimed.)
                self._report(f"segment {qd.id}: a cursor lies past the end of its data "
                             f"({describe_pos(reader.info_end)}); reading it again from its start")
                for t in tiers:
                    if cursors[t] > reader.info_end:
                        cursors[t] = 0
                start = min(cursors[t] for t in tiers)
            if start >= reader.end:
                return self._readable(qd, 0)
            handled = 0
            try:
                if reader.trusted:
                    reader.make_durable()  # no producer vouched for these bytes: sync them before reading
                batch = Batch(qd.id, cursors, tiers, start)
                with _cyclic_gc_paused():
                    for entry in reader.entries(start):
                        self._route(batch, entry, reader)
                        if batch.full(self.batch_ops):
                            handled += self._commit(batch)
                            batch = Batch(qd.id, cursors, tiers, entry.end)
                            if self.stopping:
                                return handled, False
                    if batch:
                        handled += self._commit(batch)
            except OSError as exc:
                if not cannot_read_now(exc):
                    raise
                return self._waits(qd, exc, handled)  # what was read before it stays committed
        return self._readable(qd, handled)

    def _waits(self, qd: QueueDir, exc: OSError, handled: int) -> tuple[int, bool]:
        """A directory that cannot be read now (a permission taken away, descriptors run out) is
        not damage: its operations wait in it, never archived as applied, while the rest of the
        spool goes on; it is read again on every pass. Said once per directory and reason."""
        why = _waiting_reason(qd.path, exc)
        self._unreadable.add(qd.id)
        if self._waiting.get(qd.id) != why:
            self._report(why)
        self._waiting[qd.id] = why
        return handled, True

    def _readable(self, qd: QueueDir, handled: int) -> tuple[int, bool]:
        if self._waiting.pop(qd.id, None) is not None:
            log.info("%s can be read again", qd.path)
        return handled, True

    def _route(self, batch: Batch, entry: Entry, reader: SegmentReader) -> None:
        """One record into the batch: its operations to their tiers, its damage to the state database."""
        seg = batch.seg
        fresh = batch.wants(STATE_TIER, entry.end)  # damage not yet reported by an earlier run
        damaged: list[DeadLetter] = []
        if entry.payload is None:
            batch.take(entry.end, (), False, [self._damage_letter(seg, entry, reader)] if fresh else [])
            return
        if entry.lost and fresh:
            reason = f"{describe_lost(entry.lost)} just before {describe_pos(entry.start)} (their records are gone)"
            self._report(f"segment {seg}: {reason}")
            damaged.append(DeadLetter(f"gap:{seg}:{entry.start}", "?", reason, b"", entry.start, "raw"))
            self.stats.lost_operations += entry.lost
        is_json = entry.kind == KIND_JSON_RECORD
        try:
            record, replaced = decode_record(entry.payload, is_json)
        except Exception as exc:  # noqa: BLE001 - any failure to decode one record makes it a dead letter
            if fresh:
                reason = f"undecodable record at {describe_pos(entry.start)}: {type(exc).__name__}: {exc}"
                self._report(f"segment {seg}: {reason}")
                damaged.append(
                    DeadLetter(f"record:{seg}:{entry.start}", "?", reason, entry.payload, entry.start, "raw")
                )
            batch.take(entry.end, (), False, damaged)
            return
        if replaced and fresh:
            self._report(f"segment {seg}: record at {describe_pos(entry.start)}: invalid UTF-8 or unpaired "
                         "surrogates replaced with U+FFFD")
        batch.take(entry.end, record.ops, is_json, damaged)

    def _note_unwatched(self, waker: Waker) -> None:
        """Say once when a directory cannot be watched (the consumer polls it) and when it is again."""
        if waker.unwatched == self._unwatched:
            return
        for what in waker.unwatched:
            if what not in self._unwatched:
                self._report(f"cannot watch {what}: polled every {UNWATCHED_POLL_S} s instead, and watched again "
                             "once the kernel allows it")
        if not waker.unwatched:
            log.info("every directory is watched again")
        self._unwatched = self.metrics.unwatched = list(waker.unwatched)

    def _hint_overdue(self, seg: str) -> bool:
        """The acknowledged position has not reached what ``info`` named a grace ago: read (and sync) to ``info``."""
        if self._once:
            return True  # draining what is there and exiting: nothing to wait for
        lag = self._hint_lag.get(seg)
        return lag is not None and time.monotonic() - lag[1] >= HINT_GRACE_S

    def _note_hint(self, seg: str, reader: SegmentReader) -> None:
        # Under steady load the acknowledged position always trails info by the
        # fsyncs in flight; only a position that is not reached within the grace
        # (a producer that died before publishing, a lost hint) is overdue.
        lag = self._hint_lag.get(seg)
        if reader.trusted or reader.end >= reader.info_end:
            self._hint_lag.pop(seg, None)
        elif lag is None or reader.end >= lag[0]:
            self._hint_lag[seg] = (reader.info_end, time.monotonic())
            if self._waker is not None:
                self._waker.wake_after(HINT_GRACE_S)  # come back then, even if nothing else happens

    def _damage_letter(self, seg: str, entry: Entry, reader: SegmentReader) -> DeadLetter:
        """A dead letter for a damaged span, its whole bytes copied aside when they exceed what it holds inline."""
        reason = f"damaged spool bytes at {describe_pos(entry.start)}: {entry.damage}; {describe_lost(entry.lost)}"
        if len(entry.raw) >= QUARANTINE_INLINE:
            kept = self._keep_span(seg, entry, reader)
            reason += f"; all {kept[1]} bytes kept in {kept[0]}" if not isinstance(kept, str) else \
                f"; only the first 1 MiB could be kept ({kept})"
        self._report(f"segment {seg}: {reason}")
        self.stats.damaged_spans += 1
        self.stats.lost_operations += entry.lost or 0
        return DeadLetter(f"damage:{seg}:{entry.start}", "?", reason, entry.raw, entry.start, "raw")

    def _keep_span(self, seg: str, entry: Entry, reader: SegmentReader) -> tuple[str, int] | str:
        """The damaged span's bytes copied whole into ``spool/quarantine``: (file, bytes), or why not.

        Only its data is written: a hole stays a hole (a sparse chunk's gigabytes of nothing took
        as much disk again, and the time to write it). A copy never takes more than half the free
        space: a full disk would stop every producer and the consumer itself. A copy that fails
        part-way is removed, not left to fill the disk."""
        from ..fsutil import open_regular, write_all

        folder = os.path.join(self.paths.spool, "quarantine")
        path = os.path.join(folder, f"{seg}.{entry.start}-{entry.end}.bin")
        span = reader.span_data(entry.start, entry.end)
        if span is None:
            return "its chunk could not be opened again"
        made = False
        try:
            with span:
                ensure_private_dir(folder, under=self.paths.home)
                st = os.statvfs(folder)
                free = st.f_bavail * st.f_frsize
                if span.data_bytes > free // 2:
                    return (f"its {span.data_bytes} bytes would take more than half of the {free} bytes free; "
                            f"they stay in the segment's chunk, archived with it")
                fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                made = True
                try:
                    for offset, block in span.blocks():
                        os.lseek(fd, offset, os.SEEK_SET)
                        write_all(fd, block)
                    os.ftruncate(fd, span.size)  # the span's length, its holes kept as holes
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except (OSError, UnsafePath) as exc:
            if made:
                try:
                    os.unlink(path)
                except OSError as gone:
                    self._report(f"could not remove the partial copy {path}: {gone}")
            self._report(f"could not copy damaged bytes to {path}: {exc}")
            return f"the copy failed: {exc}"
        return path, span.size

    def _commit(self, batch: Batch) -> int:
        """Apply the batch, one transaction per tier; returns its size."""
        seg, end, cursors = batch.seg, batch.end, batch.cursors
        for tier, items in batch.routed.items():
            extra = batch.damaged if tier == STATE_TIER else []
            if not items and not extra or tier not in self._conns:
                continue
            turns = self._turns[tier]
            shared = turns.shared
            with turns:
                result = apply_items(self._conns[tier], seg, end, items, extra, keep=self._pending_ids)
            if turns.shared and not shared:
                log.info("another program writes the %s database: the consumer leaves its write lock free for "
                         "%.2f s after each %.1f s it holds it", tier, BREAK_S, HOLD_S)
            cursors[tier] = end  # committed: a retry after a later tier's failure skips these
            self.stats.operations += len(items)
            self.stats.applied += sum(result.applied.values())
            for dead in result.dead:
                if dead.op != "?":
                    self._report(f"dead letter {shown(dead.op_id)} ({shown(dead.op)}): {dead.reason}")
            self.stats.dead_letters += len(result.dead)
            for problem in (result.repay_error, result.summary_error):
                if problem:
                    self._report(f"{tier}: {problem}")
            for key, n in result.outside.items():
                self.metrics.outside[key] = self.metrics.outside.get(key, 0) + n
            self.metrics.batch(len(items) + len(extra), sum(result.applied.values()), len(result.dead))
            if tier != STATE_TIER and result.retried and STATE_TIER in self._conns:
                # Retries of dead letters filed in the state database (an op this
                # code did not know then, a rejected source line) succeeded here.
                # Deleting after the tier committed is safe to repeat.
                state = self._conns[STATE_TIER]
                for op_id in result.retried:
                    state.execute("DELETE FROM cq_dead_letters WHERE op_id = ?", (op_id,))
        for tier in batch.routed:
            # Tiers with nothing in [start, end) are done with it too; only the
            # in-memory cursor moves (a restart re-reads, and skips, the span).
            # A tier set aside keeps its cursor: it re-reads the span when it is back.
            if tier in self._conns:
                cursors[tier] = max(cursors[tier], end)
        self.stats.batches += 1
        self._flush_metrics()
        if self.on_commit is not None:
            self.on_commit()
        return batch.size

    def _housekeeping(self, force: bool = False) -> None:
        """Archive retention and the Prometheus textfile, at most once a minute."""
        now = time.time()
        if not force and now - self._housekeeping_at < 60:
            return
        self._housekeeping_at = now
        self._flush_metrics(force=True)
        ensure_reserve(self.paths.logs)
        self._repay_summaries()
        if self.config is None:
            return
        sync = self.config.sync
        removed = self.spool.prune_archive(
            self.config.archive_max_age_days * 86400, self.config.archive_max_bytes,
            keep_from=retention_hold(self.paths, sync.push) if sync else None,
        )
        if removed:
            log.info("archive retention removed %d segments", len(removed))
        if self.config.prometheus_textfile:
            from .status import collect, prometheus_text, write_textfile

            try:
                write_textfile(self.config.prometheus_textfile, prometheus_text(collect(self.paths, count_backlog=False)),
                               self.paths)
            except (OSError, apsw.Error) as exc:
                self._report(f"could not write {self.config.prometheus_textfile}: {exc}")

    def _repay_summaries(self) -> None:
        """Summary rows a failed batch owes, recomputed even when no next batch comes."""
        for tier, conn in self._conns.items():
            try:
                with self._turns[tier]:
                    failed = repay_owed(conn)
            except (apsw.Error, OSError) as exc:
                failed = f"{type(exc).__name__}: {exc}"
            if failed:
                self._report(f"{tier}: {failed}")

    def _poll_sources(self) -> None:
        if self.tailers:
            n = self.tailers.poll()
            if n:
                log.info("enqueued %d operations from watched sources", n)

    def _maybe_rotate(self, qd: QueueDir) -> None:
        try:
            age = time.time() - int(qd.id) / 1e9
            big = dir_bytes(qd.path) >= self.rotate_bytes
        except (FileNotFoundError, ValueError):
            return  # claimed by a producer's corruption recovery meanwhile
        if big or age >= self.rotate_age_s:
            if self.spool.claim(qd.id, qd.lane):
                log.info("claimed inbox %s (lane %d) as a segment", qd.id, qd.lane)

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        record_error(self.paths.error_log, "consumer", message)


def _waiting_reason(path: str, exc: OSError) -> str:
    name = f": {exc.filename}" if isinstance(exc.filename, str) and exc.filename != path else ""
    return f"{path} cannot be read now ({exc.strerror or exc}{name}): its operations wait there until it can"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
