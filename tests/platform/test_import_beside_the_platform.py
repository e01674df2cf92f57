"""A legacy file the platform's own tools already stored in claude.db is not stored a second time.

The platform's backfill (meta-vengine ``backfill-jsonl-to-sqlite.py``) loaded
tool-usage.jsonl, activity-events.jsonl and more into claude.db, and its
post-tool hook still writes each event to both the file and the table, with
no operation id to tell a stored line (bug 76 in docs/reliability.md).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from codi_queue.paths import resolve

from ..conftest import query, run_cli
from .schemas import CCC, claude_db, home_pointing_at

# The platform's rows, as its backfill and hooks stored them: seconds, milliseconds and ISO text alike.
PLATFORM_ROWS = [(1769000000, "Read"), (1769000100000, "Bash"), ("2026-01-21T13:00:00Z", "Edit")]
NEWEST = "2026-01-21T13:00:00Z"  # 1769000400
LINES = [(1769000000, "Read"), (1769000100, "Bash"), (1769000400, "Edit"), (1769900000, "Grep"), (1769900100, "Glob")]


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    db = claude_db(tmp_path, CCC)
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO tool_events (timestamp, tool_name, success) VALUES (?, ?, 1)", PLATFORM_ROWS)
    conn.commit()
    conn.close()
    source = db.parent / "tool-usage.jsonl"
    source.write_text("".join(json.dumps({"ts": ts, "tool": tool}) + "\n" for ts, tool in LINES))
    return home_pointing_at(tmp_path, "sessions", db), db, source


def _ours(home: Path) -> list[tuple[object, ...]]:
    return query(resolve(str(home)), "sessions",
                 "SELECT timestamp, tool_name FROM tool_events WHERE op_id IS NOT NULL ORDER BY timestamp")


def test_importing_a_file_the_platform_already_stored_is_refused_with_the_way_on(tmp_path: Path) -> None:
    home, db, source = _setup(tmp_path)
    res = run_cli(home, "import", str(source))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"tool_events in {db} already holds 5 rows codi-queue did not write" in res.stderr
    assert f"to {NEWEST}" in res.stderr and f"--since {NEWEST}" in res.stderr and "--all" in res.stderr
    assert run_cli(home, "run", "--once").returncode == 0
    assert _ours(home) == []  # nothing was enqueued


def test_since_enqueues_only_the_lines_after_it(tmp_path: Path) -> None:
    home, _, source = _setup(tmp_path)
    res = run_cli(home, "import", str(source), "--since", NEWEST)
    assert res.returncode == 0, res.stderr
    assert "5 new lines, 2 enqueued as tool_event" in res.stdout and f"3 dated at or before {NEWEST} left out" in res.stdout
    assert run_cli(home, "run", "--once").returncode == 0
    assert _ours(home) == [(1769900000, "Grep"), (1769900100, "Glob")]
    # and the platform's rows are as they were
    platform = query(resolve(str(home)), "sessions", "SELECT COUNT(*) FROM tool_events WHERE op_id IS NULL")
    assert platform == [(5,)]


def test_all_enqueues_every_line_and_a_fresh_database_needs_neither(tmp_path: Path) -> None:
    home, _, source = _setup(tmp_path)
    res = run_cli(home, "import", str(source), "--all")
    assert res.returncode == 0, res.stderr
    assert run_cli(home, "run", "--once").returncode == 0
    assert len(_ours(home)) == 5

    fresh = tmp_path / "fresh"  # its own databases: every row in them is ours
    res = run_cli(fresh, "import", str(source))
    assert res.returncode == 0, res.stderr
    assert run_cli(fresh, "run", "--once").returncode == 0
    res = run_cli(fresh, "import", str(tmp_path / "dot-claude" / "data" / "tool-usage.jsonl"))
    assert res.returncode == 0 and "0 new lines" in res.stdout  # a re-import is still a no-op


def test_a_since_that_is_no_time_is_refused(tmp_path: Path) -> None:
    home, _, source = _setup(tmp_path)
    res = run_cli(home, "import", str(source), "--since", "last week")
    assert res.returncode == 2 and "--since: 'last week' is not unix seconds" in res.stderr
    res = run_cli(home, "import", str(source), "--since", NEWEST, "--all")
    assert res.returncode == 2 and "contradict" in res.stderr


def _watching(home: Path, source: Path, value: str) -> None:
    db_line = (home / "config.toml").read_text().splitlines()[:2]
    (home / "config.toml").write_text("\n".join([*db_line, "[watch.jsonl]", f'"{source}" = {value}', ""]))


def test_the_consumer_does_not_tail_such_a_file_until_told_where_to_start(tmp_path: Path) -> None:
    home, db, source = _setup(tmp_path)
    _watching(home, source, '"auto"')
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    assert _ours(home) == []
    status = run_cli(home, "status").stdout
    assert f"not reading {source}: tool_events in {db} already holds 5 rows" in status
    assert f'{{ op = "tool_event", since = "{NEWEST}" }}' in status and '{ op = "tool_event", all = true }' in status

    _watching(home, source, f'{{ op = "auto", since = "{NEWEST}" }}')
    assert run_cli(home, "run", "--once").returncode == 0
    assert _ours(home) == [(1769900000, "Grep"), (1769900100, "Glob")]

    with source.open("a") as fp:
        fp.write(json.dumps({"ts": 1769900200, "tool": "Write"}) + "\n")
    assert run_cli(home, "run", "--once").returncode == 0
    assert _ours(home)[-1] == (1769900200, "Write")  # and every line after it, as it comes


def test_a_watched_file_read_whole_when_the_config_says_all(tmp_path: Path) -> None:
    home, _, source = _setup(tmp_path)
    _watching(home, source, '{ op = "tool_event", all = true }')
    assert run_cli(home, "run", "--once").returncode == 0
    assert len(_ours(home)) == 5


def test_a_watched_file_s_table_form_is_checked(tmp_path: Path) -> None:
    home, _, source = _setup(tmp_path)
    for value, why in [('{ op = "auto", since = "soon" }', "since"), ('{ op = "auto", since = 5, all = true }', "contradict"),
                       ('{ op = "auto", from = 5 }', "unknown keys ['from']"), ('{ since = 5 }', ".op"),
                       ('{ op = "auto", all = "yes" }', "expected true or false"), ("5", "expected an operation name")]:
        _watching(home, source, value)
        res = run_cli(home, "config", "--show")
        assert res.returncode == 1 and why in res.stderr, (value, res.stderr)
    _watching(home, source, '{ op = "auto", since = 2026-01-21T13:00:00Z }')  # a TOML date-time, unquoted
    res = run_cli(home, "config", "--show", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["watch"]["jsonl_since"] == {str(source): 1769000400}
