"""Claude Code hook payloads → operations. Standard library only: this runs on every tool call.

* ``PreToolUse`` writes an in-flight marker (``state/inflight/<tool_use_id>``)
  and enqueues nothing.
* ``PostToolUse`` / ``PostToolUseFailure`` take the marker and enqueue one
  ``tool_event`` with duration and success.
* A PreToolUse whose PostToolUse never came (denied, interrupted, failed) is
  swept when the session stops or ends: a ``tool_event`` with success false.
* Every other event (prompts, stops, subagent stops, session start/end,
  compaction, notifications, and events this code does not know yet) becomes
  an ``activity_event`` with its ``session_id`` and its fields as ``data``.

Markers are best-effort timing aids, not acknowledged data, so they are not
fsynced: a crash costs a duration, never an event.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from ..fsutil import NOFOLLOW, ensure_private_dir, read_file

__all__ = ["operations_for", "ACTIVITY_TYPES", "ORPHAN_REASON"]

Op = tuple[str, dict[str, Any], "str | None"]

ACTIVITY_TYPES = {
    "UserPromptSubmit": "prompt",
    "Stop": "stop",
    "SubagentStop": "subagent_stop",
    "SessionStart": "session_start",
    "SessionEnd": "session_end",
    "Notification": "notification",
    "PreCompact": "pre_compact",
}
ORPHAN_REASON = "no PostToolUse received: the call was denied, interrupted or failed"
_TEXT = 4000  # characters kept of any one string field
_NESTED = 2000  # characters kept of any nested value, as JSON
_DATA_MAX = 60_000  # activity_events.data stays under the 64 KiB text limit
_STALE_S = 24 * 3600  # markers older than this are swept whatever their session
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def operations_for(payload: Any, state_dir: str, now: float | None = None) -> list[Op]:
    """The operations one hook payload carries (may be none)."""
    if not isinstance(payload, dict):
        raise ValueError(f"hook payload must be a JSON object, not {type(payload).__name__}")
    now = time.time() if now is None else now
    event = payload.get("hook_event_name")
    session = _str(payload.get("session_id"))
    inflight = os.path.join(state_dir, "inflight")
    if event == "PreToolUse":
        _mark(inflight, payload, session, now)
        return []
    if event in ("PostToolUse", "PostToolUseFailure"):
        return [("tool_event", _tool_event(inflight, payload, session, now), None)]
    ops: list[Op] = [("activity_event", _activity(event, payload, session, now), None)]
    if event in ("Stop", "SessionEnd"):
        ops += _sweep(inflight, session, now, grace=1.0 if event == "Stop" else 0.0)
    return ops


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _marker_path(inflight: str, tool_use_id: str) -> str:
    return os.path.join(inflight, _SAFE.sub("_", tool_use_id)[:128])


def _mark(inflight: str, payload: dict[str, Any], session: str | None, now: float) -> None:
    tool_use_id = _str(payload.get("tool_use_id"))
    if tool_use_id is None:
        return
    ensure_private_dir(inflight)
    marker = {"t": now, "session_id": session, "tool_name": _str(payload.get("tool_name")), "context": _context(payload)}
    fd = os.open(_marker_path(inflight, tool_use_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o600)
    try:
        os.write(fd, json.dumps(marker).encode())
    finally:
        os.close(fd)


def _take_marker(inflight: str, tool_use_id: str | None) -> dict[str, Any] | None:
    if tool_use_id is None:
        return None
    path = _marker_path(inflight, tool_use_id)
    try:
        data = json.loads(read_file(path))
        os.unlink(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tool_event(inflight: str, payload: dict[str, Any], session: str | None, now: float) -> dict[str, Any]:
    tool_use_id = _str(payload.get("tool_use_id"))
    marker = _take_marker(inflight, tool_use_id)
    success, error = _outcome(payload)
    started = marker.get("t") if marker else None
    duration = int(max(0.0, now - started) * 1000) if isinstance(started, (int, float)) else None
    return _clean(
        {
            "timestamp": int(now),
            "tool_name": _str(payload.get("tool_name")) or (marker or {}).get("tool_name") or "unknown",
            "success": success,
            "duration_ms": duration,
            "error_message": error,
            "context": _context(payload),
            "session_id": session,
            "tool_use_id": tool_use_id,
        }
    )


def _outcome(payload: dict[str, Any]) -> tuple[bool, str | None]:
    if payload.get("hook_event_name") == "PostToolUseFailure":
        return False, _cut(_str(payload.get("error")) or "tool call failed")
    resp = payload.get("tool_response")
    if isinstance(resp, dict):
        if resp.get("interrupted") is True:
            return False, "interrupted"
        if resp.get("is_error") is True or resp.get("success") is False:
            return False, _cut(_str(resp.get("error")) or _str(resp.get("stderr")) or "tool reported an error")
        if _str(resp.get("error")):
            return False, _cut(resp["error"])
    return True, None


def _activity(event: Any, payload: dict[str, Any], session: str | None, now: float) -> dict[str, Any]:
    name = event if isinstance(event, str) and event else "unknown"
    kind = ACTIVITY_TYPES.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()[:200]
    data = {k: _shrink(v) for k, v in payload.items() if k not in ("session_id", "hook_event_name")}
    if len(json.dumps(data, ensure_ascii=False, default=str)) > _DATA_MAX:
        data = {"truncated": True, "fields": sorted(data)[:100]}
    return _clean({"timestamp": int(now), "event_type": kind, "data": data, "session_id": session})


def _context(payload: dict[str, Any]) -> dict[str, Any]:
    ctx: dict[str, Any] = {k: _shrink(payload[k]) for k in ("tool_input", "cwd", "agent_id", "agent_type", "permission_mode") if k in payload}
    return ctx


def _sweep(inflight: str, session: str | None, now: float, grace: float) -> list[Op]:
    try:
        names = os.listdir(inflight)
    except FileNotFoundError:
        return []
    ops: list[Op] = []
    for name in names:
        path = os.path.join(inflight, name)
        try:
            marker = json.loads(read_file(path))
        except (OSError, ValueError):
            continue
        started = marker.get("t") if isinstance(marker, dict) else None
        if not isinstance(started, (int, float)):
            os.unlink(path)
            continue
        mine = marker.get("session_id") == session and now - started >= grace
        if not (mine or now - started > _STALE_S):
            continue
        try:
            os.unlink(path)  # whoever unlinks first reports it
        except FileNotFoundError:
            continue
        ops.append(
            (
                "tool_event",
                _clean(
                    {
                        "timestamp": int(started),
                        "tool_name": marker.get("tool_name") or "unknown",
                        "success": False,
                        "error_message": ORPHAN_REASON,
                        "context": marker.get("context"),
                        "session_id": marker.get("session_id"),
                        "tool_use_id": name,
                    }
                ),
                None,
            )
        )
    return ops


def _cut(text: str, limit: int = _TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shrink(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return value if len(text) <= _NESTED else _cut(text, _NESTED)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN or infinity
    return value


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
