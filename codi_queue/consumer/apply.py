"""Apply one batch to one tier database: one transaction, a savepoint per failure, the cursor inside.

Exactly-once rests on two things committed together with the rows:
the segment cursor (how far this tier has applied, checked before anything
is re-applied after a crash) and each row's ``op_id`` (unique in event
tables; upserts only move forward in id), which makes replays no-ops.
"""

from __future__ import annotations

import json
import operator
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import apsw
import msgspec

from ..errors import shown
from ..schemas.envelope import Envelope, Rejected
from ..schemas.registry import OPS, REJECTED_OP, Binding, OpSpec
from ..schemas.types import settled_type, unsettled
from ..schemas.vocab import count_outside, has_rules
from ..values import clean_text, loads
from .db import checked_cursor, immediate
from .summaries import Summaries

__all__ = ["Item", "DeadLetter", "decode_body", "decode_bodies", "repay_owed", "TierResult", "apply_items",
           "record_dead_letters", "get_cursor", "INFRASTRUCTURE"]

# Errors of the database or the disk, not of one operation: the batch rolls
# back and is retried with backoff, never dead-lettered. Anything else raised
# while decoding, converting or binding one operation makes it a dead letter.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (
    apsw.FullError, apsw.IOError, apsw.BusyError, apsw.LockedError, apsw.CantOpenError,
    apsw.ReadOnlyError, apsw.NoMemError, apsw.InterruptError, apsw.CorruptError, apsw.NotADBError,
    apsw.ConnectionClosedError, MemoryError,
)

_decoders: dict[tuple[str, bool], Any] = {}
_ENV_ID = operator.attrgetter("env.id")
_ITEM_OP = operator.attrgetter("env.op")
_encode = msgspec.msgpack.Encoder().encode
_encode_json = msgspec.json.Encoder().encode


class Item(msgspec.Struct, gc=False):
    """One operation routed to a tier, with where it came from.

    A Struct, not a dataclass: one is built per operation drained, and a Struct is
    built in C and never tracked by the cyclic collector (it holds no cycles).
    """

    env: Envelope
    pos: int  # end position of its record in the segment
    body_is_json: bool = False  # the body is JSON (standard-library producer path), not MessagePack


@dataclass(slots=True)
class DeadLetter:
    op_id: str
    op: str
    reason: str
    envelope: bytes
    pos: int | None
    format: str = "msgpack"  # how ``envelope`` is encoded: msgpack, json or raw (damaged bytes)


@dataclass
class TierResult:
    applied: dict[str, int] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # dead letters whose retry succeeded here
    # "op.field" → values stored that are outside our vocabularies and scales (the platform's words)
    outside: dict[str, int] = field(default_factory=dict)
    summary_error: str | None = None  # why the platform's summary tables were left as they were
    repay_error: str | None = None  # why rows an earlier batch owes are still owed (this batch's own went on)


def _decoder(spec: OpSpec, json: bool) -> Any:
    dec = _decoders.get((spec.name, json))
    if dec is None:
        dec = _decoders[(spec.name, json)] = (msgspec.json if json else msgspec.msgpack).Decoder(spec.type)
    return dec


