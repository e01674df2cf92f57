"""The platform's summary tables, kept current in the same transaction as the events they summarise.

The command center's dashboards read ``sessions`` (one row per session),
``tool_usage``, ``daily_stats`` and ``hourly_activity``. After each batch the
consumer recomputes, from the event tables, the rows of the sessions, tools,
days and hours the batch touched, so a dashboard is right the moment a row
is visible. Recomputing (not incrementing) makes a replay harmless.

Rows the platform's own tools wrote are never rewritten downwards:
``tool_usage`` is recomputed exactly as the platform's backfill does (from
all of ``tool_events``, theirs included); in ``sessions`` rows codi-queue
did not create (``cq_owned_sessions`` lists those it did), only empty
values are filled and counts only grow; ``daily_stats`` and
``hourly_activity`` counts only grow.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import Any

import apsw

__all__ = ["Touched", "refresh"]

_FAMILIES = ("opus", "sonnet", "haiku")


@dataclass
class Touched:
    sessions: set[str] = field(default_factory=set)
    tools: set[str] = field(default_factory=set)
    days: set[str] = field(default_factory=set)  # UTC dates, YYYY-MM-DD

    def add(self, body: Any) -> None:
        session = getattr(body, "session_id", None)
        if session:
            self.sessions.add(session)
        tool = getattr(body, "tool_name", None)
        if tool and type(body).__name__ == "ToolEvent":
            self.tools.add(tool)
        ts = getattr(body, "timestamp", None)
        if isinstance(ts, int):
            self.days.add(time.strftime("%Y-%m-%d", time.gmtime(ts)))


def _tables(conn: apsw.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def refresh(conn: apsw.Connection, touched: Touched) -> None:
    """Bring the summary rows of what ``touched`` names up to date (inside the caller's transaction)."""
    tables = _tables(conn)
    if "tool_usage" in tables and "tool_events" in tables:
        for tool in touched.tools:
            _tool_usage(conn, tool)
    if {"sessions", "cq_owned_sessions"} <= tables:
        for session in touched.sessions:
            _session(conn, session, tables)
    if "token_economics" in tables:
        for day in touched.days:
            if "daily_stats" in tables:
                _daily(conn, day)
            if "hourly_activity" in tables:
                _hourly(conn, day)


def _tool_usage(conn: apsw.Connection, tool: str) -> None:
    # Exactly the platform's own backfill (update_aggregated_tables), for one tool.
    conn.execute(
        "INSERT OR REPLACE INTO tool_usage (tool_name, total_calls, success_count, failure_count, last_used, "
        "avg_duration_ms) SELECT tool_name, COUNT(*), SUM(CASE WHEN success = 1 THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN success = 0 THEN 1 ELSE 0 END), MAX(datetime(timestamp, 'unixepoch')), AVG(duration_ms) "
        "FROM tool_events WHERE tool_name = ? GROUP BY tool_name",
        (tool,),
    )


def _iso(ts: Any) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts)))


