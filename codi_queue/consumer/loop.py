"""The consumer: the only process that writes the tier databases.

One pass walks every queue directory oldest first (claimed segments, then
the live inbox), reads records past the lowest tier cursor, routes each
operation to its tier and applies batches there (``apply.apply_items``).
Between batches it checks the stop flag that SIGTERM/SIGINT set, so a
signal lets the batch in flight commit (or roll back) and the process exit 0.
"""

from __future__ import annotations

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
import msgspec

from ..config import Config
from ..errorlog import record_error
from ..errors import UnsafePath
from ..fsutil import check_private, ensure_private_dir
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import Entry, SegmentReader, describe_pos
from ..queue.spool import QueueDir, Spool, dir_bytes
from ..schemas.envelope import Record
from ..schemas.registry import OPS, STATE_TIER, TIERS
from .apply import DeadLetter, Item, apply_items, get_cursor
from .db import BUSY_TIMEOUT_MS, open_tier
from .lock import ConsumerLock
from .metrics import Metrics
from .tail import Tailers
from .wake import Waker

__all__ = ["Consumer", "ConsumerStats", "ALL_TIERS"]

log = logging.getLogger("codi_queue.consumer")

ALL_TIERS: tuple[str, ...] = (*TIERS, STATE_TIER)
# Readers that overlap without a gap (dashboards) starve SQLite's passive
# autocheckpoint, and the WAL grows without bound. Past this size the
# consumer checkpoints with TRUNCATE, which waits out the current readers.
WAL_CHECKPOINT_BYTES = 32 * 1024 * 1024
_decode_record = msgspec.msgpack.Decoder(Record).decode
_decode_json_record = msgspec.json.Decoder(Record).decode


