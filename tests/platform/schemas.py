"""The platform's two database schemas, as tests build them (written here from reading them).

``CCC``: claude-command-center ``config/schema.sql``, the one its dashboards
query. ``META_VENGINE``: meta-vengine ``data/schema.sql`` followed by
``scripts/migration-add-tables.sql`` and ``scripts/phase2-add-tables.sql``
(plus the ``category`` column meta-vengine adds to ``self_heal_events``).
Both create ``claude.db``; each table is (name, column definitions).
"""

from __future__ import annotations

from pathlib import Path

_SESSIONS = """id TEXT PRIMARY KEY, project_path TEXT, started_at DATETIME NOT NULL, ended_at DATETIME,
    model TEXT NOT NULL, message_count INTEGER DEFAULT 0, tool_count INTEGER DEFAULT 0,
    input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0, cache_read_tokens INTEGER DEFAULT 0,
    cache_write_tokens INTEGER DEFAULT 0, outcome TEXT, quality_score REAL, dq_score REAL, complexity REAL,
    cost_estimate REAL, metadata JSON"""
_MODEL_STATS = ", ".join(f"{m}_{k} INTEGER DEFAULT 0" for m in ("opus", "sonnet", "haiku")
                         for k in ("messages", "tokens_in", "tokens_out", "cache_read"))
_COMMON = [
    ("daily_stats", f"date DATE PRIMARY KEY, {_MODEL_STATS}, session_count INTEGER DEFAULT 0, "
                    "tool_calls INTEGER DEFAULT 0, cost_estimate REAL DEFAULT 0, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP"),
    ("routing_decisions", "id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp DATETIME NOT NULL, query_hash TEXT, "
                          "query_preview TEXT, complexity REAL, selected_model TEXT, dq_score REAL, dq_validity REAL, "
                          "dq_specificity REAL, dq_correctness REAL, cost_estimate REAL, success INTEGER, feedback_at DATETIME"),
    ("tool_usage", "tool_name TEXT PRIMARY KEY, total_calls INTEGER DEFAULT 0, success_count INTEGER DEFAULT 0, "
                   "failure_count INTEGER DEFAULT 0, last_used DATETIME, avg_duration_ms REAL"),
    ("hourly_activity", "date DATE, hour INTEGER, session_count INTEGER DEFAULT 0, message_count INTEGER DEFAULT 0, "
                        "PRIMARY KEY (date, hour)"),
    ("projects", "path TEXT PRIMARY KEY, name TEXT, description TEXT, icon TEXT, session_count INTEGER DEFAULT 0, "
                 "message_count INTEGER DEFAULT 0, last_active DATETIME, git_commits INTEGER DEFAULT 0, "
                 "files_modified INTEGER DEFAULT 0"),
    ("subscription_periods", "period TEXT PRIMARY KEY, monthly_rate REAL, currency TEXT DEFAULT 'USD', "
                             "total_messages INTEGER DEFAULT 0, total_sessions INTEGER DEFAULT 0, "
                             "api_equivalent REAL DEFAULT 0, cache_savings REAL DEFAULT 0, roi_multiplier REAL DEFAULT 0"),
    ("metadata", "key TEXT PRIMARY KEY, value TEXT, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP"),
]
_ID = "id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL"
_EVENTS = [
    ("tool_events", f"{_ID}, tool_name TEXT NOT NULL, success INTEGER NOT NULL, duration_ms INTEGER, "
                    "error_message TEXT, context TEXT"),
    ("activity_events", f"{_ID}, event_type TEXT NOT NULL, data TEXT, session_id TEXT"),
    ("routing_events", f"{_ID}, query_hash TEXT, complexity REAL, dq_score REAL, chosen_model TEXT, reasoning TEXT, "
                       "feedback TEXT"),
    ("session_outcome_events", f"{_ID}, session_id TEXT, outcome TEXT, quality_score REAL, complexity REAL, "
                               "model_used TEXT, cost REAL, message_count INTEGER"),
    ("command_events", f"{_ID}, command TEXT NOT NULL, args TEXT, success INTEGER, execution_time_ms INTEGER"),
    ("routing_metrics_events", f"{_ID}, query_id TEXT, predicted_model TEXT, actual_model TEXT, dq_score REAL, "
                               "complexity REAL, accuracy INTEGER, cost_saved REAL, reasoning TEXT, query_text TEXT"),
    ("git_events", f"{_ID}, event_type TEXT NOT NULL, repo TEXT, branch TEXT, commit_hash TEXT, message TEXT, "
                   "files_changed INTEGER, additions INTEGER, deletions INTEGER, author TEXT"),
    ("self_heal_events", f"{_ID}, error_pattern TEXT NOT NULL, fix_applied TEXT, success INTEGER NOT NULL, "
                         "execution_time_ms INTEGER, error_message TEXT, context TEXT, severity TEXT"),
    ("recovery_events", f"{_ID}, error_type TEXT NOT NULL, recovery_strategy TEXT, success INTEGER NOT NULL, "
                        "attempts INTEGER DEFAULT 1, time_to_recover_ms INTEGER, error_details TEXT, recovery_method TEXT"),
    ("coordinator_events", f"{_ID}, agent_id TEXT, action TEXT NOT NULL, strategy TEXT, file_path TEXT, result TEXT, "
                           "duration_ms INTEGER, exit_code INTEGER"),
    ("expertise_routing_events", f"{_ID}, domain TEXT NOT NULL, expertise_level REAL, query_complexity REAL, "
                                 "chosen_model TEXT, reasoning TEXT, query_hash TEXT"),
]

