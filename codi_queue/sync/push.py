"""``sync push``: every operation this machine applied, into the team database, exactly once.

What is applied is read from the journal, never from the tables: an archived
segment is applied whole; a pending one up to the tier's local cursor (the
consumer commits it with the rows). Dead letters and rows pulled from other
machines are left out.

Exactly once rests on one PostgreSQL transaction per batch holding the rows
(merged from a COPY'd staging table: a known ``op_id`` is skipped, an upsert
only moves to a newer operation) and this machine's cursor for the tier,
locked ``FOR UPDATE`` at its start. A pusher killed anywhere leaves the
cursor where its rows are; two pushers for one machine take turns.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..config import SyncConfig
from ..consumer.apply import Item, decode_body
from ..consumer.db import open_readonly
from ..consumer.loop import decode_record
from ..consumer.pushed import save_backlog, save_progress
from ..errors import SyncError
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import SegmentReader
from ..queue.spool import QueueDir, Spool
from ..schemas.postgres import SYNC_SCHEMA, PgTable, tables
from ..schemas.registry import OPS
from .teamdb import connect, describe, ensure_schema

__all__ = ["Pusher", "TierPush", "PULLED_PREFIX", "Applied", "journal_ops", "backlog"]

# The producer name of operations ``sync pull`` enqueued: never pushed back.
PULLED_PREFIX = "sync-pull:"
BATCH_OPS = 20_000  # operations per PostgreSQL transaction
_NUL = "\x00"


@dataclass
class TierPush:
    tier: str
    operations: int = 0  # operations sent
    batches: int = 0
    skipped: int = 0  # dead letters and pulled rows, left out
    segment: str = ""  # pushed up to here
    pos: int = 0


@dataclass
class Applied:
    """How far the consumer has applied one tier, and how far it has read the journal at all."""

    own: tuple[str, int] = ("", 0)  # this tier's cursor: its operations up to here are applied
    read: tuple[str, int] = ("", 0)  # the furthest cursor of any tier: records past it are unread
    dead: set[str] = field(default_factory=set)  # operation ids that are dead letters in this tier

    @classmethod
    def read_from(cls, paths: Paths, tier: str) -> Applied:
        from ..consumer.loop import ALL_TIERS

        found = cls()
        for name in ALL_TIERS:
            conn = open_readonly(paths.database(name))
            if conn is None:
                continue
            try:
                row = conn.execute("SELECT segment, pos FROM cq_cursor ORDER BY segment DESC LIMIT 1").fetchone()
                dead = {r[0] for r in conn.execute("SELECT op_id FROM cq_dead_letters")} if name == tier else set()
            except apsw.SQLError:
                continue  # not migrated yet: nothing applied there
            finally:
                conn.close()
            mark = (str(row[0]), int(row[1])) if row else ("", 0)
            found.read = max(found.read, mark)
            if name == tier:
                found.own, found.dead = mark, dead
        return found


class _Moved(Exception):
    """A directory was archived between listing and reading: list again."""


def journal_ops(
    paths: Paths, tier: str, start: tuple[str, int], applied: Applied
) -> Iterator[tuple[str, int, list[tuple[Any, Item]]]]:
    """(segment, record end, [(spec, item)] of ``tier``) for each applied record after ``start``.

    An archived segment is applied whole. Past that, a record is applied for
    this tier if it lies within the tier's own cursor, or holds nothing for the
    tier and lies within what the consumer has read (another tier's cursor): a
    tier that rarely gets operations still moves on, so retention can let old
    segments go. A record with nothing for the tier is yielded too (its
    position moves the push cursor).
    """
    spool = Spool(paths.spool, paths.archive)
    archived = {qd.id for qd in spool.archived_dirs()}
    for qd in spool.journal():
        if qd.id < start[0]:
            continue
        pending = qd.id not in archived
        if pending and qd.id > applied.read[0]:
            return  # not read by the consumer yet
        for seg, end, found in _dir_ops(qd, tier, start[1] if qd.id == start[0] else 0):
            if pending and (seg, end) > applied.own and (found or (seg, end) > applied.read):
                return  # this tier has not applied it yet
            yield seg, end, found


def _dir_ops(qd: QueueDir, tier: str, start: int) -> Iterator[tuple[str, int, list[tuple[Any, Item]]]]:
    try:
        reader = SegmentReader(qd.path, live=qd.live, trust_info=True)
    except FileNotFoundError:
        raise _Moved(qd.id) from None
    with reader:
        for entry in reader.entries(start):
            found: list[tuple[Any, Item]] = []
            if entry.payload is not None:  # damage: the consumer reported it as a dead letter
                is_json = entry.kind == KIND_JSON_RECORD
                try:
                    record, _ = decode_record(entry.payload, is_json)
                except Exception:  # noqa: BLE001 - undecodable: a dead letter locally, nothing to push
                    record = None
                for env in record.ops if record is not None else ():
                    spec = OPS.get(env.op)
                    if spec is not None and spec.tier == tier:
                        found.append((spec, Item(env, entry.end, is_json)))
            yield qd.id, entry.end, found


def backlog(paths: Paths, tier: str, start: tuple[str, int]) -> int:
    """Operations of ``tier`` applied here and not yet pushed (counted, bodies not decoded)."""
    for _attempt in range(10):
        applied = Applied.read_from(paths, tier)
        try:
            return sum(
                1
                for _seg, _end, found in journal_ops(paths, tier, start, applied)
                for _spec, item in found
                if not _left_out(item, applied)
            )
        except _Moved:
            continue
    raise SyncError("the spool kept moving while the backlog was counted")


def _left_out(item: Item, applied: Applied) -> bool:
    """Pulled from another machine, or a dead letter here: not pushed."""
    env = item.env
    return env.producer.startswith(PULLED_PREFIX) or env.id in applied.dead or (env.retry_of or "") in applied.dead


class Pusher:
    """Pushes the configured tiers until each is caught up with what the consumer applied."""

    def __init__(self, paths: Paths, sync: SyncConfig, batch_ops: int = BATCH_OPS) -> None:
        self.paths = paths
        self.sync = sync
        self.batch_ops = batch_ops
        self._conn: Any = None
        self._staged: set[str] = set()
        self._getters: dict[str, Callable[[Any], tuple[Any, ...]]] = {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._staged.clear()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.sync)
            self._staged.clear()
            try:
                ensure_schema(self._conn)
            except Exception:
                self.close()
                raise
        return self._conn

    def push(self, should_stop: Callable[[], bool] = lambda: False) -> dict[str, TierPush]:
        """Push every configured tier until caught up; SyncError (one line, no secret) if PostgreSQL fails."""
        import psycopg

        results = {}
        try:
            for tier in self.sync.push:
                results[tier] = self._push_tier(tier, should_stop)
        except psycopg.Error as exc:
            self.close()  # a broken connection is opened afresh next time
            raise SyncError(describe(exc, self.sync)) from None
        return results

    def _push_tier(self, tier: str, should_stop: Callable[[], bool]) -> TierPush:
        result = TierPush(tier)
        moves = 0
        while not should_stop():
            applied = Applied.read_from(self.paths, tier)
            try:
                sent, skipped, moved = self._push_batch(tier, applied, result)
            except _Moved as exc:
                self._staged.clear()
                # Archived while we read: the rolled-back batch is read again from its new place.
                moves += 1
                if moves > 10:
                    raise SyncError(f"segment {exc} keeps disappearing from the spool while being read") from None
                continue
            except BaseException:
                self._staged.clear()  # a rolled-back transaction took its CREATE TEMP TABLE with it
                raise
            result.skipped += skipped
            if not moved:
                break
            result.operations += sent
            result.batches += 1
            save_progress(self.paths, tier, result.segment, result.pos, sent, None)
        else:
            return result  # stopped: the backlog is whatever is left
        save_backlog(self.paths, tier, 0)
        return result

    def _push_batch(self, tier: str, applied: Applied, result: TierPush) -> tuple[int, int, bool]:
        """One transaction: lock the cursor, read the journal past it, merge, move it. (sent, skipped, moved)."""
        conn = self._connection()
        with conn.transaction():
            conn.execute(
                f'INSERT INTO "{SYNC_SCHEMA}".push_cursors (machine, tier) VALUES (%s, %s) ON CONFLICT DO NOTHING',
                (self.sync.machine, tier),
            )
            segment, pos, batch = conn.execute(
                f'SELECT segment, pos, batch FROM "{SYNC_SCHEMA}".push_cursors WHERE machine = %s AND tier = %s '
                "FOR UPDATE",
                (self.sync.machine, tier),
            ).fetchone()
            result.segment, result.pos = segment, pos
            rows: dict[str, list[tuple[Any, ...]]] = {}
            sent = skipped = 0
            end = (segment, pos)
            trace = (self.sync.machine, batch + 1)
            for seg, rec_end, found in journal_ops(self.paths, tier, (segment, pos), applied):
                for spec, item in found:
                    row = self._row(spec, item, applied, trace)
                    if row is None:
                        skipped += 1
                        continue
                    rows.setdefault(spec.name, []).append(row)
                    sent += 1
                end = (seg, rec_end)
                if sent >= self.batch_ops:
                    break
            if end == (segment, pos):
                return 0, skipped, False
            for op, batch_rows in rows.items():
                self._merge(conn, tables()[op], batch_rows)
            conn.execute(
                f'UPDATE "{SYNC_SCHEMA}".push_cursors SET segment = %s, pos = %s, batch = batch + 1, '
                "operations = operations + %s, pushed_at = now() WHERE machine = %s AND tier = %s",
                (end[0], end[1], sent, self.sync.machine, tier),
            )
        result.segment, result.pos = end
        return sent, skipped, True

    def _row(self, spec: Any, item: Item, applied: Applied, trace: tuple[str, int]) -> tuple[Any, ...] | None:
        if _left_out(item, applied):
            return None
        try:
            body = decode_body(spec, item)
        except Exception:  # noqa: BLE001 - a body the consumer could not apply is a dead letter there
            return None
        getter = self._getters.get(spec.name)
        if getter is None:
            getter = self._getters[spec.name] = self._getter(tables()[spec.name])
        values = getter(body)
        # PostgreSQL text cannot hold NUL (SQLite can): U+FFFD, the rule for any text we cannot keep.
        if any(type(v) is str and _NUL in v for v in values):
            values = tuple(v.replace(_NUL, "\ufffd") if type(v) is str else v for v in values)
        return (*values, item.env.id, *trace)

    def _getter(self, table: PgTable) -> Callable[[Any], tuple[Any, ...]]:
        get = operator.attrgetter(*table.fields)
        if self.sync.share_private or not table.private:
            return get
        hidden = [table.fields.index(name) for name in table.private]

        def without_private(body: Any) -> tuple[Any, ...]:
            values = list(get(body))
            for i in hidden:
                values[i] = None
            return tuple(values)

        return without_private

    def _merge(self, conn: Any, table: PgTable, rows: list[tuple[Any, ...]]) -> None:
        if table.stage not in self._staged:
            conn.execute(table.create_stage())
            self._staged.add(table.stage)
        with conn.cursor().copy(table.copy_stage()) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(table.merge())  # one merge per table per transaction: ON COMMIT empties the stage
