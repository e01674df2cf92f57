"""Versioned SQL migrations per tier database, applied in order under ``PRAGMA user_version``.

Migration N takes a database from user_version N-1 to N. Migrations are
frozen once released: a change is a new migration appended to its tier
(``ALTER TABLE ... ADD COLUMN`` for a new Struct field). A test checks that
the migrated tables have exactly the columns the Structs declare, so the two
cannot drift apart.

Tables the platform already uses keep their names and columns; we add
``op_id`` (the operation that wrote the row) and, where useful, columns the
producers carry (``session_id``, ``tool_use_id``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

__all__ = ["MIGRATIONS", "Step", "latest_version"]

# A step is SQL, or a function of the connection for what SQL cannot say
# conditionally (adopting tables an existing database already has).
Step = Union[str, Callable[[Any], None]]

# The consumer's bookkeeping, in every database it writes, so that a batch,
# its dead letters and its cursor commit in one transaction.
_META = """
CREATE TABLE cq_cursor (
    segment TEXT PRIMARY KEY,
    pos INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE cq_applied (
    tbl TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE cq_dead_letters (
    id INTEGER PRIMARY KEY,
    op_id TEXT NOT NULL UNIQUE,
    op TEXT NOT NULL,
    reason TEXT NOT NULL,
    envelope BLOB NOT NULL,
    format TEXT NOT NULL DEFAULT 'msgpack',
    segment TEXT,
    pos INTEGER,
    first_failed REAL NOT NULL,
    last_failed REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
"""

_SESSIONS_LEGACY = """
CREATE TABLE IF NOT EXISTS tool_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    tool_name TEXT NOT NULL,
    success INTEGER NOT NULL,
    duration_ms INTEGER,
    error_message TEXT,
    context TEXT
);
CREATE TABLE IF NOT EXISTS activity_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    data TEXT,
    session_id TEXT
);
CREATE TABLE IF NOT EXISTS git_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    repo TEXT,
    branch TEXT,
    commit_hash TEXT,
    message TEXT,
    files_changed INTEGER,
    additions INTEGER,
    deletions INTEGER,
    author TEXT
);
CREATE TABLE IF NOT EXISTS routing_metrics_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    query_id TEXT,
    predicted_model TEXT,
    actual_model TEXT,
    dq_score REAL,
    complexity REAL,
    accuracy INTEGER,
    cost_saved REAL,
    reasoning TEXT,
    query_text TEXT
);
CREATE TABLE IF NOT EXISTS session_outcome_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT,
    outcome TEXT,
    quality REAL,
    complexity REAL,
    intent TEXT,
    model TEXT,
    messages_count INTEGER,
    duration_minutes INTEGER,
    cost_usd REAL,
    success INTEGER,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS self_heal_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    error_pattern TEXT NOT NULL,
    fix_applied TEXT,
    success INTEGER NOT NULL,
    execution_time_ms INTEGER,
    error_message TEXT,
    context TEXT,
    severity TEXT
);
CREATE TABLE IF NOT EXISTS recovery_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    recovery_strategy TEXT,
    success INTEGER NOT NULL,
    attempts INTEGER DEFAULT 1,
    time_to_recover_ms INTEGER,
    error_details TEXT,
    recovery_method TEXT
);
"""

_SESSIONS_NEW = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content TEXT NOT NULL,
    uuid TEXT,
    model TEXT,
    request_id TEXT,
    op_id TEXT UNIQUE
);
CREATE INDEX messages_session ON messages (session_id, timestamp);
CREATE TABLE tool_analytics (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    tool_name TEXT NOT NULL,
    session_id TEXT,
    calls INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    total_duration_ms INTEGER,
    op_id TEXT UNIQUE
);
CREATE TABLE token_economics (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    session_id TEXT,
    model TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    cost_usd REAL,
    op_id TEXT NOT NULL,
    UNIQUE (message_id, request_id)
);
CREATE INDEX token_economics_session ON token_economics (session_id);
"""

