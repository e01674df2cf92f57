"""What ``codi-queue status`` reports, read without disturbing the consumer."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..errorlog import error_count, last_error
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import SegmentReader
from ..queue.spool import Spool
from ..schemas.envelope import RecordHead
from ..schemas.registry import STATE_TIER, TIERS
from .db import open_readonly
from .lock import consumer_pid

__all__ = ["collect"]

_decode_head = msgspec.msgpack.Decoder(RecordHead).decode
_decode_json_head = msgspec.json.Decoder(RecordHead).decode


def collect(paths: Paths) -> dict[str, Any]:
    conns = {t: open_readonly(paths.database(t)) for t in (*TIERS, STATE_TIER)}
    try:
        pending, oldest = _pending(paths, conns)
        dead = 0
        applied: dict[str, int] = {}
        for conn in conns.values():
            if conn is None or not _has_table(conn, "cq_applied"):
                continue
            dead += int(conn.execute("SELECT count(*) FROM cq_dead_letters").get)
            for table, n in conn.execute("SELECT tbl, n FROM cq_applied ORDER BY tbl"):
                applied[table] = applied.get(table, 0) + int(n)
    finally:
        for conn in conns.values():
            if conn is not None:
                conn.close()
    pid = consumer_pid(paths.consumer_lock)
    return {
        "pending": pending,
        "oldest_pending_age_s": None if oldest is None else round(max(0.0, time.time() - oldest), 3),
        "dead_letters": dead,
        "consumer": {"running": pid is not None, "pid": pid if pid and pid > 0 else None},
        "applied": applied,
        "last_error": last_error(paths.error_log),
        "producer_errors": error_count(paths.error_log, "producer"),
    }


def _has_table(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _applied_upto(conns: dict[str, Any], seg: str) -> int:
    best = 0
    for conn in conns.values():
        if conn is not None and _has_table(conn, "cq_cursor"):
            row = conn.execute("SELECT pos FROM cq_cursor WHERE segment = ?", (seg,)).fetchone()
            if row:
                best = max(best, int(row[0]))
    return best


def _pending(paths: Paths, conns: dict[str, Any]) -> tuple[int, float | None]:
    count = 0
    oldest: float | None = None
    for qd in Spool(paths.spool, paths.archive).queue_dirs():
        try:
            reader = SegmentReader(qd.path)
        except FileNotFoundError:
            continue  # claimed or archived while we looked
        with reader:
            for entry in reader.entries(_applied_upto(conns, qd.id)):
                if entry.payload is None:
                    continue
                try:
                    head = (_decode_json_head if entry.kind == KIND_JSON_RECORD else _decode_head)(entry.payload)
                except msgspec.DecodeError:
                    continue
                count += head.n
                if oldest is None:
                    oldest = head.ts
    return count, oldest
