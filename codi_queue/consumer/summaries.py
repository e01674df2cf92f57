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
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import apsw

from .db import scalar

__all__ = ["Touched", "refresh", "Summaries"]

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


# A session's first start and last end: each batch asks for every session it touches, so both
# must find their row through the partial indexes (sessions migration 4), not scan the session.
FIRST_START = (
    "SELECT json_extract(data, '$.cwd'), json_extract(data, '$.model'), json_extract(data, '$.transcript_path') "
    "FROM activity_events WHERE session_id = ? AND event_type = 'session_start' AND json_valid(data) "
    "ORDER BY timestamp LIMIT 1")
LAST_END = "SELECT MAX(timestamp) FROM activity_events WHERE session_id = ? AND event_type = 'session_end'"


# A session's token totals (SUM(cost_usd) stays NULL when no row has a cost, as the platform
# reads it) and how many of its rows name each model, from every token_economics row it has.
SESSION_TOKENS = (
    "SELECT COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cache_read_input_tokens), 0), "
    "COALESCE(SUM(cache_creation_input_tokens), 0), SUM(cost_usd), COUNT(cost_usd) FROM token_economics WHERE session_id = ?")
_SESSION_MODELS = "FROM token_economics WHERE session_id = ? AND model IS NOT NULL GROUP BY model"
# The most used model; a tie goes to the first name in SQLite's order, the same on both paths.
TOP_MODEL = f"SELECT model {_SESSION_MODELS} ORDER BY COUNT(*) DESC, model LIMIT 1"
_KEPT_TOP_MODEL = "SELECT model FROM cq_session_models WHERE session_id = ? AND n > 0 ORDER BY n DESC, model LIMIT 1"

# (input, output, cache read, cache write, cost or None, most used model or None)
TokenTotals = tuple[Any, Any, Any, Any, Any, Any]


def _token_totals(conn: apsw.Connection, sid: Any) -> TokenTotals:
    """From the session's token_economics rows: O(its rows)."""
    t: Any = conn.execute(SESSION_TOKENS, (sid,)).fetchone()
    return (*t[:5], scalar(conn, TOP_MODEL, (sid,)))


def _session(conn: apsw.Connection, sid: str, tables: set[str], counts: list[int] | None = None,
             kept_totals: Callable[[str], TokenTotals | None] | None = None, have: set[str] | None = None) -> None:
    """The platform's row for one session; ``counts`` (tools, messages added by this batch) spares the
    count queries when the batch wrote every row it carried (None: count from the tables), and
    ``kept_totals`` the token sums over all of the session's responses, for a row of ours. ``have``:
    the sessions table's columns, when the caller has them."""
    starts = [scalar(conn, f"SELECT MIN(timestamp) FROM {t} WHERE session_id = ?", (sid,))
              for t in ("activity_events", "tool_events", "messages", "token_economics") if t in tables]
    start = min((s for s in starts if s is not None), default=None)
    if start is None:
        return  # nothing of ours names it yet
    first = conn.execute(FIRST_START, (sid,)).fetchone() or (None, None, None)
    owned = conn.execute("SELECT 1 FROM cq_owned_sessions WHERE id = ?", (sid,)).fetchone() is not None
    fast = owned and counts is not None
    tokens = (kept_totals(sid) if fast and kept_totals is not None else None) or _token_totals(conn, sid)
    model = tokens[5] or first[1] or "unknown"
    outcome = _latest_outcome(conn, sid)
    row = {
        "project_path": first[0],
        "started_at": _iso(start),
        "ended_at": _iso(scalar(conn, LAST_END, (sid,))),
        "model": model,
        "message_count": None,
        "tool_count": None,
        "input_tokens": tokens[0], "output_tokens": tokens[1],
        "cache_read_tokens": tokens[2], "cache_write_tokens": tokens[3],
        "outcome": outcome.get("outcome"),
        "quality_score": outcome.get("quality_score", outcome.get("quality")),
        "complexity": outcome.get("complexity"),
        "cost_estimate": tokens[4] if tokens[4] is not None else outcome.get("cost", outcome.get("cost_usd")),
        "transcript_path": first[2],
    }
    if have is None:
        have = _columns(conn, "sessions")
    current: Any = conn.execute("SELECT tool_count, message_count FROM sessions WHERE id = ?", (sid,)).fetchone() \
        if fast else None
    exists = current is not None or conn.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is not None
    if current is not None and counts is not None:  # our row: add what this batch wrote
        row["tool_count"] = (current[0] or 0) + counts[0]
        row["message_count"] = (current[1] or 0) + counts[1]
    else:
        row["tool_count"] = scalar(conn, "SELECT COUNT(*) FROM tool_events WHERE session_id = ?", (sid,)) or 0
        row["message_count"] = scalar(conn, "SELECT COUNT(*) FROM messages WHERE session_id = ?", (sid,)) or 0
    cols = [c for c in row if c in have]
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