_ORG_1 = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    decision_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    decision TEXT NOT NULL,
    context TEXT,
    rationale TEXT,
    status TEXT NOT NULL,
    tags TEXT,
    op_id TEXT NOT NULL
);
CREATE TABLE skill_learnings (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    skill TEXT NOT NULL,
    pattern TEXT NOT NULL,
    learning TEXT NOT NULL,
    confidence REAL,
    source TEXT,
    occurrences INTEGER NOT NULL,
    op_id TEXT NOT NULL,
    UNIQUE (skill, pattern)
);
CREATE TABLE error_solutions (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    error_signature TEXT NOT NULL UNIQUE,
    solution TEXT NOT NULL,
    error_type TEXT,
    success_count INTEGER NOT NULL,
    failure_count INTEGER NOT NULL,
    context TEXT,
    op_id TEXT NOT NULL
);
"""

_PLATFORM_1 = """
CREATE TABLE components (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    path TEXT,
    description TEXT,
    tags TEXT,
    language TEXT,
    op_id TEXT NOT NULL,
    UNIQUE (kind, name)
);
CREATE VIRTUAL TABLE components_fts USING fts5(
    name, description, tags, path, content='components', content_rowid='id'
);
CREATE TRIGGER components_ai AFTER INSERT ON components BEGIN
    INSERT INTO components_fts (rowid, name, description, tags, path)
    VALUES (new.id, new.name, new.description, new.tags, new.path);
END;
CREATE TRIGGER components_ad AFTER DELETE ON components BEGIN
    INSERT INTO components_fts (components_fts, rowid, name, description, tags, path)
    VALUES ('delete', old.id, old.name, old.description, old.tags, old.path);
END;
CREATE TRIGGER components_au AFTER UPDATE ON components BEGIN
    INSERT INTO components_fts (components_fts, rowid, name, description, tags, path)
    VALUES ('delete', old.id, old.name, old.description, old.tags, old.path);
    INSERT INTO components_fts (rowid, name, description, tags, path)
    VALUES (new.id, new.name, new.description, new.tags, new.path);
