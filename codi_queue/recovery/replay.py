"""``codi-queue replay dead-letters`` and ``replay archive``: re-apply through the spool.

Replays go through the spool like any producer, so the consumer stays the
only writer and may keep running. Operations keep their original ids: the
consumer's op_id checks apply nothing twice. A dead letter is re-sent with
``retry_of`` set: the consumer removes it when the operation succeeds and
files the new reason under it when it fails again.
"""

from __future__ import annotations

import time
from itertools import compress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apsw
import msgspec

from ..consumer.db import open_readonly
from ..paths import Paths
from ..producers.records import append_records
from ..schemas.envelope import Envelope, Record, Rejected
from ..schemas.registry import REJECTED_OP, STATE_TIER, TIERS
from ..timestamps import normalize_timestamp
from ..values import clean_text
from .journal import FirstCopies, encode_record, journal_dirs, records

__all__ = ["ReplayResult", "replay_dead_letters", "replay_archive", "parse_time", "dead_letter_rows",
           "list_dead_letters"]


@dataclass
class ReplayResult:
    sent: int = 0
    repeats: int = 0  # copies of operations already re-sent in this pass (earlier replays archived them)
    skipped: list[str] = field(default_factory=list)  # why some could not be replayed
    dirs: int = 0  # queue directories read (archive, claimed segments, inbox)


def parse_time(value: str | None) -> float | None:
    """A bound for enqueue times: keeps fractions of a second (envelopes carry them)."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return float(normalize_timestamp(value))  # ISO 8601
    if number != number or number < 0:
        raise ValueError(f"{value!r} is not a time")
    return number / 1000 if number >= 1e11 else number


def dead_letter_rows(
    paths: Paths, columns: str, op: str | None = None, op_id: str | None = None, since: float | None = None
) -> list[tuple[str, tuple[Any, ...]]]:
    """(tier, row) of every dead letter in every database, oldest first within a tier.

    ``columns`` is a fixed column list from this package, never user input;
    the filters are bound values.
    """
    rows: list[tuple[str, tuple[Any, ...]]] = []
    for tier in (*TIERS, STATE_TIER):
        conn = open_readonly(paths.database_file(tier))
        if conn is None:
            continue
        try:
            sql = f"SELECT {columns} FROM cq_dead_letters WHERE 1"
            args: list[Any] = []
            # Names and ids are stored under the text rule (clean_text): a filter typed with bytes
            # that are not UTF-8 finds them the same way, and never fails to bind.
            for clause, value in (("op = ?", None if op is None else clean_text(op)),
                                  ("op_id = ?", None if op_id is None else clean_text(op_id)),
                                  ("last_failed >= ?", since)):
                if value is not None:
                    sql += f" AND {clause}"
                    args.append(value)
            rows += [(tier, tuple(r)) for r in conn.execute(sql + " ORDER BY id", args)]
        except apsw.SQLError:
            continue  # not migrated yet: no dead letters there
        finally:
            conn.close()
    return rows


def _dead_letters(paths: Paths, op: str | None, op_id: str | None) -> list[tuple[str, str, bytes, str]]:
    return [(r[0], r[1], bytes(r[2]), r[3])
            for _tier, r in dead_letter_rows(paths, "op_id, op, envelope, format", op, op_id)]


def _retry_rejected(op_id: str, payload: bytes, now: float) -> tuple[bytes, bool]:
    """A rejected source line, mapped again with today's alias table: (record, is_json)."""
    from ..errors import InvalidOperation
    from ..ids import derived_op_id
    from ..producers.jsonl import _convert
    from ..producers.sources import Line
    from ..producers.validate import encode_body
    from ..schemas.registry import OPS

    rej = msgspec.json.decode(payload, type=Rejected)
    line = Line(rej.line, rej.raw.encode(), 0, size=rej.size or None)  # a cut line stays refused, as it was
    try:
        item, stamp = _convert(rej.op, line, OPS[rej.op].columns)
        body = encode_body(item, rej.op, rej.line)
    except InvalidOperation as err:
        # Still bad: re-file it under the same dead letter with today's reason.
        why = f"field {err.field}: {err.reason}" if err.field else err.reason
        again = Rejected(rej.op, rej.source, rej.line, why, rej.raw, rej.size)
        env = Envelope(op_id, REJECTED_OP, 1, now, "replay", msgspec.Raw(msgspec.msgpack.encode(again)))
        return msgspec.msgpack.encode(Record(1, now, [env])), False
    new_id = derived_op_id(stamp, rej.line, rej.source, line.raw)  # the id an import of the line gives
    env = Envelope(new_id, rej.op, OPS[rej.op].version, now, "replay", msgspec.Raw(body), retry_of=op_id)
    return msgspec.msgpack.encode(Record(1, now, [env])), False