def _columns(conn: apsw.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}


def _latest_outcome(conn: apsw.Connection, sid: str) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM session_outcome_events WHERE session_id = ? ORDER BY id DESC LIMIT 1", (sid,))
    row = cur.fetchone()
    if row is None:
        return {}
    names = [d[0] for d in cur.getdescription()]
    return {n: v for n, v in zip(names, row) if v is not None}


def _is_date(day: Any) -> bool:
    try:
        return isinstance(day, str) and time.strftime("%Y-%m-%d", time.strptime(day, "%Y-%m-%d")) == day
    except ValueError:
        return False


def _daily(conn: apsw.Connection, day: str, exact: bool = False) -> None:
    """The day's row from the event tables. A row the platform's tools wrote only grows; ``exact``
    (a day of ours, repaid after a batch that could not update it) is set to what the tables say."""
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
    values["session_count"] = scalar(
        conn, "SELECT COUNT(DISTINCT session_id) FROM cq_day_sessions WHERE date = ?", (day,)) or 0 if exact else \
        scalar(conn, "SELECT COUNT(DISTINCT session_id) FROM token_economics WHERE timestamp >= ? AND timestamp < ?",
               (lo, hi)) or 0
    values["tool_calls"] = scalar(conn, "SELECT COUNT(*) FROM tool_events WHERE timestamp >= ? AND timestamp < ?",
                                   (lo, hi)) or 0
    values["cost_estimate"] = scalar(conn, "SELECT COALESCE(SUM(cost_usd), 0) FROM token_economics "
                                            "WHERE timestamp >= ? AND timestamp < ?", (lo, hi)) or 0
    cols = list(values)
    rule = "excluded.{c}" if exact else "MAX(COALESCE({c}, 0), excluded.{c})"
    conn.execute(
        f"INSERT INTO daily_stats (date, {', '.join(cols)}) VALUES (?, {', '.join('?' * len(cols))}) "
        f"ON CONFLICT(date) DO UPDATE SET {', '.join(f'{c} = ' + rule.format(c=c) for c in cols)}, "
        "updated_at = CURRENT_TIMESTAMP",
        (day, *values.values()),
    )


def _hourly(conn: apsw.Connection, day: str, exact: bool = False) -> None:
    lo = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    if exact:  # a day of ours: its hours are what the tables say, sessions as the batches keep them
        conn.execute("DELETE FROM hourly_activity WHERE date = ?", (day,))
        rows: Any = conn.execute(
            "SELECT (timestamp - ?) / 3600 AS h, (SELECT COUNT(*) FROM cq_day_sessions WHERE date = ? AND hour = "
            "(timestamp - ?) / 3600), COUNT(*) FROM token_economics WHERE timestamp >= ? AND timestamp < ? GROUP BY 1",
            (lo, day, lo, lo, lo + 86400)).fetchall()
    else:
        rows = conn.execute(
            "SELECT (timestamp - ?) / 3600, COUNT(DISTINCT session_id), COUNT(*) FROM token_economics "
            "WHERE timestamp >= ? AND timestamp < ? GROUP BY 1", (lo, lo, lo + 86400)).fetchall()
    for hour, sessions, messages in rows:
        conn.execute(
            "INSERT INTO hourly_activity (date, hour, session_count, message_count) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(date, hour) DO UPDATE SET session_count = MAX(COALESCE(session_count, 0), excluded.session_count), "
            "message_count = MAX(COALESCE(message_count, 0), excluded.message_count)",
            (day, int(hour), sessions, messages),
        )