def decode_body(spec: OpSpec, item: Item) -> Any:
    """The operation's Struct from its encoded body (raises whatever a hostile body provokes)."""
    try:
        return _decoder(spec, item.body_is_json).decode(item.env.body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        if not item.body_is_json:
            raise
    # A JSON body with invalid UTF-8, a lone surrogate escape or a number no
    # double holds: the value rules every producer applies (codi_queue.values).
    cleaned = json.dumps(loads(bytes(item.env.body)), ensure_ascii=False).encode()
    return _decoder(spec, True).decode(cleaned)


def dead_letter(item: Item, reason: str) -> DeadLetter:
    # A failed retry stays the dead letter it retried, with the new reason.
    op_id = clean_text(item.env.retry_of or item.env.id)
    op = clean_text(item.env.op)
    try:
        if item.body_is_json:
            return DeadLetter(op_id, op, reason, _encode_json(item.env), item.pos, "json")
        return DeadLetter(op_id, op, reason, _encode(item.env), item.pos)
    except Exception as exc:  # noqa: BLE001 - an envelope that will not even re-encode is still kept, as text
        return DeadLetter(op_id, op, f"{reason} (envelope kept as text: {type(exc).__name__})",
                          clean_text(repr(item.env)).encode(), item.pos, "raw")


def _rejected(item: Item) -> DeadLetter:
    try:
        rej = (msgspec.json if item.body_is_json else msgspec.msgpack).decode(item.env.body, type=Rejected)
    except Exception as exc:  # noqa: BLE001 - an unreadable report is still a dead letter
        return dead_letter(item, f"undecodable rejected-input report: {type(exc).__name__}: {exc}")
    reason = f"{rej.source}: line {rej.line}: {rej.reason}"
    # The whole report is kept: replay needs the source and line to re-derive the op id.
    return DeadLetter(item.env.id, rej.op, reason, msgspec.json.encode(rej), item.pos, "rejected")


_bindings: weakref.WeakKeyDictionary[apsw.Connection, dict[str, Binding]] = weakref.WeakKeyDictionary()


def binding(conn: apsw.Connection, spec: OpSpec) -> Binding:
    """The op's statement for this database's table as it is (adopted tables name columns their way)."""
    per_conn = _bindings.get(conn)
    if per_conn is None:
        per_conn = _bindings[conn] = {}
    found = per_conn.get(spec.name)
    if found is None:
        cols = {row[1] for row in conn.execute(f'PRAGMA table_info("{spec.table}")')}
        found = per_conn[spec.name] = spec.bind(cols)
    return found


class _Group:
    """One table's share of a batch: its statement, decoders and rules looked up once, then rows."""

    __slots__ = ("bound", "spec", "decode", "rules", "rows", "items", "bodies")

    def __init__(self, conn: apsw.Connection, spec: OpSpec) -> None:
        self.bound = binding(conn, spec)
        self.spec = spec
        self.decode = (_decoder(spec, False).decode, _decoder(spec, True).decode)  # by item.body_is_json
        self.rules = has_rules(spec.name)
        self.rows: list[tuple[Any, ...]] = []
        self.items: list[Item] = []
        self.bodies: list[Any] = []

    def take_all(self, items: list[Item]) -> bool:
        """Every body decoded in one call (the drain's hot path); False if any needs ``take`` one by one."""
        bodies = _decode_all(self.spec, items)
        if bodies is None:
            return False
        # (*row(body), op_id) for each, built in C: map, zip and tuple concatenation
        self.rows = list(map(operator.add, map(self.bound.row, bodies), zip(map(_ENV_ID, items))))
        self.items, self.bodies = items, bodies
        return True

    def take(self, item: Item, dead: list[DeadLetter]) -> None:
        """One operation: its row, or its dead letter."""
        env = item.env
        try:
            try:
                body = self.decode[item.body_is_json](env.body)
            except (msgspec.DecodeError, UnicodeDecodeError):
                if not item.body_is_json:
                    raise
                body = decode_body(self.spec, item)  # the value rules for a JSON body, then again
            row = (*self.bound.row(body), env.id)
        except (msgspec.DecodeError, RecursionError) as exc:  # nesting too deep is bad input too
            dead.append(dead_letter(item, f"invalid body: {exc}"))
            return
        except Exception as exc:  # noqa: BLE001 - whatever one body provokes, it is that op's dead letter
            dead.append(dead_letter(item, f"invalid body: {type(exc).__name__}: {exc}"))
            return
        self.rows.append(row)
        self.items.append(item)
        self.bodies.append(body)


_list_decoders: dict[tuple[str, bool], Any] = {}
_raw_lists = (msgspec.msgpack.Decoder(list[msgspec.Raw]).decode, msgspec.json.Decoder(list[msgspec.Raw]).decode)


def _decode_all(spec: OpSpec, items: list[Item]) -> list[Any] | None:
    """The bodies of ``items`` as Structs from one decoder call over them joined as one array, or
    None when that is not exactly what decoding each alone gives (then each is decoded alone).

    Joining is only sound if every body is exactly one value: a hostile body holding two values,
    or half of one, would shift the rest onto the wrong operations. The array is first read as
    raw values, and each must span exactly its body's bytes.
    """
    is_json = items[0].body_is_json
    if len({item.body_is_json for item in items}) != 1:
        return None
    bodies = [item.env.body for item in items]
    joined = (b"[" + b",".join(bodies) + b"]") if is_json else \
        b"\xdd" + len(bodies).to_bytes(4, "big") + b"".join(bodies)  # msgpack array 32
    try:
        if list(map(len, _raw_lists[is_json](joined))) != list(map(len, bodies)):
            return None
        decode = _list_decoders.get((spec.name, is_json))
        if decode is None:
            settled = settled_type(spec.type)  # no __post_init__: one Python call less per body
            decode = _list_decoders[(spec.name, is_json)] = \
                (msgspec.json if is_json else msgspec.msgpack).Decoder(list[settled]).decode  # type: ignore[valid-type]
        decoded: list[Any] = decode(joined)
        single = _decoder(spec, is_json).decode
        for i in unsettled(spec.type, decoded):  # a body its producer did not normalise: as the op's Struct
            decoded[i] = single(bodies[i])
        return decoded
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError, TypeError, OverflowError):
        return None  # some body is bad: decoded alone, it becomes that op's dead letter