def replay_dead_letters(paths: Paths, op: str | None = None, op_id: str | None = None) -> ReplayResult:
    result = ReplayResult()
    now = time.time()
    out: list[bytes] = []
    for dead_id, dead_op, payload, fmt in _dead_letters(paths, op, op_id):
        try:
            if fmt == "msgpack":
                env = msgspec.msgpack.decode(payload, type=Envelope)
                env.retry_of = dead_id
                out.append(encode_record(Record(1, now, [env]), False))
            elif fmt == "json":
                env = msgspec.json.decode(payload, type=Envelope)
                env.retry_of = dead_id
                out.append(encode_record(Record(1, now, [env]), True))
            elif fmt == "rejected":
                out.append(_retry_rejected(dead_id, payload, now)[0])
            else:
                result.skipped.append(f"{dead_id}: {fmt} data (damaged spool bytes) cannot be replayed")
                continue
        except (msgspec.DecodeError, RecursionError) as exc:
            result.skipped.append(f"{dead_id}: stored envelope undecodable: {exc}")
            continue
        result.sent += 1
    if out:
        append_records(paths, out)
    return result


def replay_archive(
    paths: Paths,
    since: float | None = None,
    until: float | None = None,
    op: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Re-send journal operations in [since, until] (enqueue time), optionally of one op type.

    The window is the whole journal: archived segments, then the claimed
    segments and the inbox, whose operations may be applied but not archived
    yet. Re-sending one that is still pending costs nothing: op ids make the
    second copy a no-op.
    """
    result = ReplayResult()
    dirs = journal_dirs(paths, archived=True, pending=True)
    result.dirs = len(dirs)
    with FirstCopies() as seen:
        for n, qd in enumerate(dirs, 1):
            batch: list[bytes] = []
            for is_json, record in records(qd, result.skipped):
                keep = [
                    e for e in record.ops
                    if (since is None or e.ts >= since) and (until is None or e.ts <= until) and (op is None or e.op == op)
                ]
                if keep:  # each operation once, however many copies earlier replays left
                    keep = list(compress(keep, seen.first([e.id for e in keep])))
                if keep:
                    batch.append(encode_record(Record(len(keep), keep[0].ts, keep), is_json))
                    result.sent += len(keep)
            if batch:
                append_records(paths, batch)
            if progress:
                progress(n)
        result.repeats = seen.repeats
    return result


def list_dead_letters(paths: Paths, op: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
    """Every dead letter, for ``codi-queue dead-letters``: what ``replay --id`` needs, without sqlite3."""
    out = []
    columns = "op_id, op, reason, attempts, first_failed, last_failed, segment, pos, format, envelope"
    for tier, (op_id, name, reason, attempts, first, last, segment, pos, fmt, envelope) in dead_letter_rows(
        paths, columns, op, None, since
    ):
        entry: dict[str, Any] = {
            "id": op_id, "op": name, "tier": tier, "reason": reason, "attempts": attempts,
            "first_failed": first, "last_failed": last, "segment": segment, "pos": pos, "source": None,
        }
        if fmt == "rejected":  # a bad line of an imported file: say which
            try:
                rejected = msgspec.json.decode(bytes(envelope), type=Rejected)
                entry["source"] = f"{rejected.source}:{rejected.line}"
            except (msgspec.DecodeError, ValueError):
                entry["source"] = None  # the report itself is unreadable; its reason still says why
        out.append(entry)
    return out
