"""``sync pull``: rows other machines pushed, brought into the local databases as operations.

They go through the local spool, so the consumer stays the only writer and
applies them like any other operation: an event whose ``op_id`` is known is
skipped, an upsert only moves to a newer operation. Each machine's rows are
followed by its push batches (a batch's rows and its cursor commit together,
so every row of a batch up to the cursor read is visible). The batch reached
per machine is kept locally, written after the operations are durable: a
pull killed in between enqueues them again, and op ids make that a no-op.
Pulled operations carry the producer ``sync-pull:<machine>`` and are never
pushed back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..config import SyncConfig
from ..errors import shown
from ..fsutil import ensure_private_dir, read_file, write_atomic
from ..ids import op_id_time
from ..paths import Paths
from ..producers.records import append_records
from ..producers.validate import encode_body, pack_records
from ..schemas.postgres import SYNC_SCHEMA, PgTable, tables_of
from .push import PULLED_PREFIX
from .teamdb import connect, describe, ensure_schema

__all__ = ["pull", "PullResult", "read_pulled"]

FETCH_ROWS = 5_000


@dataclass
class PullResult:
    operations: int = 0
    unusable: int = 0  # rows that do not make a valid operation (e.g. text kept private by its machine)
    first_problem: str | None = None
    machines: dict[str, dict[str, int]] = field(default_factory=dict)  # tier → machine → rows


def read_pulled(paths: Paths) -> dict[str, dict[str, int]]:
    """tier → machine → the last push batch of that machine already pulled here."""
    try:
        data = json.loads(read_file(paths.sync_pull_file, 1024 * 1024))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {t: {m: int(b) for m, b in v.items() if isinstance(b, int)} for t, v in data.items() if isinstance(v, dict)}


def pull(paths: Paths, sync: SyncConfig) -> PullResult:
    import psycopg

    result = PullResult()
    pulled = read_pulled(paths)
    conn = connect(sync)
    try:
        ensure_schema(conn)
        for tier in sync.pull:
            done = pulled.setdefault(tier, {})
            with conn.transaction():
                heads = conn.execute(
                    f'SELECT machine, batch FROM "{SYNC_SCHEMA}".push_cursors WHERE tier = %s AND machine <> %s',
                    (tier, sync.machine),
                ).fetchall()
            for machine, head in heads:
                since = done.get(machine, 0)
                if head <= since:
                    continue
                n = 0
                for table in tables_of(tier):
                    n += _pull_table(paths, conn, table, machine, since, head, result)
                result.machines.setdefault(tier, {})[machine] = n
                done[machine] = head
                ensure_private_dir(paths.state)
                write_atomic(paths.sync_pull_file, json.dumps(pulled, sort_keys=True).encode())
    except psycopg.Error as exc:
        from ..errors import SyncError

        raise SyncError(describe(exc, sync)) from None
    finally:
        conn.close()
    return result


def _pull_table(paths: Paths, conn: Any, table: PgTable, machine: str, since: int, head: int,
                result: PullResult) -> int:
    spec = table.spec
    width = len(table.fields)
    count = 0
    with conn.transaction(), conn.cursor(name=f"cq_pull_{table.schema}_{table.name}") as cur:
        cur.execute(table.select_pushed(), (machine, since, head))
        while rows := cur.fetchmany(FETCH_ROWS):
            bodies: list[bytes] = []
            ids: list[str] = []
            for row in rows:
                body = {name: value for name, value in zip(table.fields, row[:width]) if value is not None}
                try:
                    _check_op_id(row[width])
                    bodies.append(encode_body(msgspec.convert(body, spec.type), spec.name))
                except (msgspec.ValidationError, ValueError, TypeError) as exc:
                    result.unusable += 1
                    result.first_problem = result.first_problem or f"{table.qualified} op {shown(row[width])}: {exc}"
                    continue
                ids.append(row[width])
            if bodies:
                append_records(paths, pack_records(spec.name, bodies, f"{PULLED_PREFIX}{machine}", ids))
                count += len(bodies)
                result.operations += len(bodies)
    return count


FUTURE_SKEW_S = 86_400.0  # clocks disagree; by a day, something else is wrong


def _check_op_id(op_id: object) -> None:
    """A pulled row's operation id must be one of ours, and not from the future: ids order
    upserts here and in the team database, so an id that sorts after every real one (``zzz…``,
    ``ffff…``) would make its row win over every later change, for good."""
    when = op_id_time(op_id)
    if when is None:
        raise ValueError("its operation id is not a time-ordered id of ours")
    ahead = when - time.time()
    if ahead > FUTURE_SKEW_S:
        raise ValueError(f"its operation id is dated {ahead / 86_400:.0f} days ahead: it would outrank every "
                         "later change")
