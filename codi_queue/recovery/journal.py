"""The journal: every record still on disk, archived segments first, then pending ones and the inbox."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from ..consumer.records import decode_record
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import SegmentReader, describe_pos
from ..queue.spool import QueueDir, Spool
from ..schemas.envelope import Record

__all__ = ["journal_dirs", "records", "encode_record", "FirstCopies"]

def journal_dirs(paths: Paths, archived: bool = True, pending: bool = True) -> list[QueueDir]:
    return Spool(paths.spool, paths.archive).journal(archived, pending)


def records(qd: QueueDir, damage: list[str] | None = None) -> Iterator[tuple[bool, Record]]:
    """(is_json, record) of every intact record in one queue directory.

    Damaged spans and undecodable records are never decoded: each is described
    in ``damage`` (when given) and reading goes on after it.
    """
    try:
        reader = SegmentReader(qd.path, live=qd.live, trust_info=True)  # the inbox: up to its info, never past
    except FileNotFoundError:
        return  # archived or claimed while we looked; the caller lists again
    with reader:
        if damage is not None:
            damage.extend(reader.warnings)
        for entry in reader.entries():
            if entry.payload is None:
                if damage is not None:
                    damage.append(f"{qd.path}: {describe_pos(entry.start)}: {entry.damage}")
                continue
            is_json = entry.kind == KIND_JSON_RECORD
            try:
                # As the consumer decodes it (the text rule for a JSON record's invalid text): a replay
                # had called "damaged" a record the consumer applied.
                yield is_json, decode_record(entry.payload, is_json)[0]
            except (msgspec.DecodeError, RecursionError, ValueError) as exc:
                if damage is not None:
                    damage.append(f"{qd.path}: {describe_pos(entry.start)}: undecodable record: {exc}")


def encode_record(record: Record, is_json: bool) -> bytes:
    """A record encoded as it was written (JSON bodies must stay in a JSON record)."""
    if is_json:
        from ..queue.frame import JsonRecord

        return JsonRecord(msgspec.json.encode(record))
    return msgspec.msgpack.encode(record)


class FirstCopies:
    """Which operation ids a pass over the journal meets for the first time.

    Operations re-sent by ``replay archive`` are archived again, so the
    journal holds one more copy of each after every replay; a replay that
    re-sent every copy it found doubled the journal each time (four replays
    of 3 operations left 48). The ids seen live in a temporary SQLite
    database (on disk past its cache: a journal of millions of operations
    must not need their ids in memory).
    """

    def __init__(self) -> None:
        import apsw

        self._db = apsw.Connection("")  # a private temporary database, deleted when closed
        self._db.execute("CREATE TABLE seen (id BLOB PRIMARY KEY) WITHOUT ROWID")
        self.repeats = 0  # copies left out

    def first(self, ids: list[str]) -> list[bool]:
        """For each of ``ids``, whether no earlier call (nor an earlier place in ``ids``) had it."""
        # Keys are the ids' bytes: SQLite text cannot hold a lone surrogate, whatever text a record held.
        keys = [op_id.encode("utf-8", "surrogatepass") for op_id in ids]
        db = self._db
        known: set[bytes] = set()
        for at in range(0, len(keys), 500):  # within SQLite's bound parameters
            part = keys[at : at + 500]
            known.update(r[0] for r in db.execute(
                f"SELECT id FROM seen WHERE id IN ({', '.join('?' * len(part))})", part))
        out = []
        for key in keys:
            fresh = key not in known
            if fresh:
                known.add(key)  # a second copy in the same list is a repeat too
            out.append(fresh)
        with db:
            db.executemany("INSERT INTO seen VALUES (?)", [(k,) for k, fresh in zip(keys, out) if fresh])
        self.repeats += out.count(False)
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FirstCopies:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
