"""How far the team database has this machine's journal: a local copy of the push cursors.

The pushers (``sync push`` and the consumer's push thread) write it after each
PostgreSQL commit; archive retention reads it so a segment not yet pushed is
never deleted, and ``status`` reports it. The cursors themselves live in
PostgreSQL (committed with the rows); this copy may trail them, never lead,
so at worst retention keeps a segment longer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apsw

from ..errors import SyncError
from ..fsutil import ensure_private_dir, read_file, write_atomic
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import SegmentReader
from ..queue.spool import QueueDir, Spool
from ..schemas.registry import OPS, STATE_TIER, TIERS
from ..timestamps import is_seconds
from .apply import Item
from .db import checked_cursor, open_readonly
from .records import decode_record

__all__ = ["read_progress", "save_progress", "home_id", "retention_hold", "note_error", "PULLED_PREFIX",
           "Applied", "Moved", "Mark", "journal_ops", "left_out", "backlog", "pushed_marks"]

# The producer name of operations ``sync pull`` enqueued: never pushed back.
PULLED_PREFIX = "sync-pull:"


Mark = tuple[str, int]  # (segment, position): a place in one lane's journal


def read_progress(paths: Paths) -> dict[str, Any]:
    """``{"tiers": {tier: {"segment", "pos", "lanes", "pushed_at", "operations"}}, "last_push", "last_error"}``
    ({} if none). ``segment``/``pos`` are lane 0's mark; ``lanes`` holds the others (``{"1": [segment, pos]}``)."""
    try:
        data = json.loads(read_file(paths.sync_push_file, 1024 * 1024))
    except (OSError, ValueError, RecursionError):
        return {}
    return _checked_progress(data) if isinstance(data, dict) else {}


def _when(value: Any) -> float | None:
    return float(value) if is_seconds(value) else None


def _checked_progress(data: dict[str, Any]) -> dict[str, Any]:
    """The progress file's values held to the shapes ``save_progress`` and ``note_error`` write.
    It is read back from the state directory: a time that is text made ``status`` end in an
    internal error, and an operation count that is text failed every push after its COPY. A
    value of the wrong shape is dropped (a mark: that lane is pushed again from its start,
    which the team database takes once)."""
    out: dict[str, Any] = {}
    for key in ("last_push", "last_error_at"):
        if key in data:
            out[key] = _when(data[key])
    if "last_error" in data:
        out["last_error"] = data["last_error"] if isinstance(data["last_error"], str) else None
    tiers = data.get("tiers")
    out["tiers"] = {}
    for tier, entry in tiers.items() if isinstance(tiers, dict) else ():
        if not isinstance(entry, dict):
            continue
        count = entry.get("operations")
        marks = pushed_marks(entry)
        zero = marks.pop(0, ("", 0))
        out["tiers"][tier] = {
            "segment": zero[0], "pos": zero[1], "pushed_at": _when(entry.get("pushed_at")),
            "lanes": {str(lane): list(mark) for lane, mark in sorted(marks.items())},
            "operations": count if type(count) is int and count >= 0 else 0,
        }
    return out


def save_progress(paths: Paths, tier: str, marks: dict[int, Mark], operations: int) -> None:
    data = read_progress(paths)
    tiers = data.setdefault("tiers", {})
    if not isinstance(tiers, dict):
        tiers = data["tiers"] = {}
    previous = tiers.get(tier)
    if not isinstance(previous, dict):
        previous = {}
    now = time.time()
    segment, pos = marks.get(0, ("", 0))
    tiers[tier] = {"segment": segment, "pos": pos, "pushed_at": now,
                   "lanes": {str(lane): list(mark) for lane, mark in sorted(marks.items()) if lane},
                   "operations": int(previous.get("operations", 0)) + operations}
    data["last_push"] = now
    data["last_error"] = None
    _write(paths, data)


def note_error(paths: Paths, reason: str) -> None:
    """The last reason a push failed (no secrets: callers pass redacted text)."""
    data = read_progress(paths)
    data["last_error"] = reason
    data["last_error_at"] = time.time()
    _write(paths, data)