END;
"""

_PROJECT_1 = """
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    task_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER,
    project TEXT,
    assignee TEXT,
    description TEXT,
    op_id TEXT NOT NULL
);
CREATE INDEX tasks_status ON tasks (status);
"""

# The session registry. (Released as ``sessions``, which is the platform's
# per-session summary in claude.db: migration 3 renames a registry created
# under that name, so both live in one database.)
_SESSIONS_2 = """
CREATE TABLE session_registry (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    project TEXT,
    cwd TEXT,
    branch TEXT,
    worktree TEXT,
    model TEXT,
    host TEXT,
    pid INTEGER,
    started_at INTEGER,
    ended_at INTEGER,
    op_id TEXT NOT NULL
);
CREATE TABLE locks (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    resource TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    released INTEGER NOT NULL,
    expires_at INTEGER,
    reason TEXT,
    op_id TEXT NOT NULL
);
CREATE TABLE overrides (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    session_id TEXT,
    reason TEXT,
    expires_at INTEGER,
    op_id TEXT NOT NULL,
    UNIQUE (scope, key)
);
CREATE TABLE worktree_links (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    worktree_path TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL,
    branch TEXT,
    session_id TEXT,
    op_id TEXT NOT NULL
);
CREATE TABLE skill_suggestions (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    skill TEXT NOT NULL,
    source TEXT,
    confidence REAL,
    op_id TEXT NOT NULL,
    UNIQUE (session_id, skill)
);
CREATE TABLE skill_invocations (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    skill TEXT NOT NULL,
    success INTEGER,
    invocations INTEGER NOT NULL,
    op_id TEXT NOT NULL,
    UNIQUE (session_id, skill)
);
"""

_PROJECT_2 = """
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    project_id TEXT NOT NULL UNIQUE,
    name TEXT,
    path TEXT,
    op_id TEXT NOT NULL
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    project_id TEXT,
    status TEXT,
    title TEXT,
    model TEXT,
    started_at INTEGER,
    updated_at INTEGER,
    cost_usd REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    state_path TEXT,
    op_id TEXT NOT NULL
);
CREATE TABLE agents (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    name TEXT,
    role TEXT,
    status TEXT,
    model TEXT,
    cost_usd REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    op_id TEXT NOT NULL,
    UNIQUE (session_id, agent_id)
);
CREATE TABLE agent_logs (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    message TEXT NOT NULL,
    level TEXT,
    op_id TEXT UNIQUE
);
CREATE INDEX agent_logs_session ON agent_logs (session_id, agent_id);
"""

# Columns we add to the platform's existing event tables.
_LEGACY_ADDITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "tool_events": (("session_id", "TEXT"), ("tool_use_id", "TEXT"), ("op_id", "TEXT")),
    "activity_events": (("op_id", "TEXT"),),
    "git_events": (("op_id", "TEXT"),),
    "routing_metrics_events": (("op_id", "TEXT"),),
    "session_outcome_events": (("op_id", "TEXT"),),
    "self_heal_events": (("op_id", "TEXT"),),
    "recovery_events": (("op_id", "TEXT"),),
}


def _adopt_legacy(conn: Any) -> None:
    """Give existing event tables the columns and the op_id index the consumer needs."""
    for table, additions in _LEGACY_ADDITIONS.items():
        have = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        for column, decl in additions:
            if column not in have:
                conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {decl}')
        conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS "{table}_op_id" ON "{table}" (op_id)')


def _rename_old_registry(conn: Any) -> None:
    """A registry the first release created as ``sessions`` becomes ``session_registry``."""
    cols = {row[1] for row in conn.execute('PRAGMA table_info("sessions")')}
    ours = {"session_id", "status", "host", "pid", "op_id"} <= cols and "project_path" not in cols
    taken = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'session_registry'").fetchone()
    if ours and not taken:
        conn.execute('ALTER TABLE "sessions" RENAME TO "session_registry"')


# The platform's own tables (claude-command-center config/schema.sql), so its
# dashboards work on a fresh database as on an adopted claude.db; the event
# tables of the streams that reached only JSONL until now carry op_id.
_SESSIONS_3 = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    project_path TEXT,
    started_at DATETIME NOT NULL,
    ended_at DATETIME,
    model TEXT NOT NULL,
    message_count INTEGER DEFAULT 0,
    tool_count INTEGER DEFAULT 0,
    input_tokens INTEGER DEFAULT 0,
    output_tokens INTEGER DEFAULT 0,
    cache_read_tokens INTEGER DEFAULT 0,
    cache_write_tokens INTEGER DEFAULT 0,
    outcome TEXT,
    quality_score REAL,
    dq_score REAL,
    complexity REAL,
    cost_estimate REAL,
    metadata JSON,
    transcript_path TEXT,
    scanned_at DATETIME
);
CREATE INDEX IF NOT EXISTS idx_sessions_started ON sessions(started_at);
CREATE TABLE IF NOT EXISTS cq_owned_sessions (
    id TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cq_tool_usage (
    tool_name TEXT PRIMARY KEY,
    n_duration INTEGER NOT NULL,
    sum_duration INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cq_owned_days (
    date TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cq_day_sessions (
    date TEXT NOT NULL,
    hour INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (date, hour, session_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tool_events_session_ts ON tool_events(session_id, timestamp);
CREATE INDEX IF NOT EXISTS activity_session_ts ON activity_events(session_id, timestamp);
CREATE INDEX IF NOT EXISTS token_economics_session_ts ON token_economics(session_id, timestamp);
CREATE INDEX IF NOT EXISTS idx_outcome_session ON session_outcome_events(session_id);
CREATE INDEX IF NOT EXISTS idx_tool_events_tool_name ON tool_events(tool_name);
CREATE INDEX IF NOT EXISTS idx_tool_events_session ON tool_events(session_id);
CREATE INDEX IF NOT EXISTS idx_activity_session ON activity_events(session_id);
CREATE INDEX IF NOT EXISTS token_economics_timestamp ON token_economics(timestamp);
CREATE TABLE IF NOT EXISTS daily_stats (
    date DATE PRIMARY KEY,
    opus_messages INTEGER DEFAULT 0,
    sonnet_messages INTEGER DEFAULT 0,
    haiku_messages INTEGER DEFAULT 0,
    opus_tokens_in INTEGER DEFAULT 0,
    opus_tokens_out INTEGER DEFAULT 0,
    opus_cache_read INTEGER DEFAULT 0,
    sonnet_tokens_in INTEGER DEFAULT 0,
    sonnet_tokens_out INTEGER DEFAULT 0,
    sonnet_cache_read INTEGER DEFAULT 0,
    haiku_tokens_in INTEGER DEFAULT 0,
    haiku_tokens_out INTEGER DEFAULT 0,
    haiku_cache_read INTEGER DEFAULT 0,
    session_count INTEGER DEFAULT 0,
    tool_calls INTEGER DEFAULT 0,
    cost_estimate REAL DEFAULT 0,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS tool_usage (
    tool_name TEXT PRIMARY KEY,
    total_calls INTEGER DEFAULT 0,
    success_count INTEGER DEFAULT 0,
    failure_count INTEGER DEFAULT 0,
    last_used DATETIME,
    avg_duration_ms REAL
);
CREATE TABLE IF NOT EXISTS hourly_activity (
    date DATE,
    hour INTEGER,
    session_count INTEGER DEFAULT 0,
    message_count INTEGER DEFAULT 0,
    PRIMARY KEY (date, hour)
);
CREATE TABLE IF NOT EXISTS command_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    command TEXT NOT NULL,
    args TEXT,
    success INTEGER,
    execution_time_ms INTEGER,
    context TEXT,
    op_id TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS idx_command_timestamp ON command_events(timestamp);
CREATE TABLE IF NOT EXISTS routing_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    query_hash TEXT,
    complexity REAL,
    dq_score REAL,
    chosen_model TEXT,
    reasoning TEXT,
    feedback TEXT,
    context TEXT,
    op_id TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS coordinator_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    agent_id TEXT,
    action TEXT NOT NULL,
    strategy TEXT,
    file_path TEXT,
    result TEXT,
    duration_ms INTEGER,
    exit_code INTEGER,
    context TEXT,
    op_id TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS expertise_routing_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    domain TEXT NOT NULL,
    expertise_level REAL,
    query_complexity REAL,
    chosen_model TEXT,
    reasoning TEXT,
    query_hash TEXT,
    context TEXT,
    op_id TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS autonomy_streaks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    start_ts INTEGER NOT NULL,
    end_ts INTEGER NOT NULL,
    duration_seconds INTEGER NOT NULL,
    tool_count INTEGER NOT NULL,
    avg_gap_seconds REAL,
    projects TEXT,
    top_tools TEXT,
    session_ids TEXT
);
CREATE TABLE IF NOT EXISTS autonomy_events (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    session_id TEXT,
    tool_name TEXT,
    context TEXT,
    op_id TEXT UNIQUE
);
"""