def decode_bodies(spec: OpSpec, items: list[Item]) -> tuple[list[Any], list[int]]:
    """The bodies of ``items`` as Structs (joined, as the drain decodes them), and the positions of
    those that cannot be decoded (None there: each is a dead letter where it was applied)."""
    decoded = _decode_all(spec, items) if items else []
    if decoded is not None:
        return decoded, []
    bodies: list[Any] = []
    bad: list[int] = []
    for n, item in enumerate(items):
        try:
            bodies.append(decode_body(spec, item))
        except Exception:  # noqa: BLE001 - whatever a hostile body provokes; the caller leaves it out
            bodies.append(None)
            bad.append(n)
    return bodies, bad


def prepare(
    conn: apsw.Connection, items: Sequence[Item]
) -> tuple[list[tuple[Binding, OpSpec, list[tuple[Any, ...]], list[Item], list[Any]]], list[DeadLetter], dict[str, int]]:
    """Decode bodies into rows grouped by table (order kept within a table); failures become dead letters.

    Also counts, per ``op.field``, the values stored outside our vocabularies and scales.
    """
    by_op: dict[str, list[Item]] = {}
    for op, same in groupby(items, _ITEM_OP):  # runs of one operation (a record's batch), in C
        run = by_op.get(op)
        if run is None:
            by_op[op] = list(same)
        else:
            run.extend(same)
    groups: list[_Group] = []
    unknown: dict[str, int] = {}
    dead: list[DeadLetter] = []
    for op, run in by_op.items():
        if op == REJECTED_OP:
            dead.extend(_rejected(item) for item in run)
            continue
        spec = OPS.get(op)
        if spec is None:
            dead.extend(dead_letter(item, f"unknown operation {shown(op)!r}") for item in run)
            continue
        try:
            group = _Group(conn, spec)
        except Exception as exc:  # noqa: BLE001 - a table that cannot take this op: its ops are dead letters
            dead.extend(dead_letter(item, f"invalid body: {type(exc).__name__}: {exc}") for item in run)
            continue
        if not group.take_all(run):
            for item in run:
                group.take(item, dead)
        if group.rules:
            for name, n in count_outside(op, group.bodies).items():
                key = f"{op}.{name}"
                unknown[key] = unknown.get(key, 0) + n
        if group.rows:
            groups.append(group)
    return [(g.bound, g.spec, g.rows, g.items, g.bodies) for g in groups], dead, unknown


