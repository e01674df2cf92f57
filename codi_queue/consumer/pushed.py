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
from .apply import Item
from .db import open_readonly
from .records import decode_record

__all__ = ["read_progress", "save_progress", "home_id", "retention_hold", "note_error", "PULLED_PREFIX",
           "Applied", "Moved", "journal_ops", "left_out", "backlog", "pushed_mark"]

# The producer name of operations ``sync pull`` enqueued: never pushed back.
PULLED_PREFIX = "sync-pull:"


def read_progress(paths: Paths) -> dict[str, Any]:
    """``{"tiers": {tier: {"segment", "pos", "pushed_at", "operations"}}, "last_push", "last_error"}`` ({} if none)."""
    try:
        data = json.loads(read_file(paths.sync_push_file, 1024 * 1024))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_progress(paths: Paths, tier: str, segment: str, pos: int, operations: int) -> None:
    data = read_progress(paths)
    tiers = data.setdefault("tiers", {})
    if not isinstance(tiers, dict):
        tiers = data["tiers"] = {}
    previous = tiers.get(tier)
    if not isinstance(previous, dict):
        previous = {}
    now = time.time()
    tiers[tier] = {"segment": segment, "pos": pos, "pushed_at": now,
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


def pushed_mark(entry: Any) -> tuple[str, int]:
    """(segment, position) of a progress entry; the start of the journal if it is not one."""
    if not isinstance(entry, dict):
        return "", 0
    segment, pos = entry.get("segment"), entry.get("pos")
    if not isinstance(segment, str) or not isinstance(pos, int) or isinstance(pos, bool) or pos < 0:
        return "", 0
    return segment, pos


def retention_hold(paths: Paths, tiers: tuple[str, ...]) -> str | None:
    """The oldest segment some pushed tier still needs: None holds nothing (no tier is pushed),
    "" holds every segment (a tier never pushed yet)."""
    if not tiers:
        return None
    progress = read_progress(paths).get("tiers")
    if not isinstance(progress, dict):
        return ""
    held = []
    for tier in tiers:
        entry = progress.get(tier)
        segment = entry.get("segment") if isinstance(entry, dict) else None
        held.append(segment if isinstance(segment, str) else "")
    return min(held)


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
    """How far the consumer has applied one tier, and how far it has read the journal at all."""

    own: tuple[str, int] = ("", 0)  # this tier's cursor: its operations up to here are applied
    read: tuple[str, int] = ("", 0)  # the furthest cursor of any tier: records past it are unread
    dead: set[str] = field(default_factory=set)  # operation ids that are dead letters in this tier

    @classmethod
    def read_all(cls, paths: Paths, tiers: tuple[str, ...]) -> dict[str, Applied]:
        """Each tier's mark, reading every database once."""
        marks: dict[str, tuple[str, int]] = {}
        dead: dict[str, set[str]] = {}
        for name in (*TIERS, STATE_TIER):
            conn = open_readonly(paths.database(name))
            if conn is None:
                continue
            try:
                row = conn.execute("SELECT segment, pos FROM cq_cursor ORDER BY segment DESC LIMIT 1").fetchone()
                if name in tiers:
                    dead[name] = {r[0] for r in conn.execute("SELECT op_id FROM cq_dead_letters")}
            except apsw.SQLError:
                continue  # not migrated yet: nothing applied there
            finally:
                conn.close()
            marks[name] = (str(row[0]), int(row[1])) if row else ("", 0)
        furthest = max(marks.values(), default=("", 0))
        return {t: cls(marks.get(t, ("", 0)), furthest, dead.get(t, set())) for t in tiers}

    @classmethod
    def read_from(cls, paths: Paths, tier: str) -> Applied:
        return cls.read_all(paths, (tier,))[tier]


class Moved(Exception):
    """A directory was archived between listing and reading: list again."""


def journal_ops(
    paths: Paths, tier: str, start: tuple[str, int], applied: Applied, unreadable: list[str] | None = None
) -> Iterator[tuple[str, int, list[tuple[Any, Item]]]]:
    """(segment, record end, [(spec, item)] of ``tier``) for each applied record after ``start``.

    An archived segment is applied whole. Past that, a record is applied for
    this tier if it lies within the tier's own cursor, or holds nothing for the
    tier and lies within what the consumer has read (another tier's cursor): a
    tier that rarely gets operations still moves on, so retention can let old
    segments go. A record with nothing for the tier is yielded too (its
    position moves the push cursor). An archived directory that cannot be read
    as one (a link, a file, no permission) is passed over and named in
    ``unreadable``: it must not hold every later segment back forever.
    """
    spool = Spool(paths.spool, paths.archive)
    archived = {qd.id for qd in spool.archived_dirs()}
    for qd in spool.journal():
        if qd.id < start[0]:
            continue
        pending = qd.id not in archived
        if pending and qd.id > applied.read[0]:
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
            if pending and (seg, end) > applied.own and (found or (seg, end) > applied.read):
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


def backlog(paths: Paths, tier: str, start: tuple[str, int]) -> int:
    """Operations of ``tier`` applied here and not yet pushed (counted, bodies not decoded)."""
    for _attempt in range(10):
        applied = Applied.read_from(paths, tier)
        try:
            return sum(
                1
                for _seg, _end, found in journal_ops(paths, tier, start, applied)
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