CCC = [
    ("sessions", _SESSIONS + ", transcript_path TEXT, scanned_at DATETIME"),
    *_COMMON,
    *_EVENTS,
    ("autonomy_events", f"{_ID}, event_type TEXT NOT NULL, session_id TEXT, tool_name TEXT, context TEXT"),
    ("autonomy_streaks", "id INTEGER PRIMARY KEY AUTOINCREMENT, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, "
                         "duration_seconds INTEGER NOT NULL, tool_count INTEGER NOT NULL, avg_gap_seconds REAL, "
                         "projects TEXT, top_tools TEXT, session_ids TEXT"),
]
META_VENGINE = [
    ("sessions", _SESSIONS),
    *_COMMON,
    *[(name, cols + (", category TEXT" if name == "self_heal_events" else "")) for name, cols in _EVENTS],
]
INDEXES = [  # both create these; names the adoption must not trip over
    "CREATE INDEX IF NOT EXISTS idx_sessions_started ON sessions(started_at)",
    "CREATE INDEX IF NOT EXISTS idx_routing_timestamp ON routing_decisions(timestamp)",
    "CREATE INDEX IF NOT EXISTS idx_tool_events_tool_name ON tool_events(tool_name)",
    "CREATE INDEX IF NOT EXISTS idx_outcome_session ON session_outcome_events(session_id)",
    "CREATE INDEX IF NOT EXISTS idx_command_timestamp ON command_events(timestamp)",
]
VIEWS = [
    "CREATE VIEW IF NOT EXISTS v_recent_sessions AS SELECT id, project_path, started_at, model, message_count, "
    "outcome, quality_score, cost_estimate, ROUND((julianday(ended_at) - julianday(started_at)) * 24 * 60, 1) "
    "AS duration_minutes FROM sessions ORDER BY started_at DESC LIMIT 100",
]

# Rows the platform's own tools wrote before codi-queue came: they must stay exactly as they are.
SEED = {
    "sessions": [("sess-old", "/work/p", "2026-01-20T10:00:00", "2026-01-20T11:00:00", "claude-opus-4", 12)],
    "tool_events": [(1768903200, "Read", 1, 5, None, None), (1768903201, "Bash", 0, 120, "boom", '{"x":1}')],
    "session_outcome_events": [(1768903300, "sess-old", "completed", 4.0, 0.5, "opus", 1.25, 12)],
    "command_events": [(1768903400, "/commit", None, 1, 30)],
    "daily_stats": [("2026-01-20",)],
}


def build(conn: object, tables: list[tuple[str, str]]) -> None:
    """Create ``tables`` (and the shared indexes and views) on an sqlite3/apsw connection, with SEED rows."""
    execute = conn.execute  # type: ignore[attr-defined]
    for name, cols in tables:
        execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
    for sql in INDEXES + VIEWS:
        execute(sql)
    execute("INSERT INTO sessions (id, project_path, started_at, ended_at, model, message_count) VALUES (?,?,?,?,?,?)",
            SEED["sessions"][0])
    for row in SEED["tool_events"]:
        execute("INSERT INTO tool_events (timestamp, tool_name, success, duration_ms, error_message, context) "
                "VALUES (?,?,?,?,?,?)", row)
    execute("INSERT INTO session_outcome_events (timestamp, session_id, outcome, quality_score, complexity, "
            "model_used, cost, message_count) VALUES (?,?,?,?,?,?,?,?)", SEED["session_outcome_events"][0])
    execute("INSERT INTO command_events (timestamp, command, args, success, execution_time_ms) VALUES (?,?,?,?,?)",
            SEED["command_events"][0])
    execute("INSERT INTO daily_stats (date) VALUES (?)", SEED["daily_stats"][0])


def claude_db(tmp_path: Path, schema: list[tuple[str, str]]) -> Path:
    """The platform's ``claude.db`` (WAL, as its tools set it) with ``schema`` and the SEED rows."""
    import sqlite3

    data = tmp_path / "dot-claude" / "data"
    data.mkdir(parents=True, mode=0o700)
    path = data / "claude.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    build(conn, schema)
    conn.commit()
    conn.close()
    return path


def home_pointing_at(tmp_path: Path, tier: str, db: Path) -> Path:
    """A fresh home whose ``tier`` is the database ``db`` (adopted)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[databases]\n{tier} = "{db}"\n')
    return home
