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
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

from ..config import SyncConfig
from ..consumer.apply import Item, decode_bodies
from ..consumer.pushed import PULLED_PREFIX, Applied, Mark, Moved, home_id, journal_ops, left_out, save_progress
from ..errors import SyncError
from ..paths import Paths
from ..schemas.postgres import SYNC_SCHEMA, PgTable, tables
from .teamdb import connect, describe, ensure_schema

__all__ = ["Pusher", "TierPush", "PULLED_PREFIX"]

BATCH_OPS = 20_000  # operations per PostgreSQL transaction
_NUL = "\x00"
_ENV_ID = operator.attrgetter("env.id")


@dataclass
class TierPush:
    tier: str
    operations: int = 0  # operations sent
    batches: int = 0
    skipped: int = 0  # dead letters and pulled rows, left out
    lanes: dict[int, Mark] = field(default_factory=dict)  # each lane pushed up to here

    @property
    def segment(self) -> str:
        return self.lanes.get(0, ("", 0))[0]

    @property
    def pos(self) -> int:
        return self.lanes.get(0, ("", 0))[1]


class Pusher:
    """Pushes the configured tiers until each is caught up with what the consumer applied."""

    def __init__(self, paths: Paths, sync: SyncConfig, batch_ops: int = BATCH_OPS) -> None:
        self.paths = paths
        self.sync = sync
        self.batch_ops = batch_ops
        self._conn: Any = None
        self._staged: set[str] = set()
        self._getters: dict[str, Callable[[list[Any]], list[tuple[Any, ...]]]] = {}
        self._home_id: str | None = None  # made on first push (it writes a state file)
        # Per tier, the applied marks a push last caught up with: unchanged marks mean nothing new.
        self._caught_up: dict[str, Applied] = {}
        self._reported: set[str] = set()  # unreadable archived directories already reported

    @property
    def _home(self) -> str:
        if self._home_id is None:
            self._home_id = home_id(self.paths)
        return self._home_id

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
            marks = Applied.read_all(self.paths, self.sync.push)
            for tier in self.sync.push:
                seen = self._caught_up.get(tier)
                if seen is not None and (seen.own, seen.read) == (marks[tier].own, marks[tier].read):
                    results[tier] = TierPush(tier)  # nothing applied since: no round trip
                    continue
                results[tier] = self._push_tier(tier, marks[tier], should_stop)
        except psycopg.Error as exc:
            self.close()  # a broken connection is opened afresh next time
            raise SyncError(describe(exc, self.sync)) from None
        return results

    def _push_tier(self, tier: str, applied: Applied, should_stop: Callable[[], bool]) -> TierPush:
        result = TierPush(tier)
        moves = 0
        while not should_stop():
            try:
                sent, skipped, moved, exhausted = self._push_batch(tier, applied, result)
            except Moved as exc:
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
            if moved:
                result.operations += sent
                result.batches += 1
                save_progress(self.paths, tier, result.lanes, sent)
            if exhausted:
                self._caught_up[tier] = applied
                break
        return result

    def _push_batch(self, tier: str, applied: Applied, result: TierPush) -> tuple[int, int, bool, bool]:
        """One transaction: lock the cursor, read the journal past it, merge, move it.

        (sent, skipped, whether the cursor moved, whether everything applied was read).
        """
        conn = self._connection()
        with conn.transaction():
            conn.execute(
                f'INSERT INTO "{SYNC_SCHEMA}".push_cursors (machine, tier, home_id) VALUES (%s, %s, %s) '
                "ON CONFLICT DO NOTHING",
                (self.sync.machine, tier, self._home),
            )
            segment, pos, batch, owner = conn.execute(
                f'SELECT segment, pos, batch, home_id FROM "{SYNC_SCHEMA}".push_cursors '
                "WHERE machine = %s AND tier = %s FOR UPDATE",
                (self.sync.machine, tier),
            ).fetchone()
            if owner is None:  # a cursor made before homes were recorded: this one takes it
                conn.execute(f'UPDATE "{SYNC_SCHEMA}".push_cursors SET home_id = %s WHERE machine = %s AND tier = %s',
                             (self._home, self.sync.machine, tier))
            elif owner != self._home:
                raise SyncError(
                    f"machine name {self.sync.machine!r} is already pushed to by another codi-queue home; give this "
                    "one its own name ([sync] machine in the config file): two journals cannot share one cursor")
            # Lane 0's place is the cursor row's own; each further lane has a row of its own.
            cursors: dict[int, Mark] = {0: (segment, pos)}
            for lane, lane_segment, lane_pos in conn.execute(
                f'SELECT lane, segment, pos FROM "{SYNC_SCHEMA}".push_lanes WHERE machine = %s AND tier = %s',
                (self.sync.machine, tier),
            ):
                cursors[int(lane)] = (lane_segment, int(lane_pos))
            result.lanes = dict(cursors)
            by_op: dict[str, tuple[Any, list[Item]]] = {}
            sent = skipped = 0
            ends = dict(cursors)
            trace = (self.sync.machine, batch + 1)
            exhausted = True
            unreadable: list[str] = []
            for lane, seg, rec_end, found in journal_ops(self.paths, tier, cursors, applied, unreadable):
                for spec, item in found:
                    if left_out(item, applied):
                        skipped += 1
                        continue
                    group = by_op.get(spec.name)
                    if group is None:
                        group = by_op[spec.name] = (spec, [])
                    group[1].append(item)
                    sent += 1
                ends[lane] = (seg, rec_end)
                if sent >= self.batch_ops:
                    exhausted = False
                    break
            self._report_unreadable(unreadable)
            moved = {lane: end for lane, end in ends.items() if end != cursors.get(lane)}
            if not moved:
                return 0, skipped, False, True
            for op, (spec, items) in by_op.items():
                batch_rows = self._rows(spec, items, trace)
                sent -= len(items) - len(batch_rows)  # bodies the consumer could not apply: dead letters there
                skipped += len(items) - len(batch_rows)
                if batch_rows:
                    self._merge(conn, tables()[op], batch_rows)
            conn.execute(
                f'UPDATE "{SYNC_SCHEMA}".push_cursors SET segment = %s, pos = %s, batch = batch + 1, '
                "operations = operations + %s, pushed_at = now() WHERE machine = %s AND tier = %s",
                (*ends[0], sent, self.sync.machine, tier),
            )
            for lane, end in moved.items():
                if lane:
                    conn.execute(
                        f'INSERT INTO "{SYNC_SCHEMA}".push_lanes (machine, tier, lane, segment, pos) '
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (machine, tier, lane) DO UPDATE "
                        "SET segment = EXCLUDED.segment, pos = EXCLUDED.pos",
                        (self.sync.machine, tier, lane, *end),
                    )
        result.lanes = ends
        return sent, skipped, True, exhausted

    def _report_unreadable(self, found: list[str]) -> None:
        """Archived directories passed over: reported once each, never silently."""
        from ..errorlog import record_error

        for why in found:
            if why not in self._reported:
                self._reported.add(why)
                record_error(self.paths.error_log, "sync", f"archived segment not pushed, it cannot be read: {why}")

    def _rows(self, spec: Any, items: list[Item], trace: tuple[str, int]) -> list[tuple[Any, ...]]:
        """The team rows of one operation's items: the body's values, then op_id, machine, batch."""
        bodies, bad = decode_bodies(spec, items)
        if bad:
            dropped = set(bad)
            items = [item for n, item in enumerate(items) if n not in dropped]
            bodies = [body for n, body in enumerate(bodies) if n not in dropped]
        values = self._values(tables()[spec.name])(bodies)
        return list(map(operator.add, values, zip(map(_ENV_ID, items), repeat(trace[0]), repeat(trace[1]))))

    def _values(self, table: PgTable) -> Callable[[list[Any]], list[tuple[Any, ...]]]:
        made = self._getters.get(table.spec.name)
        if made is None:
            made = self._getters[table.spec.name] = self._value_maker(table)
        return made

    def _value_maker(self, table: PgTable) -> Callable[[list[Any]], list[tuple[Any, ...]]]:
        """The row values of a batch of bodies, in ``_copied`` order: private text left out unless
        shared (those columns are not copied: NULL), NUL made U+FFFD."""
        fields = [n for n in table.fields if n not in self._left_out(table)]
        get = operator.attrgetter(*fields)
        one = len(fields) == 1  # attrgetter of one name gives the value, not a tuple
        names = [n for n in fields if table.types[n] == "TEXT"] + ["timestamp"]  # ≥ 2 names: a tuple
        text = operator.attrgetter(*names)

        def values(bodies: list[Any]) -> list[tuple[Any, ...]]:
            rows: list[tuple[Any, ...]] = [(v,) for v in map(get, bodies)] if one else list(map(get, bodies))
            # PostgreSQL text cannot hold NUL (SQLite can): U+FFFD, the rule for text we cannot keep.
            # One look over the whole batch; rows are rewritten only when some value holds one.
            if _NUL in "".join(map(str, chain.from_iterable(map(text, bodies)))):
                rows = [tuple(v.replace(_NUL, "\ufffd") if type(v) is str else v for v in row) for row in rows]
            return rows

        return values

    def _left_out(self, table: PgTable) -> tuple[str, ...]:
        return () if self.sync.share_private else table.private

    def _merge(self, conn: Any, table: PgTable, rows: list[tuple[Any, ...]]) -> None:
        if table.stage not in self._staged:
            conn.execute(table.create_stage())
            self._staged.add(table.stage)
        with conn.cursor().copy(table.copy_stage(self._left_out(table))) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(table.merge())  # one merge per table per transaction: ON COMMIT empties the stage
