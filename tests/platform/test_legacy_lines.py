"""Every line shape the platform's writers emit lands with the values its backfill would store (issue: fidelity).

Shapes read from meta-vengine's writers (``ccc-self-heal.py`` summary lines,
the observatory's git tracker, ``expertise_router.py``) and its backfill
scripts, which decide what is kept: flags default as they do there, a truthy
count is a true flag, keys without a column go into ``context``/``data``,
and words and scales of their own are stored as given, never refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codi_queue.paths import Paths, resolve

from ..conftest import query, run_cli


def _import(tmp_path: Path, home: Path, name: str, lines: list[dict[str, Any]]) -> None:
    path = tmp_path / name
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    res = run_cli(home, "import", str(path))
    assert res.returncode == 0, res.stdout + res.stderr  # nothing refused


def _one(paths: Paths, sql: str) -> tuple[Any, ...]:
    rows = query(paths, "sessions", sql)
    assert len(rows) == 1, rows
    return rows[0]


def test_every_writer_shape_is_stored_as_the_backfill_would(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    _import(tmp_path, home, "self-heal-outcomes.jsonl", [
        {"ts": 1768903200, "ok": 5, "warn": 1, "error": 2, "fixed": 1},          # ccc-self-heal.py summary line
        {"ts": 1768903201, "pattern": "disk", "fixed": False, "severity": "warning", "category": "infra"},
    ])
    _import(tmp_path, home, "tool-usage.jsonl", [
        {"ts": 1768903300, "tool": "Read", "duration": 12},                       # no success: the peer defaults it
        {"timestamp": 1768903301, "tool_name": "Bash", "success": False, "error": "exit 1", "count": 3},
    ])
    _import(tmp_path, home, "session-outcomes.jsonl", [
        {"session_id": "a", "outcome": "completed", "quality_score": 0.8, "cost": 1.5, "message_count": 12,
         "complexity": 7, "models_used": {"opus": 3, "haiku": 1}, "date": "2026-01-20"},
        {"session_id": "b", "outcome": "error", "quality": 2, "model": "sonnet", "messages": 4, "ts": 1768903400},
    ])
    _import(tmp_path, home, "git-activity.jsonl", [
        {"ts": 1768903500, "event": "commit", "commit_hash": "abc12345", "commit_msg": "fix", "files_changed": 2,
         "lines_changed": 10, "pwd": "/work/p"},                                  # the observatory's git tracker
        {"ts": 1768903501, "type": "checkout", "repo": "p", "branch": "main"},
    ])
    _import(tmp_path, home, "activity-events.jsonl", [
        {"ts": 1768903600, "type": "prompt", "session_id": "a", "words": 12},
    ])
    _import(tmp_path, home, "command-usage.jsonl", [
        {"timestamp": 1768903700, "command": "/commit", "args": ["-m", "x"], "execution_time": 40},
    ])
    _import(tmp_path, home, "routing-feedback.jsonl", [
        {"timestamp": 1768903800, "query_hash": "h1", "complexity": 0.4, "dq_score": 0.9, "model": "sonnet",
         "feedback": "good"},
    ])
    _import(tmp_path, home, "expertise-routing.jsonl", [
        {"query_preview": "fix the hook", "detected_domain": "react", "domain_match_strength": 0.5,
         "expertise_confidence": 0.8, "base_complexity": 0.3, "base_model": "opus", "final_model": "sonnet",
         "adjustment": "downgrade", "reasoning": ["High expertise", "cheaper"], "timestamp": "2026-01-20T10:00:00"},
    ])
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr

    summary = _one(paths, "SELECT error_pattern, success, error_message, severity, context FROM self_heal_events "
                          "WHERE timestamp = 1768903200")
    assert summary[:4] == ("unknown", 1, "2", "medium") and json.loads(summary[4]) == {"ok": 5, "warn": 1}
    warning = _one(paths, "SELECT success, severity, context FROM self_heal_events WHERE timestamp = 1768903201")
    assert warning[:2] == (0, "warning") and json.loads(warning[2]) == {"category": "infra"}

    assert _one(paths, "SELECT success, duration_ms FROM tool_events WHERE tool_name = 'Read'") == (1, 12)
    bash = _one(paths, "SELECT success, error_message, context FROM tool_events WHERE tool_name = 'Bash'")
    assert bash[:2] == (0, "exit 1") and json.loads(bash[2]) == {"count": 3}

    a = _one(paths, "SELECT outcome, quality_score, cost, message_count, complexity, model_used "
                    "FROM session_outcome_events WHERE session_id = 'a'")
    assert a[:5] == ("completed", 0.8, 1.5, 12, 7.0) and json.loads(a[5]) == {"opus": 3, "haiku": 1}
    assert _one(paths, "SELECT outcome, quality_score, model_used, message_count FROM session_outcome_events "
                       "WHERE session_id = 'b'") == ("error", 2.0, "sonnet", 4)

    commit = _one(paths, "SELECT event_type, commit_hash, message, files_changed, repo, context FROM git_events "
                         "WHERE commit_hash = 'abc12345'")
    assert commit[:5] == ("commit", "abc12345", "fix", 2, "/work/p") and json.loads(commit[5]) == {"lines_changed": 10}
    assert _one(paths, "SELECT event_type, branch FROM git_events WHERE timestamp = 1768903501") == ("checkout", "main")

    prompt = _one(paths, "SELECT event_type, session_id, data FROM activity_events")
    assert prompt[:2] == ("prompt", "a") and json.loads(prompt[2]) == {"words": 12}
    cmd = _one(paths, "SELECT command, args, success, execution_time_ms FROM command_events")
    assert cmd[0] == "/commit" and json.loads(cmd[1]) == ["-m", "x"] and cmd[2:] == (1, 40)
    assert _one(paths, "SELECT query_hash, chosen_model, feedback FROM routing_events") == ("h1", "sonnet", "good")
    exp = _one(paths, "SELECT domain, expertise_level, query_complexity, chosen_model, reasoning, context "
                      "FROM expertise_routing_events")
    assert exp[:5] == ("react", 0.8, 0.3, "sonnet", "High expertise; cheaper")
    assert json.loads(exp[5])["adjustment"] == "downgrade"

    # Nothing refused, nothing dropped: words and scales of the platform's own are counted, not judged.
    status = json.loads(run_cli(home, "status", "--json").stdout)
    assert status["dead_letters"] == 0
    outside = status["outside_vocabulary"]
    assert outside["session_outcome.outcome"] == 2 and outside["session_outcome.complexity"] == 1
    assert outside["self_heal.severity"] == 1 and outside["git_event.event_type"] == 1


def test_new_producers_still_get_our_words_checked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = run_cli(home, "enqueue", "session_outcome", '{"session_id":"s","outcome":"completed"}')
    assert res.returncode == 2 and "field outcome" in res.stderr
    res = run_cli(home, "enqueue", "git_event", '{"event_type":"checkout"}')
    assert res.returncode == 2 and "field event_type" in res.stderr
