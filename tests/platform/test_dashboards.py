"""The platform's dashboard queries run on the databases codi-queue adopted, and see its rows (issue: fidelity).

Each query is executed (not read): on a claude.db made by either of the
platform's schemas and adopted by codi-queue, after the consumer applied a
session's worth of operations.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ..conftest import run_cli
from .dashboard_queries import QUERIES
from .schemas import CCC, META_VENGINE, build

# Tables that live in other databases of the platform, not in claude.db: the API
# server's CRM tables (its ANTIGRAVITY_DB) and the generator's supermemory.db.
OTHER_DATABASES = re.compile(r"\bFROM\s+(crm_\w+|memory_items|learnings|error_patterns|reviews)\b", re.I)

T0 = 1768903200  # 2026-01-20T10:00:00Z
SESSION = [
    ("activity_event", {"event_type": "session_start", "session_id": "s-new", "timestamp": T0,
                        "data": {"cwd": "/work/q", "model": "claude-opus-4"}}),
    ("token_economics", {"message_id": "m1", "request_id": "r1", "session_id": "s-new", "timestamp": T0 + 5,
                         "model": "claude-opus-4", "input_tokens": 10, "output_tokens": 20}),
    ("tool_event", {"tool_name": "Edit", "success": True, "duration_ms": 9, "session_id": "s-new", "timestamp": T0 + 6}),
    ("session_outcome", {"session_id": "s-new", "outcome": "success", "quality": 5, "complexity": 0.4,
                         "model": "opus", "messages_count": 3, "timestamp": T0 + 7}),
    ("routing_event", {"query_hash": "qh", "complexity": 0.4, "dq_score": 0.8, "chosen_model": "opus",
                       "timestamp": T0 + 8}),
    ("expertise_routing_event", {"domain": "python", "expertise_level": 0.5, "query_complexity": 0.4,
                                 "chosen_model": "sonnet", "timestamp": T0 + 9}),
    ("self_heal", {"error_pattern": "disk", "success": True, "severity": "high", "timestamp": T0 + 10}),
    ("recovery", {"error_type": "timeout", "success": True, "timestamp": T0 + 11}),
    ("autonomy_event", {"event_type": "permission_prompt", "session_id": "s-new", "tool_name": "Bash",
                        "timestamp": T0 + 12}),
    ("command_event", {"command": "/test", "success": True, "timestamp": T0 + 13}),
    ("activity_event", {"event_type": "session_end", "session_id": "s-new", "timestamp": T0 + 60}),
]


def _bindings(query: str) -> tuple[Any, ...]:
    """Values for a query's parameters, as its caller would pass them (a window wide enough for our rows)."""
    out: list[Any] = []
    for m in re.finditer(r"(\w+\s*(?:>=|>|=|<)\s*)?(date\('now',\s*)?\?|LIMIT\s+\?", query, re.I):
        text = m.group(0).lower()
        if "date('now'" in text:
            out.append("-36500 days")
        elif text.startswith("limit"):
            out.append(100)
        elif "tool_name" in text:
            out.append("Edit")
        elif "date" in text:
            out.append("2026-01-20")
        elif "domain" in text:
            out.append("python")
        else:
            out.append(0)  # timestamps and counts: "since the beginning"
    return tuple(out)


@pytest.fixture(scope="module", params=[CCC, META_VENGINE], ids=["command-center", "meta-vengine"])
def adopted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dash")
    data = tmp / "data"
    data.mkdir(mode=0o700)
    db = data / "claude.db"
    conn = sqlite3.connect(db)
    build(conn, request.param)
    conn.commit()
    conn.close()
    home = tmp / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[databases]\nsessions = "{db}"\n')
    for op, body in SESSION:
        res = run_cli(home, "enqueue", op, json.dumps(body))
        assert res.returncode == 0, res.stderr
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    return db


ON_CLAUDE_DB = [(r, f, q) for r, f, q in QUERIES if not OTHER_DATABASES.search(q)]


def test_the_queries_left_out_are_on_another_database() -> None:
    left_out = {f for _r, f, q in QUERIES if OTHER_DATABASES.search(q)}
    assert left_out == {"ccc-api-server.py", "ccc-generator.sh"}


@pytest.mark.parametrize("origin,query", [((r, f), q) for r, f, q in ON_CLAUDE_DB],
                         ids=[f"{r}:{f}:{i}" for i, (r, f, _) in enumerate(ON_CLAUDE_DB)])
def test_every_dashboard_query_runs_on_the_adopted_database(adopted: Path, origin: tuple[str, str],
                                                             query: str) -> None:
    conn = sqlite3.connect(adopted)
    try:
        conn.execute(query, _bindings(query)).fetchall()
    finally:
        conn.close()


SEES_OUR_ROWS = {
    # table: a dashboard query on it (from QUERIES) whose answer must include what we applied
    "session_outcome_events": ("SELECT COUNT(DISTINCT session_id) as total_sessions, AVG(quality_score) as avg_quality",
                               lambda rows: rows[0][0] >= 2),
    "expertise_routing_events": ("SELECT domain, count(*) as total_queries", lambda rows: any(r[0] == "python" for r in rows)),
    "autonomy_events": ("SELECT COUNT(*) FROM autonomy_events WHERE event_type='permission_prompt'",
                        lambda rows: rows[0][0] == 1),
    "sessions": ("SELECT id, substr(started_at, 1, 10) as date, message_count FROM sessions",
                 lambda rows: len(rows) == 1),
    "daily_stats": ("SELECT date, opus_messages + sonnet_messages + haiku_messages as messageCount",
                    lambda rows: any(r[0] == "2026-01-20" and r[1] >= 1 for r in rows)),
}


@pytest.mark.parametrize("table", sorted(SEES_OUR_ROWS))
def test_dashboard_queries_see_the_rows_codi_queue_applied(adopted: Path, table: str) -> None:
    prefix, check = SEES_OUR_ROWS[table]
    matches = [q for _r, _f, q in QUERIES if q.startswith(prefix)]
    assert matches, f"no dashboard query starts with {prefix!r}"
    conn = sqlite3.connect(adopted)
    try:
        rows = conn.execute(matches[0], _bindings(matches[0])).fetchall()
    finally:
        conn.close()
    assert check(rows), (table, rows)