def apply_items(
    conn: apsw.Connection, segment: str, end_pos: int, items: Sequence[Item], extra_dead: Sequence[DeadLetter] = (),
    keep: Sequence[str] = (),
) -> TierResult:
    """Apply ``items`` and advance this tier's cursor for ``segment`` to ``end_pos``, atomically.

    ``keep``: the directories still pending (claimed or live), whose cursors stay."""
    with immediate(conn):
        groups, dead, unknown = prepare(conn, items)
        dead.extend(extra_dead)
        result = TierResult(dead=dead, outside=unknown)
        summaries = Summaries(conn)  # the dashboards' summary tables, kept in this same transaction
        result.repay_error = _repay(conn, summaries)
        if result.repay_error:
            # Rolled back, and no reason to hold back this batch's own summaries: they start afresh
            # (the failed repayment may have changed what the object remembers of kept totals).
            summaries = Summaries(conn)
        for bound, spec, rows, group_items, bodies in groups:
            result.summary_error = result.summary_error or _guarded(conn, summaries.before, spec.table, bodies)
            n = _apply_group(conn, bound, spec, rows, group_items, dead)
            if not result.summary_error:
                result.summary_error = _noted(summaries.after, spec.table, bodies, [i.env.id for i in group_items], n)
            if n:
                result.applied[spec.table] = result.applied.get(spec.table, 0) + n
        if result.applied and not result.summary_error:
            result.summary_error = _guarded(conn, summaries.flush)
        if result.summary_error:
            # The events commit without their summaries: totals kept by deltas are counted again,
            # and what the batch touched is owed, to be recomputed by a later batch.
            for step, args in ((summaries.forget, ()), (summaries.owe, ([b for g in groups for b in g[4]],))):
                why = _guarded(conn, step, *args)
                if why:
                    result.summary_error += f"; {why}"
        _bump_applied(conn, result.applied)
        failed = {d.op_id for d in dead}
        result.retried = [i.env.retry_of for i in items if i.env.retry_of and i.env.retry_of not in failed]
        for op_id in result.retried:
            conn.execute("DELETE FROM cq_dead_letters WHERE op_id = ?", (op_id,))
        record_dead_letters(conn, segment, dead)
        conn.execute(
            "INSERT INTO cq_cursor (segment, pos) VALUES (?, ?) "
            # The consumer's cursors only move forward, but for one found damaged and read again from
            # the start (loop._cursor_map, _drain_dir), which this replaces.
            "ON CONFLICT(segment) DO UPDATE SET pos = excluded.pos",
            (segment, end_pos),
        )
        # An older directory that is not pending any more is archived: its cursor
        # has done its job. Another lane's live inbox can be older than this
        # directory and is still being read.
        conn.execute("DELETE FROM cq_cursor WHERE segment < ? AND segment NOT IN (SELECT value FROM json_each(?))",
                     (segment, json.dumps(list(keep))))
    return result


_repay_after: weakref.WeakKeyDictionary[apsw.Connection, float] = weakref.WeakKeyDictionary()
REPAY_RETRY_S = 60.0  # a repayment that failed (a row no recompute can read) is tried again this much later


def _repay(conn: apsw.Connection, summaries: Summaries) -> str | None:
    """Recompute the summary rows an earlier batch owes, before this batch's own: an error, or None."""
    if time.monotonic() < _repay_after.get(conn, 0.0) or not summaries.owed():
        return None
    failed = _guarded(conn, summaries.repay)
    if failed is None:
        _repay_after.pop(conn, None)
        return None
    _repay_after[conn] = time.monotonic() + REPAY_RETRY_S
    return f"owed {failed[len('summary tables not updated: '):]} (tried again in {REPAY_RETRY_S:.0f} s)"


def repay_owed(conn: apsw.Connection) -> str | None:
    """Repay what earlier batches owe in a transaction of its own (an idle home's housekeeping:
    no next batch comes to do it); an error, or None."""
    summaries = Summaries(conn)
    if not summaries.owed():
        return None
    with immediate(conn):
        return _repay(conn, summaries)


