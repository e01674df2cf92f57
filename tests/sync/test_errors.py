"""A team database that cannot be reached or refuses: one line, exit 1, never the password."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import urlencode, urlunsplit

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.producers.api import enqueue
from tests.conftest import run_cli
from tests.pgserver import PASSWORD, PgServer

from .conftest import configure


def _one_line_failure(home: Path, *args: str) -> str:
    res = run_cli(home, *args)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("codi-queue: "), res.stderr
    assert "Traceback" not in res.stderr
    return res.stderr


def test_a_refused_login_says_why_without_the_password(home: Path, pg: PgServer, team: str) -> None:
    wrong = team.replace(PASSWORD, "not-the-Secret-42")
    configure(home, wrong, "alice")
    enqueue("tool_event", {"tool_name": "Bash", "success": True}, home=str(home))
    for action in ("push", "pull", "migrate"):
        err = _one_line_failure(home, "sync", action)
        assert "password authentication failed" in err
        assert "not-the-Secret-42" not in err and "***" in err


def test_an_unreachable_server_and_a_missing_database(home: Path, pg: PgServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    configure(home, f"postgresql://team:{PASSWORD}@127.0.0.1:{closed_port}/team", "alice")
    err = _one_line_failure(home, "sync", "push")
    assert "Connection refused" in err or "connection" in err.lower()
    assert PASSWORD not in err
    configure(home, pg.url("no_such_database"), "alice")
    err = _one_line_failure(home, "sync", "push")
    assert 'database "no_such_database" does not exist' in err


def test_status_reports_the_reason_and_still_counts_the_backlog(home: Path, pg: PgServer) -> None:
    paths = configure(home, pg.url("no_such_database"), "alice")
    enqueue("decision", {"decision_id": "d", "title": "t", "decision": "x"}, home=str(home))
    Consumer(paths).run(once=True)
    res = run_cli(home, "sync", "status", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["reachable"] is False and "does not exist" in report["error"]
    assert report["tiers"]["org"]["backlog"] == 1
    assert PASSWORD not in res.stdout


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('url = "mysql://x@y/z"', "sync.url"),
        ('url = "postgresql://a@b/c"\npush = ["everything"]', "sync.push"),
        ('url = "postgresql://a@b/c"\nshare_private = "yes"', "sync.share_private"),
        ('url = "postgresql://a@b/c"\nmachine = ""', "sync.machine"),
        ('url = "postgresql://a@b/c"\npassword = "x"', "sync"),
    ],
)
def test_a_bad_sync_table_is_refused_with_its_key(home: Path, table: str, key: str) -> None:
    home.mkdir(mode=0o700)
    config = home / "config.toml"
    config.write_text("[sync]\n" + table + "\n")
    config.chmod(0o600)
    err = _one_line_failure(home, "sync", "push")
    assert f"{key}:" in err


def test_without_a_sync_table_the_commands_say_where_to_put_one(home: Path) -> None:
    home.mkdir(mode=0o700)
    err = _one_line_failure(home, "sync", "push")
    assert "no [sync] table" in err and "config.toml" in err


def test_the_password_is_never_shown(home: Path, pg: PgServer, team: str) -> None:
    configure(home, team, "alice")
    for args in (("config", "--show"), ("config", "--json"), ("paths", "--json"), ("sync", "status")):
        res = run_cli(home, *args)
        assert res.returncode == 0, res.stderr
        assert PASSWORD not in res.stdout + res.stderr
    shown = json.loads(run_cli(home, "config", "--json").stdout)["sync"]
    assert shown["url"] == team.replace(PASSWORD, "***") and shown["machine"] == "alice"
    assert shown["push"] == ["platform", "org", "sessions", "project"] and shown["pull"] == ["org"]


def test_two_homes_under_one_machine_name_are_refused(tmp_path: Path, team: str) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for h in (first, second):
        paths = configure(h, team, "same-name")
        enqueue("decision", {"decision_id": str(h), "title": "t", "decision": "x"}, home=str(h))
        Consumer(paths).run(once=True)
    assert run_cli(first, "sync", "push").returncode == 0
    err = _one_line_failure(second, "sync", "push")
    assert "machine name 'same-name' is already pushed to by another codi-queue home" in err
    configure(second, team, "second-name")
    assert run_cli(second, "sync", "push").returncode == 0


def test_paths_names_the_team_database_without_its_password(home: Path, team: str) -> None:
    configure(home, team, "alice")
    res = run_cli(home, "paths", "--json")
    assert json.loads(res.stdout)["sync"] == team.replace(PASSWORD, "***") + " as alice"
    assert PASSWORD not in res.stdout


def test_every_password_a_url_can_carry_is_hidden(home: Path) -> None:
    """The password in the user part or as a parameter, and libpq's sslpassword (a client key's
    passphrase), which was printed as it was (session 13)."""
    url = urlunsplit(("postgresql", f"alice:{PASSWORD}@db.example", "/codi",
                      urlencode({"sslpassword": PASSWORD, "PASSWORD": PASSWORD, "sslmode": "require"}), ""))
    configure(home, url, "alice")
    for args in (("config", "--show"), ("config", "--json"), ("paths", "--json")):
        res = run_cli(home, *args)
        assert res.returncode == 0, res.stderr
        assert PASSWORD not in res.stdout + res.stderr and "sslmode=require" in res.stdout, res.stdout