def pushed_marks(entry: Any) -> dict[int, Mark]:
    """Each lane's (segment, position) in a progress entry; a lane it does not name starts at the beginning."""
    if not isinstance(entry, dict):
        return {}
    marks: dict[int, Mark] = {}
    zero = _mark(entry.get("segment"), entry.get("pos"))
    if zero is not None:
        marks[0] = zero
    lanes = entry.get("lanes")
    for key, value in lanes.items() if isinstance(lanes, dict) else ():
        mark = _mark(*value) if isinstance(value, list) and len(value) == 2 else None
        if mark is not None and isinstance(key, str) and key.isascii() and key.isdigit():
            marks[int(key)] = mark
    return marks


def _mark(segment: Any, pos: Any) -> Mark | None:
    if not isinstance(segment, str) or not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
        return None
    return segment, pos


def retention_hold(paths: Paths, tiers: tuple[str, ...]) -> dict[int, str] | None:
    """Per lane, the oldest segment some pushed tier still needs. None holds nothing (no tier is
    pushed); a lane left out, or held at "", keeps every segment (some tier never pushed it)."""
    if not tiers:
        return None
    progress = read_progress(paths).get("tiers")
    per_tier = [pushed_marks(progress.get(t)) if isinstance(progress, dict) else {} for t in tiers]
    lanes = set().union(*per_tier)
    return {lane: min(marks.get(lane, ("", 0))[0] for marks in per_tier) for lane in lanes}


def home_id(paths: Paths) -> str:
    """This home's identity in the team database, made on first use."""
    try:
        found = read_file(paths.sync_home_id_file, 100).decode("ascii", "replace").strip()
    except FileNotFoundError:
        found = ""  # first push from this home
    if found:
        return found
    import uuid

    made = uuid.uuid4().hex
    ensure_private_dir(paths.state)
    write_atomic(paths.sync_home_id_file, made.encode())
    return made


def _write(paths: Paths, data: dict[str, Any]) -> None:
    ensure_private_dir(paths.state)  # a push from a home whose consumer never ran
    write_atomic(paths.sync_push_file, json.dumps(data, sort_keys=True).encode())


@dataclass
class Applied:
    """How far the consumer has applied one tier, and how far it has read the journal at all.

    Per directory: the cursors the consumer commits with the rows. Within a
    lane directories are applied in order, so a lane's furthest cursor marks it."""

    own: dict[str, int] = field(default_factory=dict)  # this tier's cursors: operations up to here are applied
    read: dict[str, int] = field(default_factory=dict)  # the furthest cursor of any tier: past it is unread
    dead: set[str] = field(default_factory=set)  # operation ids that are dead letters in this tier

    @classmethod
    def read_all(cls, paths: Paths, tiers: tuple[str, ...]) -> dict[str, Applied]:
        """Each tier's cursors, reading every database once."""
        cursors: dict[str, dict[str, int]] = {}
        dead: dict[str, set[str]] = {}
        for name in (*TIERS, STATE_TIER):
            conn = open_readonly(paths.database_file(name))
            if conn is None:
                continue
            try:
                rows: list[Any] = conn.execute("SELECT segment, pos FROM cq_cursor").fetchall()
                if name in tiers:
                    dead[name] = {r[0] for r in conn.execute("SELECT op_id FROM cq_dead_letters")}
            except apsw.SQLError:
                continue  # not migrated yet: nothing applied there
            finally:
                conn.close()
            cursors[name] = {str(seg): checked_cursor(pos) or 0 for seg, pos in rows}
        furthest: dict[str, int] = {}
        for tier_cursors in cursors.values():
            for seg, pos in tier_cursors.items():
                furthest[seg] = max(pos, furthest.get(seg, 0))
        return {t: cls(cursors.get(t, {}), furthest, dead.get(t, set())) for t in tiers}

    @classmethod
    def read_from(cls, paths: Paths, tier: str) -> Applied:
        return cls.read_all(paths, (tier,))[tier]


