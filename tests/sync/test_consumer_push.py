"""The running consumer pushes by itself; a team database that goes away never holds it back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from codi_queue.producers.api import enqueue_many
from tests.conftest import cli_env, count_when_ready, run_cli, wait_until
from tests.pgserver import PgServer

from .conftest import configure, team_rows


def _team_count(url: str) -> int:
    try:
        return int(team_rows(url, "SELECT count(*) FROM sessions.tool_events")[0][0])
    except Exception:  # noqa: BLE001 - not created yet, or the server is down: not there yet
        return -1


def test_the_consumer_pushes_and_outlives_a_stopped_server(home: Path, pg: PgServer, team: str) -> None:
    paths = configure(home, team, "alice")
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run"], env=cli_env(home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        enqueue_many("tool_event", [{"tool_name": "Bash", "success": True}] * 200, home=str(home))
        wait_until(lambda: _team_count(team) == 200, 60, "the consumer to push what it applied")

        pg.stop()
        try:
            for _ in range(3):
                enqueue_many("tool_event", [{"tool_name": "Read", "success": True}] * 100, home=str(home))
            sql = "SELECT count(*) FROM tool_events"
            wait_until(lambda: count_when_ready(paths, "sessions", sql) == 500, 60, "local applies to go on")

            def reported() -> dict[str, object] | None:
                sync = json.loads(run_cli(home, "status", "--json").stdout)["sync"]
                return sync if sync and sync["last_error"] and sync["backlog"].get("sessions") == 300 else None

            sync = wait_until(reported, 60, "status to show the push error and the backlog")
            assert "127.0.0.1" in str(sync["last_error"]) and "team-secret" not in str(sync["last_error"])
        finally:
            pg.start()
        wait_until(lambda: _team_count(team) == 500, 90, "the backlog to be pushed after the restart")
        assert team_rows(team, "SELECT count(DISTINCT op_id) FROM sessions.tool_events") == [(500,)]
        wait_until(lambda: json.loads(run_cli(home, "status", "--json").stdout)["sync"]["last_error"] is None,
                   30, "the error to clear")
    finally:
        consumer.send_signal(signal.SIGTERM)
        out, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err
    assert "pushing platform, org, sessions, project to postgresql://team:***@" in err
    assert "team-secret" not in err