# -- incremental upkeep: the batch's own rows, exact, O(batch) ---------------------------------


@functools.lru_cache(maxsize=4096)
def _day_of(day_number: int) -> str:
    """The UTC date of a day number (seconds // 86400): a batch names few days, computed once each."""
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86400))


@functools.lru_cache(maxsize=1024)
def _family_of(model: Any) -> str | None:
    """The model family a response counts under in daily_stats (any value a row may hold)."""
    low = (model if type(model) is str else str(model or "")).lower()
    return next((f for f in _FAMILIES if f in low), None)


# daily_stats' columns per model family, in the order _response adds to them
_FAMILY_COLUMNS = {f: (f"{f}_messages", f"{f}_tokens_in", f"{f}_tokens_out", f"{f}_cache_read") for f in _FAMILIES}


class Summaries:
    """The summary changes one batch makes, computed from its own rows (O(batch), not O(table)).

    Deltas are exact when every row of a group was written (the common case);
    a group where some rows were not (a replay, a poison row) marks its keys
    for a full recompute from the event tables instead (``refresh``).
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self.tables = _tables(conn)
        self.active = {"sessions", "cq_owned_sessions"} <= self.tables or "tool_usage" in self.tables
        self.recompute = Touched()
        self.tools: dict[str, list[Any]] = {}  # tool → [calls, ok, failed, last ts, n durations, sum durations]
        self.session_counts: dict[str, list[int]] = {}  # session → [tools, messages]
        self.sessions: set[str] = set()
        self.days: dict[tuple[str, str], int] = {}  # (day, column) → delta
        self.hours: dict[tuple[str, int], int] = {}  # (day, hour) → responses
        self.day_sessions: set[tuple[str, int, str]] = set()  # (day, hour, session)
        self._te_before: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._owned: dict[str, bool] = {}
        # Token totals of our sessions, kept by deltas so a batch costs O(batch), not O(session):
        # session → [input, output, cache read, cache write, cost, rows with a cost]; (session, model) → rows
        self.keeps_tokens = {"cq_session_tokens", "cq_session_models"} <= self.tables
        self.session_tokens: dict[Any, list[Any]] = {}
        self.session_models: dict[tuple[Any, Any], int] = {}
        self._kept: dict[Any, bool] = {}

    def before(self, table: str, bodies: list[Any]) -> None:
        if self.active and table == "token_economics" and bodies:
            self._te_before = {}
            keys = list({(b.message_id, b.request_id) for b in bodies})
            for i in range(0, len(keys), 400):
                part = keys[i : i + 400]
                where = " OR ".join("(message_id = ? AND request_id = ?)" for _ in part)
                args = [v for k in part for v in k]
                for row in self.conn.execute(
                    "SELECT message_id, request_id, timestamp, model, input_tokens, output_tokens, "
                    "cache_read_input_tokens, cache_creation_input_tokens, cost_usd, session_id, op_id "
                    f"FROM token_economics WHERE {where}", args):
                    self._te_before[(row[0], row[1])] = tuple(row[2:])

    def after(self, table: str, bodies: list[Any], op_ids: list[str], written: int) -> None:
        if not self.active:
            return
        if bodies and "session_id" in type(bodies[0]).__struct_fields__:  # one table: one Struct type
            named = {body.session_id for body in bodies}
            named.discard(None)
            named.discard("")
            self.sessions |= named
        if table == "token_economics":
            self._token_economics(bodies, op_ids, written)
            return
        complete = written == len(bodies)
        if not complete:
            for body in bodies:
                self.recompute.add(body)
            return
        if table == "tool_events":
            per_day: dict[int, int] = {}
            for b in bodies:
                t = self.tools.get(b.tool_name)
                if t is None:
                    t = self.tools[b.tool_name] = [0, 0, 0, 0, 0, 0]
                t[0] += 1
                t[1 if b.success else 2] += 1
                if b.timestamp > t[3]:
                    t[3] = b.timestamp
                if b.duration_ms is not None:
                    t[4] += 1
                    t[5] += b.duration_ms
                n = b.timestamp // 86400
                per_day[n] = per_day.get(n, 0) + 1
                if b.session_id:
                    self.session_counts.setdefault(b.session_id, [0, 0])[0] += 1
            for n, calls in per_day.items():
                key = (_day_of(n), "tool_calls")
                self.days[key] = self.days.get(key, 0) + calls
        elif table == "messages":
            for b in bodies:
                self.session_counts.setdefault(b.session_id, [0, 0])[1] += 1

    def _token_economics(self, bodies: list[Any], op_ids: list[str], written: int) -> None:
        state = dict(self._te_before)
        added: list[tuple[Any, ...]] = []
        removed: list[tuple[Any, ...]] = []
        for body, op_id in zip(bodies, op_ids):
            key = (body.message_id, body.request_id)
            old = state.get(key)
            if old is not None and not op_id > old[-1]:
                continue  # an older operation: the row keeps the newer one
            # (timestamp, model, input, output, cache read, cache write, cost, session, op_id): as before() reads it
            new = (body.timestamp, body.model, body.input_tokens, body.output_tokens, body.cache_read_input_tokens,
                   body.cache_creation_input_tokens, body.cost_usd, body.session_id, op_id)
            if old is not None:
                if isinstance(old[0], (int, float)) and not isinstance(old[0], bool):
                    removed.append(old)
                else:  # a timestamp another writer stored as text: the day is recomputed from the tables
                    self.recompute.add(body)
                    removed.append((None, *old[1:]))  # its tokens still leave the session
                if old[7] and old[7] != body.session_id:
                    self.sessions.add(old[7])  # the response moved to another session: both rows change
            added.append(new)
            state[key] = new
        self._responses(removed, -1)
        self._responses(added, +1)
        if len(added) != written:  # not what the table did: recompute what these rows touch
            for body in bodies:
                self.recompute.add(body)

    def _responses(self, rows: list[tuple[Any, ...]], sign: int) -> None:
        """What ``rows`` (as ``_token_economics`` lists them) add to, or take from, the days, hours
        and sessions. The drain's hot path: one pass summing per key, then the sign once per key."""
        per_family: dict[tuple[Any, str], list[Any]] = {}  # (day number, family) → [responses, in, out, cache read]
        per_hour: dict[tuple[Any, int], int] = {}
        per_session: dict[Any, list[Any]] = {}  # session → [in, out, cache read, cache write, cost, costs]
        per_model: dict[tuple[Any, Any], int] = {}
        day_sessions = self.day_sessions
        for ts, model, inp, out, cread, cwrite, cost, sid, _op_id in rows:
            # A NULL count adds nothing, as SUM does.
            if ts is not None:
                day = ts // 86400
                family = _family_of(model)
                if family is not None:
                    acc = per_family.get((day, family))
                    if acc is None:
                        acc = per_family[(day, family)] = [0, 0, 0, 0]
                    acc[0] += 1
                    acc[1] += inp or 0
                    acc[2] += out or 0
                    acc[3] += cread or 0
                slot = (day, int(ts % 86400) // 3600)
                per_hour[slot] = per_hour.get(slot, 0) + 1
                if sid and sign > 0:
                    day_sessions.add((_day_of(int(day)), slot[1], sid))
            if sid:
                tot = per_session.get(sid)
                if tot is None:
                    tot = per_session[sid] = [0, 0, 0, 0, 0, 0]
                tot[0] += inp or 0
                tot[1] += out or 0
                tot[2] += cread or 0
                tot[3] += cwrite or 0
                if cost is not None:
                    tot[4] += cost
                    tot[5] += 1
                if model is not None:
                    per_model[(sid, model)] = per_model.get((sid, model), 0) + 1
        days, hours = self.days, self.hours
        for (day, family), sums in per_family.items():
            name = _day_of(int(day))
            for column, value in zip(_FAMILY_COLUMNS[family], sums):
                days[(name, column)] = days.get((name, column), 0) + sign * value
        for (day, hour), n in per_hour.items():
            key = (_day_of(int(day)), hour)
            hours[key] = hours.get(key, 0) + sign * n
        for sid, sums in per_session.items():
            kept = self.session_tokens.get(sid)
            if kept is None:
                kept = self.session_tokens[sid] = [0, 0, 0, 0, 0, 0]
            for i, value in enumerate(sums):
                kept[i] += sign * value
        for key, n in per_model.items():
            self.session_models[key] = self.session_models.get(key, 0) + sign * n

    def flush(self) -> None:
        """Apply the batch's summary changes (inside the batch transaction)."""
        if not self.active:
            return
        conn, tables = self.conn, self.tables
        if "tool_usage" in tables:
            for tool, (calls, ok, failed, last, n_dur, sum_dur) in self.tools.items():
                if tool in self.recompute.tools:
                    continue
                self._tool_delta(tool, calls, ok, failed, last, n_dur, sum_dur)
            for tool in self.recompute.tools:
                _tool_usage(conn, tool)
                self._tool_state(tool)
        self._keep_tokens()  # whether or not a sessions table is there to read them now
        if {"sessions", "cq_owned_sessions"} <= tables:
            kept = self._kept_totals if self.keeps_tokens else None
            have = _columns(conn, "sessions")
            for sid in self.sessions:
                if sid in self.recompute.sessions:
                    _session(conn, sid, tables, have=have)
                else:
                    # Every row this batch carried was written: it added these counts (none, if it
                    # carried only other rows of the session).
                    _session(conn, sid, tables, self.session_counts.get(sid, [0, 0]), kept, have)
        if {"daily_stats", "hourly_activity", "cq_owned_days", "cq_day_sessions"} <= tables:
            self._days()
            self._hours()
        if "token_economics" in tables:
            for day in self.recompute.days:
                if "daily_stats" in tables:
                    _daily(conn, day)
                if "hourly_activity" in tables:
                    _hourly(conn, day)

    # -- what a failed batch owes, repaid from the event tables ---------------------------------

    def owe(self, bodies: Iterable[Any]) -> None:
        """This batch's events commit without their summary rows: note the tools, sessions and
        days they touch, repaid by a later batch (``repay``) and reported meanwhile."""
        if not self.active or "cq_summary_debt" not in self.tables:
            return
        touched = Touched()
        for body in bodies:
            touched.add(body)
        now = time.time()
        self.conn.executemany(
            "INSERT OR IGNORE INTO cq_summary_debt (kind, key, since) VALUES (?, ?, ?)",
            [*(("tool", t, now) for t in touched.tools), *(("session", sid, now) for sid in touched.sessions),
             *(("day", d, now) for d in touched.days)])

    def owed(self) -> bool:
        return self.active and "cq_summary_debt" in self.tables and \
            self.conn.execute("SELECT 1 FROM cq_summary_debt LIMIT 1").fetchone() is not None

    def repay(self) -> int:
        """Recompute every summary row owed from the event tables, and clear the debt: a day of
        ours is set to what the tables say (its sessions per hour rebuilt), a day the platform's
        tools wrote only grows, as always. Runs before the batch's own summaries. Returns how many."""
        conn, tables = self.conn, self.tables
        debt: list[Any] = conn.execute("SELECT kind, key FROM cq_summary_debt").fetchall()
        owed = Touched()
        for kind, key in debt:
            {"tool": owed.tools, "session": owed.sessions, "day": owed.days}.get(kind, set()).add(key)
        if "tool_usage" in tables and "tool_events" in tables:
            for tool in owed.tools:
                _tool_usage(conn, tool)
                self._tool_state(tool)
        if {"sessions", "cq_owned_sessions"} <= tables:
            have = _columns(conn, "sessions")
            for sid in owed.sessions:
                self.forget(sid)
                _session(conn, sid, tables, have=have)
        if "token_economics" in tables:
            for day in owed.days:
                if not _is_date(day):
                    continue  # not a key this code wrote: nothing to recompute, and it goes with the rest
                mine = {"cq_owned_days", "cq_day_sessions"} <= tables and conn.execute(
                    "SELECT 1 FROM cq_owned_days WHERE date = ?", (day,)).fetchone() is not None
                if mine:
                    lo = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
                    conn.execute("DELETE FROM cq_day_sessions WHERE date = ?", (day,))
                    conn.execute(
                        "INSERT OR IGNORE INTO cq_day_sessions (date, hour, session_id) SELECT ?, (timestamp - ?) / "
                        "3600, session_id FROM token_economics WHERE timestamp >= ? AND timestamp < ? "
                        "AND session_id IS NOT NULL AND session_id != ''", (day, lo, lo, lo + 86400))
                if "daily_stats" in tables:
                    _daily(conn, day, exact=mine)
                if "hourly_activity" in tables:
                    _hourly(conn, day, exact=mine)
        conn.execute("DELETE FROM cq_summary_debt")
        return len(debt)

    def _is_kept(self, sid: Any) -> bool:
        kept = self._kept.get(sid)
        if kept is None:
            kept = self._kept[sid] = self.conn.execute(
                "SELECT 1 FROM cq_session_tokens WHERE session_id = ?", (sid,)).fetchone() is not None
        return kept

    def _keep_tokens(self) -> None:
        """Add the batch's token deltas to the sessions whose totals are kept. A session whose
        rows this batch did not all write as counted is forgotten, and counted again when next
        needed; one not kept yet is counted then from its rows, this batch's included."""
        if not self.keeps_tokens:
            return
        conn = self.conn
        for sid in self.recompute.sessions:
            self.forget(sid)
        for sid, (inp, out, cread, cwrite, cost, costs) in self.session_tokens.items():
            if sid in self.recompute.sessions or not self._is_kept(sid):
                continue
            conn.execute(
                "UPDATE cq_session_tokens SET input = input + ?, output = output + ?, cache_read = cache_read + ?, "
                "cache_write = cache_write + ?, cost = CASE WHEN costs + ? > 0 THEN COALESCE(cost, 0) + ? END, "
                "costs = costs + ? WHERE session_id = ?", (inp, out, cread, cwrite, costs, cost, costs, sid))
        for (sid, model), n in self.session_models.items():
            if n and sid not in self.recompute.sessions and self._is_kept(sid):
                conn.execute("INSERT INTO cq_session_models (session_id, model, n) VALUES (?, ?, ?) "
                             "ON CONFLICT (session_id, model) DO UPDATE SET n = n + excluded.n", (sid, model, n))

    def _kept_totals(self, sid: str) -> TokenTotals:
        """A session's token totals from what is kept for it, counted from its rows the first time."""
        conn = self.conn
        row: Any = conn.execute("SELECT input, output, cache_read, cache_write, cost FROM cq_session_tokens "
                                "WHERE session_id = ?", (sid,)).fetchone()
        if row is None:
            t: Any = conn.execute(SESSION_TOKENS, (sid,)).fetchone()
            conn.execute("INSERT INTO cq_session_tokens (session_id, input, output, cache_read, cache_write, cost, costs) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (sid, *t))
            conn.execute(f"INSERT INTO cq_session_models (session_id, model, n) SELECT ?, model, COUNT(*) {_SESSION_MODELS}",
                         (sid, sid))
            self._kept[sid] = True
            row = t[:5]
        return (*row, scalar(conn, _KEPT_TOP_MODEL, (sid,)))

    def forget(self, sid: Any = None) -> None:
        """Drop the kept token totals of one session, or of every session (after summaries that
        failed part-way: the events committed, so what was kept may no longer match them)."""
        if not self.keeps_tokens:
            return
        where, args = ("", ()) if sid is None else (" WHERE session_id = ?", (sid,))
        self.conn.execute(f"DELETE FROM cq_session_tokens{where}", args)
        self.conn.execute(f"DELETE FROM cq_session_models{where}", args)
        if sid is None:
            self._kept.clear()
        else:
            self._kept[sid] = False

    def _tool_delta(self, tool: str, calls: int, ok: int, failed: int, last: int, n_dur: int, sum_dur: int) -> None:
        conn = self.conn
        st = conn.execute("SELECT n_duration, sum_duration FROM cq_tool_usage WHERE tool_name = ?", (tool,)).fetchone() \
            if "cq_tool_usage" in self.tables else None
        if st is None:  # first time we keep this tool: one full computation (this batch included)
            _tool_usage(conn, tool)
            self._tool_state(tool)
            return
        n, total = int(st[0]) + n_dur, int(st[1]) + sum_dur
        conn.execute("UPDATE cq_tool_usage SET n_duration = ?, sum_duration = ? WHERE tool_name = ?", (n, total, tool))
        conn.execute(
            "INSERT INTO tool_usage (tool_name, total_calls, success_count, failure_count, last_used, avg_duration_ms) "
            "VALUES (?, ?, ?, ?, datetime(?, 'unixepoch'), ?) ON CONFLICT(tool_name) DO UPDATE SET "
            "total_calls = COALESCE(total_calls, 0) + excluded.total_calls, "
            "success_count = COALESCE(success_count, 0) + excluded.success_count, "
            "failure_count = COALESCE(failure_count, 0) + excluded.failure_count, "
            "last_used = MAX(COALESCE(last_used, ''), excluded.last_used), avg_duration_ms = excluded.avg_duration_ms",
            (tool, calls, ok, failed, last, total / n if n else None),
        )

    def _tool_state(self, tool: str) -> None:
        if "cq_tool_usage" not in self.tables:
            return
        row: Any = self.conn.execute("SELECT COUNT(duration_ms), COALESCE(SUM(duration_ms), 0) FROM tool_events "
                                     "WHERE tool_name = ?", (tool,)).fetchone()
        self.conn.execute("INSERT OR REPLACE INTO cq_tool_usage (tool_name, n_duration, sum_duration) VALUES (?, ?, ?)",
                          (tool, row[0], row[1]))

    def _owned_day(self, day: str) -> bool:
        """Whether the day's summary rows are ours to add to: rows the platform's own tools wrote are
        recomputed and only grow (``_daily``/``_hourly``), so nothing they counted is counted twice."""
        if day in self._owned:
            return self._owned[day]
        conn = self.conn
        mine = conn.execute("SELECT 1 FROM cq_owned_days WHERE date = ?", (day,)).fetchone() is not None
        if not mine and conn.execute("SELECT 1 FROM daily_stats WHERE date = ?", (day,)).fetchone() is None \
                and conn.execute("SELECT 1 FROM hourly_activity WHERE date = ?", (day,)).fetchone() is None:
            conn.execute("INSERT INTO cq_owned_days (date) VALUES (?)", (day,))
            mine = True
        self._owned[day] = mine
        return mine

    def _days(self) -> None:
        per_day: dict[str, dict[str, int]] = {}
        for (day, column), delta in self.days.items():
            per_day.setdefault(day, {})[column] = delta
        for day, hour, session in self.day_sessions:
            self.conn.execute("INSERT OR IGNORE INTO cq_day_sessions (date, hour, session_id) VALUES (?, ?, ?)",
                              (day, hour, session))
            per_day.setdefault(day, {})
        for day, deltas in per_day.items():
            if day in self.recompute.days:
                continue
            if not self._owned_day(day):
                self.recompute.days.add(day)  # the platform's row: recomputed, only grows
                continue
            sessions = scalar(self.conn, "SELECT COUNT(DISTINCT session_id) FROM cq_day_sessions WHERE date = ?",
                               (day,)) or 0
            cols = list(deltas)
            sets = [f"{c} = COALESCE({c}, 0) + ?" for c in cols] + ["session_count = ?",
                                                                   "updated_at = CURRENT_TIMESTAMP"]
            self.conn.execute("INSERT OR IGNORE INTO daily_stats (date) VALUES (?)", (day,))
            self.conn.execute(f"UPDATE daily_stats SET {', '.join(sets)} WHERE date = ?",
                              (*deltas.values(), sessions, day))

    def _hours(self) -> None:
        for (day, hour), delta in self.hours.items():
            if day in self.recompute.days or not self._owned_day(day):
                self.recompute.days.add(day)
                continue
            sessions = scalar(self.conn, "SELECT COUNT(*) FROM cq_day_sessions WHERE date = ? AND hour = ?",
                               (day, hour)) or 0
            self.conn.execute(
                "INSERT INTO hourly_activity (date, hour, session_count, message_count) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(date, hour) DO UPDATE SET session_count = MAX(COALESCE(session_count, 0), excluded.session_count), "
                "message_count = COALESCE(message_count, 0) + ?",
                (day, int(hour), sessions, max(0, delta), delta),
            )