def _context_columns(conn: Any) -> None:
    """Event tables without a JSON column get ``context``: what a legacy line carries beyond the columns."""
    for table in ("git_events", "routing_metrics_events", "session_outcome_events", "recovery_events"):
        cols = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if cols and "context" not in cols:
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "context" TEXT')


# What the summaries keep per session of ours instead of summing all of its responses again
# each batch (consumer.summaries): token totals, and how many responses name each model.
_SESSIONS_4 = """
CREATE TABLE IF NOT EXISTS cq_session_tokens (
    session_id PRIMARY KEY,
    input INTEGER NOT NULL,
    output INTEGER NOT NULL,
    cache_read INTEGER NOT NULL,
    cache_write INTEGER NOT NULL,
    cost REAL,
    costs INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cq_session_models (
    session_id NOT NULL,
    model NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (session_id, model)
) WITHOUT ROWID;
"""


# Summary rows a batch could not update (its events committed without them): what is owed,
# repaid from the event tables by a later batch (consumer.summaries.repay).
_SESSIONS_5 = """
CREATE TABLE IF NOT EXISTS cq_summary_debt (
    kind TEXT NOT NULL,
    key NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""


def _session_marker_indexes(conn: Any) -> None:
    """Where a session starts and ends, found in O(log n): the summaries look these up for every
    session each batch touches, and without them scanned all of that session's activity (a drain
    slowed as sessions grew). Partial, so the common activity rows cost no index at insert."""
    cols = {row[1] for row in conn.execute('PRAGMA table_info("activity_events")')}
    if not {"session_id", "event_type", "timestamp"} <= cols:
        return  # a table of someone else's shape: the summaries' own guard reports it
    for marker in ("session_start", "session_end"):
        conn.execute(f"CREATE INDEX IF NOT EXISTS cq_activity_{marker} ON activity_events (session_id, timestamp) "
                     f"WHERE event_type = '{marker}'")


def _platform_column_names(conn: Any) -> None:
    """Fresh tables get the platform's names for our columns too (the dashboards query those)."""
    from .columns import PLATFORM_NAMES

    for table, pairs in PLATFORM_NAMES.items():
        cols = {row[1]: row[2] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        for ours, theirs in pairs.items():
            if theirs not in cols and ours in cols:
                conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{theirs}" {cols[ours]}')


MIGRATIONS: dict[str, tuple[tuple[Step, ...], ...]] = {
    "platform": ((_META, _PLATFORM_1),),
    "org": ((_META, _ORG_1),),
    "sessions": (
        (_META, _SESSIONS_LEGACY, _adopt_legacy, _SESSIONS_NEW),
        (_SESSIONS_2,),
        (_rename_old_registry, _SESSIONS_3, _context_columns, _platform_column_names),
        (_session_marker_indexes, _SESSIONS_4),
        (_SESSIONS_5,),
    ),
    "project": ((_META, _PROJECT_1), (_PROJECT_2,)),
    "state": ((_META,),),
}


def latest_version(tier: str) -> int:
    return len(MIGRATIONS[tier])
