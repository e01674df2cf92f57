"""The legacy JSONL formats: which file feeds which operation, and each field's aliases.

Writers were inconsistent, so each field may arrive under several names; the
first present wins. Every column is also its own alias. Legacy values are
converted leniently (``"12"`` → 12, ``1`` → true) but still validated by the
operation's Struct. This table is the only place the aliases live: the import
command and the tailer read it.
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
        F("quality"),
        F("model", "model", "models_used", convert="join"),
        F("messages_count", "messages", "messages_count", convert="count"),
        F("timestamp", "timestamp", "ts", "date"),
    ),
    "self_heal": (
        F("timestamp", "timestamp", "ts"),
        F("error_pattern", "pattern", "error_pattern", default="unknown"),
        F("fix_applied", "fix", "fix_applied"),
        F("success", "success", "fixed"),
        F("execution_time_ms", "duration", "execution_time_ms"),
        F("error_message", "error", "error_message"),
        F("severity", default="medium"),
    ),
    "recovery": (
        F("timestamp", "timestamp", "ts"),
        F("error_type", "error_type", "type", default="unknown"),
        F("recovery_strategy", "strategy", "recovery_strategy"),
        F("success", "success", "recovered"),
        F("attempts", default=1),
        F("time_to_recover_ms", "recovery_time", "time_to_recover_ms"),
        F("error_details", "details", "error_details"),
        F("recovery_method", "method", "recovery_method", default="auto"),
    ),
    "git_event": (
        F("timestamp", "timestamp", "ts"),
        F("event_type", "type", "event_type", default="commit"),
        F("repo", "repo", "repository"),
        F("branch"),
        F("commit_hash", "commit", "hash", "commit_hash"),
        F("message", "message", "commit_message", "msg"),
        F("files_changed", "files", "files_changed", convert="count"),
        F("additions", "additions", "insertions"),
        F("deletions"),
        F("author", "author", "user"),
    ),
    "tool_event": (
        F("timestamp", "timestamp", "ts"),
        F("tool_name", "tool_name", "tool"),
        F("success"),
        F("duration_ms"),
        F("error_message", "error", "error_message"),
    ),
}

LEGACY_FILES: dict[str, str] = {
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
    """A body in column names from one legacy line.

    Aliased fields come first; any other column of the operation present under
    its own name is kept; everything else on the line is not a column and is
    left out. An operation with no alias table keeps just its columns.
    """
    fields = LEGACY_FIELDS.get(op, ())
    body: dict[str, Any] = {c: obj[c] for c in columns if c in obj and obj[c] is not None}
    for f in fields:
        value: Any = _NO_DEFAULT
        for alias in f.aliases:
            if alias in obj and obj[alias] is not None:
                value = obj[alias]
                break
        if value is _NO_DEFAULT:
            value = f.default
        if value is _NO_DEFAULT:
            continue
        if f.convert == "count" and isinstance(value, (list, tuple)):
            value = len(value)
        elif f.convert == "join" and isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        body[f.name] = value
    return body