def _scalar(conn: apsw.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else row[0]


def _session(conn: apsw.Connection, sid: str, tables: set[str]) -> None:
    starts = [_scalar(conn, f"SELECT MIN(timestamp) FROM {t} WHERE session_id = ?", (sid,))
              for t in ("activity_events", "tool_events", "messages", "token_economics") if t in tables]
    start = min((s for s in starts if s is not None), default=None)
    if start is None:
        return  # nothing of ours names it yet
    first = conn.execute(
        "SELECT json_extract(data, '$.cwd'), json_extract(data, '$.model'), json_extract(data, '$.transcript_path') "
        "FROM activity_events WHERE session_id = ? AND event_type = 'session_start' AND json_valid(data) "
        "ORDER BY timestamp LIMIT 1", (sid,)).fetchone() or (None, None, None)
    model = _scalar(conn, "SELECT model FROM token_economics WHERE session_id = ? AND model IS NOT NULL "
                          "GROUP BY model ORDER BY COUNT(*) DESC LIMIT 1", (sid,)) or first[1] or "unknown"
    tokens: Any = conn.execute(
        "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
        "COALESCE(SUM(cache_read_input_tokens), 0), COALESCE(SUM(cache_creation_input_tokens), 0), SUM(cost_usd) "
        "FROM token_economics WHERE session_id = ?", (sid,)).fetchone()
    outcome = _latest_outcome(conn, sid)
    row = {
        "project_path": first[0],
        "started_at": _iso(start),
        "ended_at": _iso(_scalar(conn, "SELECT MAX(timestamp) FROM activity_events WHERE session_id = ? "
                                       "AND event_type = 'session_end'", (sid,))),
        "model": model,
        "message_count": _scalar(conn, "SELECT COUNT(*) FROM messages WHERE session_id = ?", (sid,)) or 0,
        "tool_count": _scalar(conn, "SELECT COUNT(*) FROM tool_events WHERE session_id = ?", (sid,)) or 0,
        "input_tokens": tokens[0], "output_tokens": tokens[1],
        "cache_read_tokens": tokens[2], "cache_write_tokens": tokens[3],
        "outcome": outcome.get("outcome"),
        "quality_score": outcome.get("quality_score", outcome.get("quality")),
        "complexity": outcome.get("complexity"),
        "cost_estimate": tokens[4] if tokens[4] is not None else outcome.get("cost", outcome.get("cost_usd")),
        "transcript_path": first[2],
    }
    have = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    cols = [c for c in row if c in have]
    owned = conn.execute("SELECT 1 FROM cq_owned_sessions WHERE id = ?", (sid,)).fetchone() is not None
    exists = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is not None
    values = [row[c] for c in cols]
    if not exists:
        names = ", ".join(["id", *cols])
        conn.execute(f"INSERT INTO sessions ({names}) VALUES ({', '.join('?' * (len(cols) + 1))})", (sid, *values))
        conn.execute("INSERT OR IGNORE INTO cq_owned_sessions (id) VALUES (?)", (sid,))
        return
    if owned:
        sets = ", ".join(f"{c} = ?" for c in cols)
    else:  # the platform's own row: fill what is empty, let counts only grow
        sets = ", ".join(f"{c} = MAX(COALESCE({c}, 0), ?)" if c.endswith(("_count", "_tokens")) else
                         f"{c} = COALESCE(NULLIF({c}, ''), ?)" for c in cols)
    conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*values, sid))


def _latest_outcome(conn: apsw.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM session_outcome_events WHERE session_id = ? ORDER BY id DESC LIMIT 1", (sid,))
    row = cur.fetchone()
    if row is None:
        return {}
    names = [d[0] for d in cur.getdescription()]
    return {n: v for n, v in zip(names, row) if v is not None}


def _daily(conn: apsw.Connection, day: str) -> None:
    lo = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    hi = lo + 86400
    values: dict[str, Any] = {}
    for family in _FAMILIES:
        r: Any = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            "COALESCE(SUM(cache_read_input_tokens), 0) FROM token_economics "
            "WHERE timestamp >= ? AND timestamp < ? AND model LIKE ?", (lo, hi, f"%{family}%")).fetchone()
        values.update({f"{family}_messages": r[0], f"{family}_tokens_in": r[1], f"{family}_tokens_out": r[2],
                       f"{family}_cache_read": r[3]})
    values["session_count"] = _scalar(conn, "SELECT COUNT(DISTINCT session_id) FROM token_economics "
                                            "WHERE timestamp >= ? AND timestamp < ?", (lo, hi)) or 0
    values["tool_calls"] = _scalar(conn, "SELECT COUNT(*) FROM tool_events WHERE timestamp >= ? AND timestamp < ?",
                                   (lo, hi)) or 0
    values["cost_estimate"] = _scalar(conn, "SELECT COALESCE(SUM(cost_usd), 0) FROM token_economics "
                                            "WHERE timestamp >= ? AND timestamp < ?", (lo, hi)) or 0
    cols = list(values)
    conn.execute(
        f"INSERT INTO daily_stats (date, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "
        f"ON CONFLICT(date) DO UPDATE SET {', '.join(f'{c} = MAX(COALESCE({c}, 0), excluded.{c})' for c in cols)}, "
        "updated_at = CURRENT_TIMESTAMP",
        (day, *values.values()),
    )


def _hourly(conn: apsw.Connection, day: str) -> None:
    lo = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    rows: Any = conn.execute(
        "SELECT (timestamp - ?) / 3600, COUNT(DISTINCT session_id), COUNT(*) FROM token_economics "
        "WHERE timestamp >= ? AND timestamp < ? GROUP BY 1", (lo, lo, lo + 86400)).fetchall()
    for hour, sessions, messages in rows:
        conn.execute(
            "INSERT INTO hourly_activity (date, hour, session_count, message_count) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(date, hour) DO UPDATE SET session_count = MAX(COALESCE(session_count, 0), excluded.session_count), "
            "message_count = MAX(COALESCE(message_count, 0), excluded.message_count)",
            (day, int(hour), sessions, messages),
        )
