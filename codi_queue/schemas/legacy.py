"""The legacy JSONL formats: which file feeds which operation, and each field's aliases.

Read from the platform's own backfill scripts (meta-vengine
``scripts/backfill-jsonl-to-sqlite.py`` and ``scripts/phase2-backfill.py``)
and writers: a line their backfill would store, we store, with every field
it keeps. Writers were inconsistent, so each field may arrive under several
names; the first present wins, and every column is also its own alias.

Legacy input is kept, not judged: keys that are no column go into the
operation's JSON column (``context`` or ``data``); flags the writers leave
out take the backfill's defaults; values are converted as the backfill
stores them (a truthy count is a true flag, a number in a text column is its
text); words and scales outside our vocabularies are stored as given (the
consumer counts them in ``status``). This table is the only place the
aliases live: the import command and the tailer read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LegacyField", "LEGACY_FIELDS", "LEGACY_FILES", "from_legacy", "op_for_file"]

_NO_DEFAULT = object()


class LegacyField:
    __slots__ = ("name", "aliases", "default", "convert")

    def __init__(self, name: str, *aliases: str, default: Any = _NO_DEFAULT, convert: str | None = None) -> None:
        self.name = name
        self.aliases = aliases or (name,)
        self.default = default
        self.convert = convert  # "count": a list counts its items; "join": a list joins with ", "


F = LegacyField

LEGACY_FIELDS: dict[str, tuple[LegacyField, ...]] = {
    "activity_event": (
        F("timestamp", "timestamp", "ts"),
        F("event_type", "type", "event_type", default="unknown"),
        F("session_id"),
    ),
    "command_event": (
        F("timestamp", "timestamp", "ts"),
        F("command"),
        F("args"),
        F("success", default=True),
        F("execution_time_ms", "execution_time", "execution_time_ms", "duration_ms", "duration"),
    ),
    "routing_event": (
        F("timestamp", "timestamp", "ts"),
        F("query_hash"),
        F("complexity"),
        F("dq_score", "dq_score", "dq"),
        F("chosen_model", "model", "chosen_model"),
        F("reasoning", convert="join"),
        F("feedback"),
    ),
    "expertise_routing_event": (
        F("timestamp", "timestamp", "ts"),
        F("domain", "detected_domain", "domain", default="unknown"),
        F("expertise_level", "expertise_confidence", "expertise_level"),
        F("query_complexity", "base_complexity", "query_complexity", "complexity"),
        F("chosen_model", "final_model", "chosen_model", "model"),
        F("reasoning", convert="join"),
        F("query_hash"),
    ),
    "coordinator_event": (
        F("timestamp", "timestamp", "ts"),
        F("agent_id", "agent_id", "agent"),
        F("action", "action", "event", "type"),
        F("duration_ms", "duration_ms", "duration"),
    ),
    "routing_metric": (
        F("timestamp", "timestamp", "ts"),
        F("query_id", "query_id", "id"),
        F("predicted_model", "predicted_model", "predicted"),
        F("actual_model", "actual_model", "actual"),
        F("dq_score", "dq_score", "dq"),
        F("complexity"),
        F("accuracy", "correct", "accuracy", default=True),
        F("cost_saved", "cost_saved", "savings"),
        F("reasoning"),
        F("query_text", "query", "query_text"),
    ),
    "session_outcome": (
        F("session_id"),
        F("intent"),
        F("outcome"),
        F("quality", "quality_score", "quality"),
        F("complexity"),
        F("model", "model", "model_used", "models_used", convert="join"),
        F("messages_count", "message_count", "messages", "messages_count", convert="count"),
        F("cost_usd", "cost", "cost_usd"),
        F("timestamp", "timestamp", "ts", "date"),
    ),
    "self_heal": (
        F("timestamp", "timestamp", "ts"),
        F("error_pattern", "pattern", "error_pattern", default="unknown"),
        F("fix_applied", "fix", "fix_applied"),
        F("success", "success", "fixed", default=False),
        F("execution_time_ms", "duration", "execution_time_ms"),
        F("error_message", "error", "error_message"),
        F("severity", default="medium"),
    ),
    "recovery": (
        F("timestamp", "timestamp", "ts"),
        F("error_type", "error_type", "type", default="unknown"),
        F("recovery_strategy", "strategy", "recovery_strategy"),
        F("success", "success", "recovered", default=False),
        F("attempts", default=1),
        F("time_to_recover_ms", "recovery_time", "time_to_recover_ms"),
        F("error_details", "details", "error_details"),
        F("recovery_method", "method", "recovery_method", default="auto"),
    ),
    "git_event": (
        F("timestamp", "timestamp", "ts"),
        F("event_type", "type", "event_type", "event", default="commit"),
        F("repo", "repo", "repository", "pwd"),
        F("branch"),
        F("commit_hash", "commit", "hash", "commit_hash"),
        F("message", "message", "commit_message", "commit_msg", "msg", "pr_title"),
        F("files_changed", "files", "files_changed", convert="count"),
        F("additions", "additions", "insertions"),
        F("deletions"),
        F("author", "author", "user"),
    ),
    "tool_event": (
        F("timestamp", "timestamp", "ts"),
        F("tool_name", "tool", "tool_name", default="unknown"),
        F("success", default=True),
        F("duration_ms", "duration", "duration_ms"),
        F("error_message", "error", "error_message"),
    ),
}

LEGACY_FILES: dict[str, str] = {
    "activity-events.jsonl": "activity_event",
    "command-usage.jsonl": "command_event",
    "routing-feedback.jsonl": "routing_event",
    "coordination-log.jsonl": "coordinator_event",
    "expertise-routing.jsonl": "expertise_routing_event",
    "routing-metrics.jsonl": "routing_metric",
    "session-outcomes.jsonl": "session_outcome",
    "self-heal-outcomes.jsonl": "self_heal",
    "recovery-outcomes.jsonl": "recovery",
    "git-activity.jsonl": "git_event",
    "tool-usage.jsonl": "tool_event",
}


def op_for_file(path: str) -> str | None:
    import os

    return LEGACY_FILES.get(os.path.basename(path))


def from_legacy(op: str, obj: Mapping[str, Any], columns: tuple[str, ...] = ()) -> dict[str, Any]:
    """A body in column names from one legacy line: every field the platform's backfill keeps.

    Aliased fields come first; any other column of the operation present under
    its own name is kept; every other key goes into the operation's JSON
    column (``context`` or ``data``), merged with what the line had there.
    """
    fields = LEGACY_FIELDS.get(op, ())
    kinds = _kinds(op)
    body: dict[str, Any] = {c: obj[c] for c in columns if c in obj and obj[c] is not None}
    used = set(body)
    for f in fields:
        value: Any = _NO_DEFAULT
        for alias in f.aliases:
            used.add(alias)
            if alias in obj and obj[alias] is not None:
                value = obj[alias]
                break
        if value is _NO_DEFAULT:
            value = f.default
        if value is _NO_DEFAULT:
            continue
        if f.convert == "count" and isinstance(value, (list, tuple, dict)):
            value = len(value)
        elif f.convert == "join" and isinstance(value, (list, tuple)):
            value = "; ".join(str(v) for v in value) if f.name == "reasoning" else ", ".join(str(v) for v in value)
        body[f.name] = value
    for name, value in list(body.items()):
        body[name] = _as_stored(kinds.get(name), value)
    spill = _json_column(op)
    if spill is not None:
        extras = {k: v for k, v in obj.items() if k not in used and k not in body}
        if extras:
            kept = body.get(spill)
            if isinstance(kept, str):
                kept = {spill: kept}
            body[spill] = {**extras, **(kept if isinstance(kept, dict) else {} if kept is None else {spill: kept})}
    return body


def _as_stored(kind: str | None, value: Any) -> Any:
    """A legacy value as the platform's backfill stores it in a column of this kind."""
    if kind == "bool" and not isinstance(value, bool):
        return bool(value)  # ``fixed: 3`` (a count) is a fix that happened
    if kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # ``error: 2`` (a count) in a text column is its text
    if kind == "str" and isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # ``models_used: {...}``
    return value


_kind_cache: dict[str, dict[str, str]] = {}


def _kinds(op: str) -> dict[str, str]:
    """Field → "bool", "str" or "other", from the operation's Struct (JSON columns are "json")."""
    found = _kind_cache.get(op)
    if found is None:
        import msgspec

        from .registry import OPS

        spec = OPS.get(op)
        found = {}
        if spec is not None:
            json_fields = set(getattr(spec.type, "__json_fields__", ()))
            info: Any = msgspec.inspect.type_info(spec.type)
            for field in info.fields:
                text = repr(field.type)
                found[field.name] = ("json" if field.name in json_fields else
                                     "bool" if "BoolType" in text else
                                     "str" if text.startswith(("StrType", "UnionType(types=(StrType",
                                                               "Metadata(type=StrType",
                                                               "UnionType(types=(Metadata(type=StrType")) else "other")
        _kind_cache[op] = found
    return found


def _json_column(op: str) -> str | None:
    from .registry import OPS

    spec = OPS.get(op)
    fields = tuple(getattr(spec.type, "__json_fields__", ())) if spec is not None else ()
    return "context" if "context" in fields else (fields[0] if fields else None)
