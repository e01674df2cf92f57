"""Claude Code hook payloads → operations. Standard library only: this runs on every tool call.

* ``PreToolUse`` and ``PostToolUse`` / ``PostToolUseFailure`` each leave a
  marker in ``state/inflight/`` (``<tool_use_id>`` and ``<tool_use_id>+post``);
  whichever of the two finds the other's marker enqueues the one
  ``tool_event`` (duration from the pair, success from the Post). Hooks run
  asynchronously (``"async": true``), so a Post may be handled before, or at
  the same moment as, its Pre: each writes its marker before looking for the
  other's, so at least one of them sees both, and removing the ``+post``
  marker is the claim, so exactly one of them reports.
* A PreToolUse whose PostToolUse never came (denied, interrupted, failed) is
  swept when the session stops or ends: a ``tool_event`` with success false.
  A Post whose Pre never came is reported by the same sweeps, without a
  duration, once it is older than the grace.
* Every other event (prompts, stops, subagent stops, session start/end,
  compaction, notifications, and events this code does not know yet) becomes
  an ``activity_event`` with its ``session_id`` and its fields as ``data``.

Markers are best-effort timing aids, not acknowledged data, so they are not
fsynced: a crash costs a duration, never an event.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from typing import Any

from .. import jsontext
from ..errors import CodiQueueError
from ..fsutil import NOFOLLOW, ensure_private_dir, read_file, refuse_links_below
from ..timestamps import is_seconds
from .records import Op
from .records import fit_name as _name

__all__ = ["operations_for", "ACTIVITY_TYPES", "ORPHAN_REASON"]


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
_STOP_GRACE_S = 10.0  # a Pre younger than this at Stop may still get its Post
_POST_STALE_S = 60.0  # a Post waiting this long for its Pre is reported by any session's sweep
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_POST = "+post"  # "+" never occurs in a marker's name (_marker_path), so these two are ours
_TMP = "+tmp."


def operations_for(payload: Any, state_dir: str, now: float | None = None,
                   problems: list[str] | None = None) -> list[Op]:
    """The operations one hook payload carries (may be none).

    The markers pairing a Pre with its Post are a timing aid: when they cannot
    be kept (a full disk, ``state/inflight`` a link) a Post is still recorded,
    unpaired, and why goes to ``problems`` (raised when None)."""
    if not isinstance(payload, dict):
        raise ValueError(f"hook payload must be a JSON object, not {type(payload).__name__}")
    now = time.time() if now is None else now
    event = payload.get("hook_event_name")
    session = _name(payload.get("session_id"))
    inflight = os.path.join(state_dir, "inflight")
    if event == "PreToolUse":
        return _unless_unpairable(problems, inflight, [], _pre, inflight, payload, session, now)
    if event in ("PostToolUse", "PostToolUseFailure"):
        return _post(inflight, payload, session, now, problems)
    ops: list[Op] = [("activity_event", _activity(event, payload, session, now), None)]
    if event in ("Stop", "SessionEnd"):
        # Hooks run asynchronously: a Stop may be handled before the Post of the turn's
        # last call, so a Pre is an orphan only once it is older than the grace.
        grace = _STOP_GRACE_S if event == "Stop" else 0.0
        ops += _unless_unpairable(problems, inflight, [], _sweep, inflight, session, now, grace)
    return ops


def _unless_unpairable(problems: list[str] | None, inflight: str, instead: list[Op], step: Any, *args: Any) -> list[Op]:
    """``step(*args)``, or ``instead`` when the markers cannot be kept (the reason noted in ``problems``)."""
    try:
        return step(*args)  # type: ignore[no-any-return]
    except (OSError, CodiQueueError) as exc:
        if problems is None:
            raise
        problems.append(f"in-flight markers in {inflight} not kept ({exc}): tool calls recorded without durations")
        return instead


def _markers(inflight: str) -> None:
    """The markers' directory, made if missing; never entered through a link (a sweep deletes
    what it cannot read there: through a link, that would be someone else's files)."""
    ensure_private_dir(inflight, under=os.path.dirname(inflight))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _marker_path(inflight: str, tool_use_id: str) -> str:
    """The marker's file: the id itself when it is a plain, short file name (Claude Code's
    ``toolu_…`` always is); any other id (``..``, a slash, 300 characters) by its digest, so
    it names a file in ``inflight`` and no two ids share one."""
    name = "".join(c if c in _SAFE else "_" for c in tool_use_id)
    if name != tool_use_id or len(name) > 128 or name.strip(".") == "":
        import hashlib

        digest = hashlib.sha256(tool_use_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        name = f"{name[:64].strip('.')}~{digest}"
    return os.path.join(inflight, name)


def _write_marker(path: str, data: dict[str, Any]) -> None:
    """Whole or not at all (a reader never sees half a marker); not fsynced: a timing aid."""
    tmp = os.path.join(os.path.dirname(path), f"{_TMP}{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    try:
        try:
            os.write(fd, jsontext.dumps(data).encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written temporary left for ever
        _unlink(tmp)
        raise


def _read_marker(path: str) -> dict[str, Any] | None:
    try:
        data = jsontext.loads(read_file(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _claim(post_path: str) -> bool:
    """Removing the Post marker is the claim: of a Pre and a Post that both saw the pair, one wins."""
    try:
        os.unlink(post_path)
    except FileNotFoundError:
        return False
    return True


def _pre(inflight: str, payload: dict[str, Any], session: str | None, now: float) -> list[Op]:
    tool_use_id = _str(payload.get("tool_use_id"))
    if tool_use_id is None:
        return []
    _markers(inflight)
    pre_path = _marker_path(inflight, tool_use_id)
    pre = {"t": now, "session_id": session, "tool_name": _name(payload.get("tool_name")), "context": _context(payload),
           "tool_use_id": _name(tool_use_id)}
    _write_marker(pre_path, pre)
    post_path = pre_path + _POST
    post = _read_marker(post_path)
    if post is None or not _claim(post_path):
        return []  # the Post has not come yet (it will find this marker), or it claimed the pair
    _unlink(pre_path)
    return [("tool_event", _paired(post, pre), None)]


def _post(inflight: str, payload: dict[str, Any], session: str | None, now: float,
          problems: list[str] | None = None) -> list[Op]:
    tool_use_id = _str(payload.get("tool_use_id"))
    success, error = _outcome(payload)
    body = _clean({
        "timestamp": int(now),
        "tool_name": _name(payload.get("tool_name")),
        "success": success,
        "error_message": error,
        "context": _context(payload),
        "session_id": session,
        "tool_use_id": _name(tool_use_id),
    })
    alone: list[Op] = [("tool_event", _paired({"t": now, "body": body}, None), None)]
    if tool_use_id is None:
        return alone  # nothing to pair with
    return _unless_unpairable(problems, inflight, alone, _pair_post, inflight, tool_use_id, body, now)


def _pair_post(inflight: str, tool_use_id: str, body: dict[str, Any], now: float) -> list[Op]:
    _markers(inflight)
    pre_path = _marker_path(inflight, tool_use_id)
    post_path = pre_path + _POST
    _write_marker(post_path, {"t": now, "body": body})
    pre = _read_marker(pre_path)
    if pre is None or not _claim(post_path):
        return []  # the Pre has not come yet (it will report), or it claimed the pair
    _unlink(pre_path)
    return [("tool_event", _paired({"t": now, "body": body}, pre), None)]


def _paired(post: dict[str, Any], pre: dict[str, Any] | None) -> dict[str, Any]:
    """The tool_event of a Post marker, timed from its Pre when there was one.

    A Pre handled after its Post (hooks run asynchronously) says nothing about
    how long the call took: no duration rather than a wrong one.
    """
    body = _post_body(post.get("body"))
    pre = pre or {}
    started, ended = _time(pre), _time(post)
    if started is not None and ended is not None and ended >= started:
        body["duration_ms"] = int(round((ended - started) * 1000))
    body["tool_name"] = body.get("tool_name") or _name(pre.get("tool_name")) or "unknown"
    return body


# A marker is a file under the home, read back: what it holds is held again to the rules the
# payload's values were (damage or another program may have changed it), so that it costs at
# most a duration, never the event or the hook's other events (an infinite time had raised
# OverflowError and lost a SessionEnd; a list as the tool's name made a dead letter).
def _time(marker: dict[str, Any]) -> float | None:
    value = marker.get("t")
    if is_seconds(value):
        return float(value)
    return None  # absent, not a number, NaN, infinite or out of range: no time


def _post_body(body: Any) -> dict[str, Any]:
    """The tool_event a Post marker carries, as ``_post`` built it."""
    if not isinstance(body, dict):
        return {"success": True}
    ts = body.get("timestamp")
    error = _str(body.get("error_message"))
    return _clean({
        "timestamp": ts if type(ts) is int and is_seconds(ts) else None,
        "tool_name": _name(body.get("tool_name")),
        "success": body.get("success") is not False,
        "error_message": _cut(error) if error else None,
        "context": _context(body["context"]) if isinstance(body.get("context"), dict) else None,
        "session_id": _name(body.get("session_id")),
        "tool_use_id": _name(body.get("tool_use_id")),
    })


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # a sweep took it: nothing left to do


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


def _snake(name: str) -> str:
    """CamelCase as snake_case: ``_`` before every ASCII capital but a first one (PreCompact → pre_compact)."""
    return "".join("_" + c if i and "A" <= c <= "Z" else c for i, c in enumerate(name)).lower()


def _activity(event: Any, payload: dict[str, Any], session: str | None, now: float) -> dict[str, Any]:
    name = event if isinstance(event, str) and event else "unknown"
    kind = ACTIVITY_TYPES.get(name) or _name(_snake(name)) or "unknown"
    data = {k: _shrink(v) for k, v in payload.items() if k not in ("session_id", "hook_event_name")}
    if len(jsontext.dumps(data, ensure_ascii=False, default=str)) > _DATA_MAX:
        data = {"truncated": True, "fields": sorted(data)[:100]}
    return _clean({"timestamp": int(now), "event_type": kind, "data": data, "session_id": session})


def _context(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's fields a tool_event keeps as its context (from a marker too: the same keys, cut alike)."""
    ctx: dict[str, Any] = {k: _shrink(payload[k]) for k in ("tool_input", "cwd", "agent_id", "agent_type", "permission_mode") if k in payload}
    return ctx


def _sweep(inflight: str, session: str | None, now: float, grace: float) -> list[Op]:
    """Report this session's markers older than ``grace`` (and anyone's that waited too long)."""
    refuse_links_below(os.path.dirname(inflight), inflight)
    try:
        names = os.listdir(inflight)
    except FileNotFoundError:
        return []
    ops: list[Op] = []
    # Posts first: a Post and a Pre both still here (their processes died between
    # writing and looking) make one paired event, not an orphan and a stray.
    for name in sorted(names, key=lambda n: not n.endswith(_POST)):
        path = os.path.join(inflight, name)
        if name.startswith(_TMP):  # a marker being written, or one a killed hook left half-way
            if _age(path, now) > _STALE_S:
                _unlink(path)
            continue
        marker = _read_marker(path)
        if marker is None:
            _unlink(path)  # unreadable: nothing to report
            continue
        started = _time(marker)
        if started is None:  # a damaged time: the file's own
            started = now - _age(path, now)
        age = now - started
        if name.endswith(_POST):
            body = marker.get("body")
            mine = isinstance(body, dict) and body.get("session_id") == session and age >= grace
            if (mine or age > _POST_STALE_S) and _claim(path):
                pre_path = path[: -len(_POST)]
                ops.append(("tool_event", _paired(marker, _read_marker(pre_path)), None))
                _unlink(pre_path)
            continue
        mine = marker.get("session_id") == session and age >= grace
        # In our own private directory, just listed: no error here can hide a marker, and none may
        # cost the hook its own event (bug 45), so a plain os.path.exists.
        if not (mine or age > _STALE_S) or os.path.exists(path + _POST):
            continue
        try:
            os.unlink(path)  # whoever unlinks first reports it
        except FileNotFoundError:
            continue
        context = marker.get("context")
        ops.append(("tool_event", _clean({
            "timestamp": int(started),
            "tool_name": _name(marker.get("tool_name")) or "unknown",
            "success": False,
            "error_message": ORPHAN_REASON,
            "context": _context(context) if isinstance(context, dict) else None,
            "session_id": _name(marker.get("session_id")),
            "tool_use_id": _name(marker.get("tool_use_id")) or name,
        }), None))
    return ops


def _age(path: str, now: float) -> float:
    try:
        return now - os.lstat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _cut(text: str, limit: int = _TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shrink(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (dict, list)):
        text = jsontext.dumps(value, ensure_ascii=False, default=str)
        return value if len(text) <= _NESTED else _cut(text, _NESTED)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN or infinity
    return value


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