@dataclass
class ConsumerStats:
    operations: int = 0  # operations applied or dead-lettered
    applied: int = 0  # rows changed
    dead_letters: int = 0
    batches: int = 0
    damaged_spans: int = 0
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
        self._conns: dict[str, apsw.Connection] = {}
        self._cursors: dict[str, dict[str, int]] = {}
        self.tailers = Tailers(paths, config, self._report) if config is not None else None
        self.metrics = Metrics(paths.metrics)
        self._housekeeping_at = 0.0

    # -- lifecycle ------------------------------------------------------------------

    def run(self, once: bool = False) -> ConsumerStats:
        """Hold the home's consumer lock and drain; with ``once``, stop when nothing is left."""
        with ConsumerLock(self.paths.consumer_lock):
            self._check_dirs()
            try:
                if once:
                    # Pass 1 applies everything acknowledged before it began;
                    # the next ones retire what it claimed and catch stragglers.
                    self._open_databases()
                    self._poll_sources()
                    self.drain(max_passes=3)
                    self._housekeeping(force=True)
                else:
                    self._serve()  # opens the databases inside its retry loop: a locked one only delays
            finally:
                self._close_databases()
                self.metrics.flush(force=True, running=False)
        return self.stats

    def request_stop(self) -> None:
        """Finish the batch in flight, then return from ``run`` (safe from a signal handler)."""
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
                    try:
                        self._poll_sources()
                        self.drain()
                        self._housekeeping()
                        backoff = 0.0
                    except (apsw.Error, OSError) as exc:
                        # Infrastructure trouble (disk full, database locked or gone):
                        # everything not committed stays queued; retry with backoff.
                        backoff = min(self.max_backoff_s, max(0.5, backoff * 2))
                        self._report(f"drain failed, retrying in {backoff:.1f}s: {type(exc).__name__}: {exc}")
                        self._reopen_databases()
                        self._stop.wait(backoff)
                        continue
                    if not self.stopping:
                        waker.wait()
            finally:
                self._waker = None

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            log.info("signal %d: finishing the batch in flight, then exiting", signum)
            self.request_stop()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        # A file-size limit must surface as an error we back off from (EFBIG),
        # not as the default SIGXFSZ that kills the process mid-batch.
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _check_dirs(self) -> None:
        for path in (self.paths.spool, self.paths.db_dir, self.paths.state):
            ensure_private_dir(path)
            why = check_private(path)
            if why:
                raise UnsafePath(path, why)

    def _open_databases(self) -> None:
        for tier in self.tiers:
            if tier not in self._conns:
                path = self.paths.database(tier)
                self._conns[tier] = open_tier(path, tier, self.busy_timeout_ms)
                # The first file seen is the one to compare with; a reopen after a
                # fault keeps it, so _check_databases notices a replacement.
                st = os.stat(path)
                self._identity.setdefault(tier, (st.st_dev, st.st_ino))

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
            del self._conns[tier]
            self._cursors.clear()
            self._open_databases()
            st = os.stat(path)
            self._identity[tier] = (st.st_dev, st.st_ino)
            from ..recovery.journal import journal_dirs

            refill = Consumer(self.paths, batch_ops=self.batch_ops, tiers=(tier,), busy_timeout_ms=self.busy_timeout_ms)
            refill._conns = {tier: self._conns[tier]}
            for qd in journal_dirs(self.paths, archived=True, pending=False):
                try:
                    refill._drain_dir(qd)
                except FileNotFoundError:
                    continue

    def _close_databases(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

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
        if not self._conns:
            self._open_databases()
        self._check_databases()
        total = passes = 0
        while not self.stopping and (max_passes is None or passes < max_passes):
            passes += 1
            handled = 0
            for qd in list(self.spool.queue_dirs()):
                n, complete = self._drain_dir(qd)
                handled += n
                if self.stopping or not complete:
                    break
                if qd.live:
                    self._maybe_rotate(qd)
                else:
                    self.spool.retire(qd.id)
                    self._cursors.pop(qd.id, None)
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
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if row is None or row[0]:
                self._report(f"{tier}: WAL is {size} bytes and readers kept it from being checkpointed; retrying")
            else:
                log.info("%s: checkpointed and truncated a %d-byte WAL", tier, size)

    def apply_journal(self, dirs: list[QueueDir], progress: Callable[[int], None] | None = None) -> ConsumerStats:
        """Apply queue directories in order without claiming or archiving anything (a rebuild)."""
        self._open_databases()
        try:
            for n, qd in enumerate(dirs, 1):
                try:
                    self._drain_dir(qd)
                except FileNotFoundError:
                    continue  # the live consumer archived it meanwhile; it is listed again below
                if progress:
                    progress(n)
        finally:
            self._close_databases()
        return self.stats

    def _cursor_map(self, seg: str) -> dict[str, int]:
        cursors = self._cursors.get(seg)
        if cursors is None:
            cursors = self._cursors[seg] = {
                t: get_cursor(self._conns[t], seg) if t in self._conns else 0 for t in ALL_TIERS
            }
        return cursors

    def _drain_dir(self, qd: QueueDir) -> tuple[int, bool]:
        cursors = self._cursor_map(qd.id)
        start = min(cursors.values())
        with SegmentReader(qd.path) as reader:
            for warning in reader.warnings:
                self._report(warning)
            if start >= reader.end:
                return 0, True
            routed: dict[str, list[Item]] = {t: [] for t in ALL_TIERS}
            damaged: list[DeadLetter] = []
            handled = pending = 0
            last_end = start
            dirty = False
            for entry in reader.entries(start):
                pending += self._route(qd.id, entry, cursors, routed, damaged)
                last_end = entry.end
                dirty = True
                if pending >= self.batch_ops:
                    self._commit(qd.id, last_end, cursors, routed, damaged)
                    handled += pending
                    pending, dirty = 0, False
                    routed = {t: [] for t in ALL_TIERS}
                    damaged = []
                    if self.stopping:
                        return handled, False
            if dirty:
                self._commit(qd.id, last_end, cursors, routed, damaged)
                handled += pending
        return handled, True

    def _route(
        self,
        seg: str,
        entry: Entry,
        cursors: dict[str, int],
        routed: dict[str, list[Item]],
        damaged: list[DeadLetter],
    ) -> int:
        if entry.payload is None:
            if entry.end > cursors[STATE_TIER]:
                reason = f"damaged spool bytes at {describe_pos(entry.start)}: {entry.damage}"
                self._report(f"segment {seg}: {reason}")
                damaged.append(DeadLetter(f"damage:{seg}:{entry.start}", "?", reason, entry.raw, entry.start, "raw"))
                self.stats.damaged_spans += 1
            return 1
        is_json = entry.kind == KIND_JSON_RECORD
        try:
            record = (_decode_json_record if is_json else _decode_record)(entry.payload)
        except (msgspec.DecodeError, RecursionError) as exc:
            if entry.end > cursors[STATE_TIER]:
                reason = f"undecodable record at {describe_pos(entry.start)}: {exc}"
                self._report(f"segment {seg}: {reason}")
                damaged.append(
                    DeadLetter(f"record:{seg}:{entry.start}", "?", reason, entry.payload, entry.start, "raw")
                )
            return 1
        for env in record.ops:
            spec = OPS.get(env.op)
            tier = spec.tier if spec is not None else STATE_TIER
            if entry.end > cursors[tier]:
                routed[tier].append(Item(env, entry.end, is_json))
        return len(record.ops)

    def _commit(
        self,
        seg: str,
        end: int,
        cursors: dict[str, int],
        routed: dict[str, list[Item]],
        damaged: list[DeadLetter],
    ) -> None:
        for tier in ALL_TIERS:
            items = routed[tier]
            extra = damaged if tier == STATE_TIER else []
            if not items and not extra or tier not in self._conns:
                continue
            result = apply_items(self._conns[tier], seg, end, items, extra)
            cursors[tier] = end  # committed: a retry after a later tier's failure skips these
            self.stats.operations += len(items)
            self.stats.applied += sum(result.applied.values())
            for dead in result.dead:
                if dead.op != "?":
                    self._report(f"dead letter {dead.op_id} ({dead.op}): {dead.reason}")
            self.stats.dead_letters += len(result.dead)
            self.metrics.batch(len(items) + len(extra), sum(result.applied.values()), len(result.dead))
            if tier != STATE_TIER and result.retried and STATE_TIER in self._conns:
                # Retries of dead letters filed in the state database (an op this
                # code did not know then, a rejected source line) succeeded here.
                # Deleting after the tier committed is safe to repeat.
                state = self._conns[STATE_TIER]
                for op_id in result.retried:
                    state.execute("DELETE FROM cq_dead_letters WHERE op_id = ?", (op_id,))
        for tier in ALL_TIERS:
            # Tiers with nothing in [start, end) are done with it too; only the
            # in-memory cursor moves (a restart re-reads, and skips, the span).
            cursors[tier] = max(cursors[tier], end)
        self.stats.batches += 1
        self.metrics.flush()

    def _housekeeping(self, force: bool = False) -> None:
        """Archive retention and the Prometheus textfile, at most once a minute."""
        now = time.time()
        if not force and now - self._housekeeping_at < 60:
            return
        self._housekeeping_at = now
        self.metrics.flush(force=True)
        if self.config is None:
            return
        removed = self.spool.prune_archive(self.config.archive_max_age_days * 86400, self.config.archive_max_bytes)
        if removed:
            log.info("archive retention removed %d segments", len(removed))
        if self.config.prometheus_textfile:
            from .status import collect, prometheus_text

            write_textfile(self.config.prometheus_textfile, prometheus_text(collect(self.paths)))

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
            if self.spool.claim(qd.id):
                log.info("claimed inbox %s as a segment", qd.id)

    def _report(self, message: str) -> None:
        log.warning("%s", message)
        record_error(self.paths.error_log, "consumer", message)


def write_textfile(path: str, text: str) -> None:
    """Atomically replace a Prometheus textfile (the collector must never read half of one)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fp:
        fp.write(text)
    os.replace(tmp, path)
