"""The names an operation's column may have in a table someone else created.

The platform's two schemas disagree on some event columns, and both are in
the wild: the command center's ``config/schema.sql`` (which its dashboards
query) names ``session_outcome_events`` columns ``quality_score``,
``model_used``, ``message_count`` and ``cost``, where the audit's writer
(and our first release) used ``quality``, ``model``, ``messages_count`` and
``cost_usd``. The consumer writes a field into every one of its names the
table has, so each side's readers see every new row; adoption adds a
column only when the table has none of its names. Fresh databases carry
both, so the dashboards work on them too.
"""

from __future__ import annotations

__all__ = ["COLUMN_NAMES", "names_of", "PLATFORM_NAMES"]

# table → our column (the Struct field) → the platform's names for it, in the order they are preferred.
COLUMN_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "session_outcome_events": {
        "quality": ("quality_score",),
        "model": ("model_used",),
        "messages_count": ("message_count",),
        "cost_usd": ("cost",),
    },
}

# The names the platform's dashboards query, which a fresh database gets too.
PLATFORM_NAMES: dict[str, dict[str, str]] = {
    table: {ours: theirs[0] for ours, theirs in fields.items()} for table, fields in COLUMN_NAMES.items()
}


def names_of(table: str, column: str) -> tuple[str, ...]:
    """Every name ``column`` of ``table`` may have: ours first, then the platform's."""
    return (column, *COLUMN_NAMES.get(table, {}).get(column, ()))