def _noted(step: Any, *args: Any) -> str | None:
    """Run one in-memory summary step: whatever rows another writer left provoke, the reason
    is reported and the batch's events still commit (the summaries wait for a recompute)."""
    try:
        step(*args)
    except Exception as exc:  # noqa: BLE001 - reported by the caller; the batch's rows still commit
        return f"summary tables not updated: {type(exc).__name__}: {exc}"
    return None


def _guarded(conn: apsw.Connection, step: Any, *args: Any) -> str | None:
    """Run one summary step in a savepoint: a summary table shaped unlike the platform's must
    never hold back the events themselves (the reason is reported; the events commit)."""
    try:
        with conn:
            step(*args)
    except INFRASTRUCTURE:
        raise
    except Exception as exc:  # noqa: BLE001 - reported by the caller; the batch's rows still commit
        return f"summary tables not updated: {type(exc).__name__}: {exc}"
    return None


def _apply_group(
    conn: apsw.Connection, bound: Binding, spec: OpSpec, rows: list[tuple[Any, ...]], items: list[Item],
    dead: list[DeadLetter],
) -> int:
    """Rows changed. Fast path: the whole group in one executemany under a savepoint."""
    if not spec.has_triggers:
        # Without triggers total_changes counts exactly the rows inserted or
        # updated (a replayed op_id, or an upsert older than the row, writes nothing).
        before = conn.total_changes()
        if _executemany_or_undo(conn, bound.sql, rows):
            return conn.total_changes() - before
    changed = 0
    # One statement per row: a table with triggers (changes() ignores the FTS
    # rows that total_changes would count), or a group that held a poison row.
    for row, item in zip(rows, items):
        try:
            with conn:
                conn.execute(bound.sql, row)
                changed += conn.changes()
        except INFRASTRUCTURE:
            raise
        except Exception as exc:  # noqa: BLE001 - a row that cannot be bound or stored is that op's dead letter
            dead.append(dead_letter(item, f"{type(exc).__name__}: {exc}"))
    return changed


def _executemany_or_undo(conn: apsw.Connection, sql: str, rows: list[tuple[Any, ...]]) -> bool:
    """True if every row applied; False if one failed and the savepoint undid the group."""
    try:
        with conn:
            conn.executemany(sql, rows)
    except INFRASTRUCTURE:
        raise
    except Exception:  # noqa: BLE001 - some row is poison: the caller retries row by row and dead-letters it
        return False
    return True


def _bump_applied(conn: apsw.Connection, applied: dict[str, int]) -> None:
    for table, n in applied.items():
        conn.execute(
            "INSERT INTO cq_applied (tbl, n) VALUES (?, ?) ON CONFLICT(tbl) DO UPDATE SET n = n + excluded.n",
            (table, n),
        )


def record_dead_letters(conn: apsw.Connection, segment: str | None, dead: Sequence[DeadLetter]) -> None:
    """Store dead letters; one that failed before keeps its first failure and counts attempts."""
    now = time.time()
    for d in dead:
        conn.execute(
            "INSERT INTO cq_dead_letters (op_id, op, reason, envelope, format, segment, pos, first_failed, last_failed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(op_id) DO UPDATE SET "
            "reason = excluded.reason, last_failed = excluded.last_failed, attempts = attempts + 1",
            (clean_text(d.op_id), clean_text(d.op), clean_text(d.reason), d.envelope, d.format, segment, d.pos,
             now, now),
        )


def get_cursor(conn: apsw.Connection, segment: str) -> int | None:
    """This tier's applied position in ``segment`` (0: nothing yet), or None when the stored
    one is damaged (not a position): the caller says so and reads the directory from its start."""
    row = conn.execute("SELECT pos FROM cq_cursor WHERE segment = ?", (segment,)).fetchone()
    return checked_cursor(row[0]) if row else 0

