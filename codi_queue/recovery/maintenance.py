"""``codi-queue db check|vacuum|migrate``: database care without running the consumer.

``check`` only reads and is safe at any time. ``vacuum`` and ``migrate``
write, so they take the consumer's lock (the consumer must be stopped).
"""

from __future__ import annotations

import os
from typing import Any

import apsw

from ..consumer.db import migrate as run_migrations
from ..consumer.db import open_readonly, open_tier, schema_version, set_busy_timeout
from ..consumer.lock import ConsumerLock
from ..errors import CodiQueueError
from ..schemas.registry import ALL_TIERS
from ..paths import Paths
from ..schemas.migrations import latest_version
from .backup import integrity

__all__ = ["check", "vacuum", "migrate"]


def _wal_bytes(path: str) -> int:
    try:
        return os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return 0


def _version(path: str) -> int | None:
    """The database's schema version, or None if it does not exist."""
    conn = open_readonly(path)
    if conn is None:
        return None
    try:
        return schema_version(conn)
    finally:
        conn.close()


def check(paths: Paths) -> dict[str, dict[str, Any]]:
    """Each tier's integrity, schema version and size; one that cannot be read at all (not a
    database, a FIFO in its place) is reported with why (``error``), and the others still checked."""
    report: dict[str, dict[str, Any]] = {}
    for tier in ALL_TIERS:
        try:
            path = paths.database_file(tier)
            version = _version(path)
        except (apsw.Error, CodiQueueError, OSError) as exc:
            report[tier] = {"exists": True, "error": f"{type(exc).__name__}: {exc}"}
            continue
        if version is None:
            report[tier] = {"exists": False}
            continue
        report[tier] = {
            "exists": True,
            "integrity": integrity(path),
            "user_version": version,
            "latest_version": latest_version(tier),
            "bytes": os.path.getsize(path),
            "wal_bytes": _wal_bytes(path),
        }
    return report


# Each tier's outcome: (before, after), or why it failed. A tier that fails costs only itself,
# as in ``check`` and ``backup``: the others are still done, and every outcome is reported.
Outcome = tuple[int, int] | str


def _each_tier(paths: Paths, step: Any) -> dict[str, Outcome]:
    done: dict[str, Outcome] = {}
    with ConsumerLock(paths):
        for tier in ALL_TIERS:
            try:
                result = step(paths.database_file(tier), tier)
            except (apsw.Error, CodiQueueError, OSError) as exc:
                result = f"{type(exc).__name__}: {exc}"
            if result is not None:
                done[tier] = result
    return done


def vacuum(paths: Paths) -> dict[str, Outcome]:
    """Checkpoint the WAL and rebuild each file compactly: tier → (bytes before, bytes after)."""
    return _each_tier(paths, _vacuum_one)


def _vacuum_one(path: str, tier: str) -> tuple[int, int] | None:
    if _version(path) is None:  # absent (opened as regular files only: a FIFO would hang SQLite)
        return None
    before = os.path.getsize(path) + _wal_bytes(path)
    conn = apsw.Connection(path)
    try:
        set_busy_timeout(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return before, os.path.getsize(path) + _wal_bytes(path)


def migrate(paths: Paths) -> dict[str, Outcome]:
    """Apply pending migrations: tier → (version before, version after)."""
    return _each_tier(paths, _migrate_one)


def _migrate_one(path: str, tier: str) -> tuple[int, int]:
    before = _version(path) or 0
    conn = open_tier(path, tier)  # migrates (and refuses a database newer than this code)
    try:
        return before, run_migrations(conn, tier)
    finally:
        conn.close()
