"""``codi-queue rebuild``: tier databases rebuilt from the journal (archive + pending).

The journal holds every operation the archive's retention still keeps, so a
deleted or corrupt database can be recovered from it. Into a directory of
your choice (``--into``, safe while the consumer runs), or in place: then the
consumer must be stopped, the old files are kept aside, and any table that
had more rows than the journal can restore is reported.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import apsw

from ..consumer.db import open_readonly
from ..consumer.lock import ConsumerLock
from ..consumer.loop import Consumer
from ..schemas.registry import ALL_TIERS
from ..fsutil import ensure_private_dir, exists, fsync_dir
from ..errors import CodiQueueError
from ..paths import Paths
from ..schemas.registry import OPS, REJECTED_OP, STATE_TIER
from .journal import journal_dirs, records

__all__ = ["RebuildResult", "count_journal", "rebuild_into", "rebuild_in_place"]


@dataclass
class RebuildResult:
    operations: int = 0
    per_table: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)  # tier → where the old file went
    warnings: list[str] = field(default_factory=list)


def count_journal(paths: Paths, tiers: tuple[str, ...]) -> RebuildResult:
    """What a rebuild would apply (``--dry-run``): operations per table."""
    counts: Counter[str] = Counter()
    for qd in journal_dirs(paths):
        for _, record in records(qd):
            for env in record.ops:
                spec = OPS.get(env.op)
                tier = spec.tier if spec else STATE_TIER
                if tier in tiers:
                    counts[spec.table if spec else ("dead letters" if env.op == REJECTED_OP else f"?{env.op}")] += 1
    return RebuildResult(sum(counts.values()), dict(sorted(counts.items())))


def rebuild_into(
    paths: Paths, into: str, tiers: tuple[str, ...] = ALL_TIERS, progress: Callable[[int], None] | None = None
) -> RebuildResult:
    """Rebuild ``tiers`` from the journal into ``into``, a directory of the user's choosing."""
    return _rebuild(paths, paths.output_dir(into, "rebuild --into"), tiers, progress)


def _rebuild(
    paths: Paths, into: str, tiers: tuple[str, ...], progress: Callable[[int], None] | None
) -> RebuildResult:
    ensure_private_dir(into)
    for tier in tiers:
        if exists(os.path.join(into, os.path.basename(paths.database(tier)))):
            raise FileExistsError(f"{into} already holds a {tier} database: rebuild into an empty directory")
    consumer = Consumer(paths.with_db_dir(into), batch_ops=50_000, tiers=tiers)
    stats = consumer.apply_journal(journal_dirs(paths), progress)
    result = RebuildResult(stats.operations)
    for tier in tiers:
        path = os.path.join(into, os.path.basename(paths.database(tier)))
        if exists(path):
            # A writer connection: closing the last one checkpoints and removes the WAL.
            conn = apsw.Connection(path)
            try:
                for table, n in conn.execute("SELECT tbl, n FROM cq_applied"):
                    result.per_table[table] = int(n)
            finally:
                conn.close()
    return result


def _row_counts(path: str) -> dict[str, int]:
    conn = open_readonly(path)
    if conn is None:
        return {}
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'cq_%' "
            "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%'"
        )]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').get) for t in tables}
    finally:
        conn.close()


def rebuild_in_place(
    paths: Paths, tiers: tuple[str, ...] = ALL_TIERS, progress: Callable[[int], None] | None = None
) -> RebuildResult:
    """Rebuild the live databases; needs the consumer stopped (its lock), keeps the old files aside."""
    adopted = [t for t in tiers if t != "state" and paths.configured_database(t)]
    if adopted:
        # An adopted database holds rows the journal never saw (the platform's
        # own): replacing it would drop them. Rebuild beside it instead.
        raise CodiQueueError(
            f"{', '.join(adopted)}: the database is one you pointed codi-queue at ({paths.database(adopted[0])}); "
            "rebuilding it in place would drop the rows codi-queue never wrote: use --into DIR"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with ConsumerLock(paths):
        work = os.path.join(paths.db_dir, f".rebuild-{stamp}")
        try:
            result = _rebuild(paths, work, tiers, progress)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # half a rebuild is no use to anyone; the error says why
            raise
        for tier in tiers:
            live = paths.database_file(tier)
            fresh = paths.with_db_dir(work).database(tier)
            if exists(live):
                old, new = _row_counts(live), _row_counts(fresh)
                for table, n in sorted(old.items()):
                    if n > new.get(table, 0):
                        result.warnings.append(
                            f"{table}: the old database had {n - new.get(table, 0)} rows the journal does not hold "
                            f"(older than the archive's retention, or written before codi-queue)"
                        )
                aside = f"{live}.before-rebuild-{stamp}"
                for suffix in ("", "-wal", "-shm"):
                    if exists(live + suffix):
                        os.replace(live + suffix, aside + suffix)
                result.replaced[tier] = aside
            for suffix in ("-wal", "-shm"):
                if exists(fresh + suffix):
                    os.replace(fresh + suffix, live + suffix)
            os.replace(fresh, live)
        fsync_dir(paths.db_dir)
        try:
            shutil.rmtree(work)
        except OSError as exc:
            result.warnings.append(f"could not remove the work directory {work}: {exc}")
    return result
