"""What ``codi-queue sync push|pull|status|migrate`` reports: each action run, summed up as a dict
with a one-paragraph ``summary`` (the command prints one or the other)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import SyncConfig, load_config
from ..errors import CodiQueueError
from ..paths import Paths

__all__ = ["ACTIONS", "require_sync"]


def require_sync(paths: Paths) -> SyncConfig:
    config = load_config(paths)
    if config.sync is None:
        raise CodiQueueError(f"no [sync] table in {config.path}: see docs/team.md for url, machine, push, pull")
    return config.sync


def _push(paths: Paths, sync: SyncConfig, batch: int) -> dict[str, Any]:
    from .push import Pusher

    started = time.monotonic()
    with Pusher(paths, sync, batch) as pusher:
        results = pusher.push()
    took = time.monotonic() - started
    total = sum(r.operations for r in results.values())
    parts = ", ".join(f"{t} {r.operations}" for t, r in results.items()) or "no tiers configured"
    return {
        "summary": f"pushed {total} operations as {sync.machine} in {took:.1f}s ({parts})",
        "machine": sync.machine,
        "seconds": round(took, 3),
        "tiers": {t: {"operations": r.operations, "batches": r.batches, "left_out": r.skipped,
                      "segment": r.segment, "pos": r.pos} for t, r in results.items()},
    }


def _pull(paths: Paths, sync: SyncConfig, _batch: int = 0) -> dict[str, Any]:
    from .pull import pull

    result = pull(paths, sync)
    summary = f"pulled {result.operations} operations into the spool (the consumer applies them)"
    if result.unusable:
        summary += f"; {result.unusable} rows could not be operations, e.g. {result.first_problem}"
    return {"summary": summary, "operations": result.operations, "unusable": result.unusable,
            "first_problem": result.first_problem, "from": result.machines}


def _migrate(paths: Paths, sync: SyncConfig, _batch: int = 0) -> dict[str, Any]:
    from ..schemas.postgres import fingerprint
    from .teamdb import connect, ensure_schema

    conn = connect(sync)
    try:
        changed = ensure_schema(conn)
    finally:
        conn.close()
    what = "migrated" if changed else "already up to date"
    return {"summary": f"team database {what} (schema {fingerprint()})", "changed": changed,
            "fingerprint": fingerprint()}


def _status(paths: Paths, sync: SyncConfig, _batch: int = 0) -> dict[str, Any]:
    """What PostgreSQL says (when reachable) beside what this machine counts."""
    from ..consumer.pushed import backlog, pushed_marks, read_progress

    local = read_progress(paths)
    remote: dict[str, Any] = {}
    error = None
    try:
        remote = _remote_cursors(sync)
    except CodiQueueError as exc:
        error = str(exc)
    tiers: dict[str, Any] = {}
    for tier in sync.push:
        local_tiers = local.get("tiers")
        mark = remote.get(tier) or (local_tiers.get(tier) if isinstance(local_tiers, dict) else None) or {}
        start = pushed_marks(mark)
        zero = start.get(0, ("", 0))
        tiers[tier] = {"segment": zero[0], "pos": zero[1], "backlog": backlog(paths, tier, start),
                       "lanes": {str(lane): {"segment": m[0], "pos": m[1]} for lane, m in sorted(start.items())},
                       "operations": mark.get("operations"), "pushed_at": mark.get("pushed_at")}
    lines = [f"machine {sync.machine}, team database "
             + ("reachable" if error is None else f"not reachable: {error}")]
    for tier, t in tiers.items():
        lines.append(f"  {tier:<9} backlog {t['backlog']:>8}  pushed {t['operations'] or 0} operations"
                     + (f", up to segment {t['segment']} @ {t['pos']}" if t["segment"] else
                        ", nothing yet" if len(t["lanes"]) < 2 else "")
                     + (f" (and {len(t['lanes']) - 1} more lanes)" if len(t["lanes"]) > 1 else ""))
    if local.get("last_error"):
        lines.append(f"  last error: {local['last_error']}")
    return {"summary": "\n".join(lines), "machine": sync.machine, "reachable": error is None, "error": error,
            "tiers": tiers, "last_push": local.get("last_push"), "last_error": local.get("last_error")}


def _remote_cursors(sync: SyncConfig) -> dict[str, dict[str, Any]]:
    import psycopg

    from ..schemas.postgres import SYNC_SCHEMA
    from .teamdb import connect, describe

    conn = connect(sync)
    try:
        rows = conn.execute(
            f'SELECT tier, segment, pos, operations, extract(epoch FROM pushed_at)::float8 FROM "{SYNC_SCHEMA}".push_cursors '
            "WHERE machine = %s", (sync.machine,),
        ).fetchall()
        lanes = conn.execute(
            f'SELECT tier, lane, segment, pos FROM "{SYNC_SCHEMA}".push_lanes WHERE machine = %s', (sync.machine,),
        ).fetchall() if rows else []
    except psycopg.errors.UndefinedTable:
        return {}  # never pushed to (by this version): nothing there yet
    except psycopg.Error as exc:
        from ..errors import SyncError

        raise SyncError(describe(exc, sync)) from None
    finally:
        conn.close()
    found: dict[str, dict[str, Any]] = {
        r[0]: {"segment": r[1], "pos": r[2], "operations": r[3], "pushed_at": r[4], "lanes": {}} for r in rows}
    for tier, lane, segment, pos in lanes:
        if tier in found:
            found[tier]["lanes"][str(lane)] = [segment, pos]
    return found


ACTIONS: dict[str, Callable[[Paths, SyncConfig, int], dict[str, Any]]] = {
    "push": _push, "pull": _pull, "status": _status, "migrate": _migrate,
}
