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
from typing import Any

from ..fsutil import ensure_private_dir, read_file, write_atomic
from ..paths import Paths

__all__ = ["read_progress", "save_progress", "save_backlog", "retention_hold", "note_error"]


def read_progress(paths: Paths) -> dict[str, Any]:
    """``{"tiers": {tier: {"segment", "pos", "pushed_at", "operations"}}, "last_error", ...}`` ({} if none)."""
    try:
        data = json.loads(read_file(paths.sync_push_file, 1024 * 1024))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_progress(paths: Paths, tier: str, segment: str, pos: int, operations: int, backlog: int | None) -> None:
    data = read_progress(paths)
    tiers = data.setdefault("tiers", {})
    if not isinstance(tiers, dict):
        tiers = data["tiers"] = {}
    previous = tiers.get(tier)
    if not isinstance(previous, dict):
        previous = {}
    now = time.time()
    tiers[tier] = {"segment": segment, "pos": pos, "pushed_at": now,
                   "operations": int(previous.get("operations", 0)) + operations, "backlog": backlog}
    data["last_push"] = now
    data["last_error"] = None
    _write(paths, data)


def save_backlog(paths: Paths, tier: str, backlog: int) -> None:
    """Operations applied here and not yet pushed, as last counted (0 right after catching up)."""
    data = read_progress(paths)
    tiers = data.setdefault("tiers", {})
    if not isinstance(tiers, dict):
        tiers = data["tiers"] = {}
    entry = tiers.setdefault(tier, {})
    if isinstance(entry, dict):
        entry["backlog"] = backlog
        entry["counted_at"] = time.time()
    _write(paths, data)


def note_error(paths: Paths, reason: str) -> None:
    """The last reason a push failed (no secrets: callers pass redacted text)."""
    data = read_progress(paths)
    data["last_error"] = reason
    data["last_error_at"] = time.time()
    _write(paths, data)


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


def _write(paths: Paths, data: dict[str, Any]) -> None:
    ensure_private_dir(paths.state)  # a push from a home whose consumer never ran
    write_atomic(paths.sync_push_file, json.dumps(data, sort_keys=True).encode())