def _lane_mark(cursors: dict[str, int], lane_of: dict[str, int], lane: int) -> Mark:
    return max(((seg, pos) for seg, pos in cursors.items() if lane_of.get(seg) == lane), default=("", 0))


class Moved(Exception):
    """A directory was archived between listing and reading: list again."""


def journal_ops(
    paths: Paths, tier: str, start: dict[int, Mark], applied: Applied, unreadable: list[str] | None = None
) -> Iterator[tuple[int, str, int, list[tuple[Any, Item]]]]:
    """(lane, segment, record end, [(spec, item)] of ``tier``) for each applied record past ``start``,
    one lane after another.

    An archived segment is applied whole. Past that, a record is applied for
    this tier if it lies within the tier's own cursor in its lane, or holds
    nothing for the tier and lies within what the consumer has read there
    (another tier's cursor): a tier that rarely gets operations still moves
    on, so retention can let old segments go. A record with nothing for the
    tier is yielded too (its position moves the push cursor). An archived
    directory that cannot be read as one (a link, a file, no permission) is
    passed over and named in ``unreadable``: it must not hold every later
    segment back forever.
    """
    spool = Spool(paths.spool, paths.archive)
    archived = spool.archived_dirs()
    journal = archived + list(spool.queue_dirs())
    lanes: dict[int, list[QueueDir]] = {}
    for qd in journal:
        lanes.setdefault(qd.lane, []).append(qd)
    lane_of = {qd.id: qd.lane for qd in journal}
    archived_ids = {qd.id for qd in archived}
    for lane in sorted(lanes):
        own, read = _lane_mark(applied.own, lane_of, lane), _lane_mark(applied.read, lane_of, lane)
        for seg, end, found in _lane_ops(lanes[lane], archived_ids, tier, start.get(lane, ("", 0)), own, read,
                                         unreadable):
            yield lane, seg, end, found


def _lane_ops(dirs: list[QueueDir], archived: set[str], tier: str, start: Mark, own: Mark, read: Mark,
              unreadable: list[str] | None) -> Iterator[tuple[str, int, list[tuple[Any, Item]]]]:
    for qd in dirs:
        if qd.id < start[0]:
            continue
        pending = qd.id not in archived
        if pending and qd.id > read[0]:
            return  # not read by the consumer yet
        try:
            reader = SegmentReader(qd.path, live=qd.live, trust_info=True)
        except FileNotFoundError:
            raise Moved(qd.id) from None
        except OSError as exc:
            if pending:
                raise Moved(qd.id) from None  # the consumer moves such a segment aside: list again
            if unreadable is not None:
                unreadable.append(f"{qd.path}: {exc.strerror or exc}")
            continue
        for seg, end, found in _dir_ops(qd, reader, tier, start[1] if qd.id == start[0] else 0):
            if pending and (seg, end) > own and (found or (seg, end) > read):
                return  # this tier has not applied it yet
            yield seg, end, found


def _dir_ops(qd: QueueDir, reader: SegmentReader, tier: str, start: int
             ) -> Iterator[tuple[str, int, list[tuple[Any, Item]]]]:
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


def backlog(paths: Paths, tier: str, start: dict[int, Mark]) -> int:
    """Operations of ``tier`` applied here and not yet pushed (counted, bodies not decoded)."""
    for _attempt in range(10):
        applied = Applied.read_from(paths, tier)
        try:
            return sum(
                1
                for _lane, _seg, _end, found in journal_ops(paths, tier, start, applied)
                for _spec, item in found
                if not left_out(item, applied)
            )
        except Moved:
            continue
    raise SyncError("the spool kept moving while the backlog was counted")


def left_out(item: Item, applied: Applied) -> bool:
    """Pulled from another machine, or a dead letter here: not pushed."""
    env = item.env
    return env.producer.startswith(PULLED_PREFIX) or env.id in applied.dead or (env.retry_of or "") in applied.dead
