"""Backups under load pass integrity checks and restore; database care commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import apsw
import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths, resolve
from codi_queue.schemas.migrations import latest_version
from codi_queue.producers.api import enqueue, enqueue_many

from .conftest import cli_env, count_when_ready, query, run_cli, wait_until


def test_backup_under_steady_load_is_consistent_and_restores(tmp_path: Path, home: Path, paths: Paths) -> None:
    enqueue("decision", {"decision_id": "d1", "title": "keep", "decision": "yes"}, home=str(home))
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.1"], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        while not stop.is_set():
            enqueue_many("tool_event", [{"tool_name": f"load{sent[0]}-{i}", "success": True} for i in range(50)],
                         home=str(home))
            sent[0] += 1

    writer = threading.Thread(target=load)
    try:
        writer.start()
        wait_until(lambda: (count_when_ready(paths, "sessions", "SELECT count(*) FROM tool_events") or 0) >= 500,
                   30, "500 rows under load")
        snap = tmp_path / "snap"
        res = run_cli(home, "backup", "--into", str(snap))  # while the writer and consumer keep going
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("integrity ok") == 5
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(timeout=30)
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)
    snapped = apsw.Connection(str(snap / "sessions.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        in_snapshot = snapped.execute("SELECT count(*) FROM tool_events").get
        assert snapped.execute("PRAGMA integrity_check").get == "ok"
    finally:
        snapped.close()
    assert in_snapshot % 50 == 0  # whole batches only: a transaction is in the snapshot or not
    Consumer(paths).run(once=True)
    total = query(paths, "sessions", "SELECT count(*) FROM tool_events")[0][0]
    # Lose the org database, then restore the snapshot.
    os.remove(paths.database("org"))
    res = run_cli(home, "restore", str(snap), "--no-catch-up")
    assert res.returncode == 0, res.stderr
    assert query(paths, "org", "SELECT title FROM decisions") == [("keep",)]
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(in_snapshot,)]
    assert any(Path(paths.db_dir).glob("sessions.db.before-restore-*"))
    # Pending and archived operations after the snapshot come back with the catch-up.
    res = run_cli(home, "restore", str(snap))
    assert res.returncode == 0 and "re-sent" in res.stdout
    Consumer(paths).run(once=True)
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events") == [(total,)]


def test_restore_refuses_while_the_consumer_runs_and_a_damaged_snapshot(tmp_path: Path, home: Path, paths: Paths) -> None:
    enqueue("task", {"task_id": "t", "title": "x"}, home=str(home))
    Consumer(paths).run(once=True)
    snap = tmp_path / "snap"
    assert run_cli(home, "backup", "--into", str(snap)).returncode == 0
    data = bytearray((snap / "project.db").read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for n in range(1, len(data) // page):  # wreck every b-tree page header after the first
        data[n * page:n * page + 12] = b"\x42" * 12
    (snap / "project.db").write_bytes(bytes(data))
    res = run_cli(home, "restore", str(snap))
    assert res.returncode == 1 and "integrity" in res.stderr
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run"], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: '"running": true' in run_cli(home, "status", "--json").stdout, 30, "the consumer")
        res = run_cli(home, "restore", str(snap), "--tier", "org")
        assert res.returncode == 1 and "already running" in res.stderr
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=30)


def test_db_check_vacuum_migrate(home: Path, paths: Paths) -> None:
    enqueue_many("tool_event", [{"tool_name": "x" * 100, "success": True}] * 2000, home=str(home))
    Consumer(paths).run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DELETE FROM tool_events")
    conn.close()
    check = run_cli(home, "db", "check")
    assert check.returncode == 0 and check.stdout.count("integrity ok") == 5
    vac = run_cli(home, "db", "vacuum")
    assert vac.returncode == 0
    line = [l for l in vac.stdout.splitlines() if l.startswith("sessions")][0]
    before, after = (int(x) for x in line.split()[1:4:2])
    assert after < before
    mig = run_cli(home, "db", "migrate")
    v = latest_version("sessions")
    assert mig.returncode == 0 and f"sessions  schema v{v} -> v{v}" in mig.stdout


@pytest.mark.parametrize("action", ["vacuum", "migrate"])
@pytest.mark.parametrize("damage", ["fifo", "not a database"])
def test_db_vacuum_and_migrate_go_on_past_a_tier_they_cannot_do(home: Path, paths: Paths, action: str,
                                                               damage: str) -> None:
    """Like ``db check`` and ``backup``: a tier that fails costs only itself. Both stopped at the
    first (the org database, second of five) and printed nothing of the tiers already done."""
    enqueue("tool_event", {"tool_name": "x", "success": True}, home=str(home))
    enqueue("decision", {"decision_id": "d", "title": "t", "decision": "x"}, home=str(home))
    Consumer(paths).run(once=True)
    org = Path(paths.database("org"))
    for name in os.listdir(org.parent):
        if name.startswith(org.name):
            os.unlink(org.parent / name)
    if damage == "fifo":
        os.mkfifo(org, 0o600)
    else:
        org.write_bytes(b"not a database " * 100)
    res = run_cli(home, "db", action, timeout=60)
    assert res.returncode == 1
    assert {line.split()[0] for line in res.stdout.splitlines()} == {"platform", "sessions", "project", "state"}
    assert res.stderr.startswith("codi-queue: org: ") and res.stderr.count("\n") == 1, res.stderr
    report = json.loads(run_cli(home, "db", action, "--json").stdout)
    assert "error" in report["org"] and report["sessions"]["after"] > 0


def test_restore_of_an_adopted_database_that_is_the_user_s_link_keeps_the_link(home: Path, tmp_path: Path) -> None:
    """An adopted database outside the home may be the user's link (claude.db kept on another
    volume). Restore renamed the snapshot over the link: the link became a plain file, and the
    file it named, the one the user keeps, was left as it was."""
    real = tmp_path / "volume" / "claude.db"
    real.parent.mkdir()
    link = tmp_path / "claude" / "claude.db"
    link.parent.mkdir()
    link.symlink_to(real)
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[databases]\nsessions = "{link}"\n')
    (home / "config.toml").chmod(0o600)
    paths = resolve(str(home))
    enqueue("tool_event", {"tool_name": "before", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    assert run_cli(home, "backup").returncode == 0
    enqueue("tool_event", {"tool_name": "after", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    (snapshot,) = Path(paths.home, "backups").iterdir()
    res = run_cli(home, "restore", str(snapshot), "--tier", "sessions")
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert list(real.parent.glob("claude.db.before-restore-*"))  # the replaced file, kept beside it
    conn = apsw.Connection(str(real))
    assert [r[0] for r in conn.execute("SELECT tool_name FROM tool_events")] == ["before"]
    conn.close()


HOSTILE_MANIFESTS = {
    "not an object": "[]",
    "tiers not an object": '{"created": 1, "tiers": []}',
    "no created": '{"tiers": {"sessions": {"file": "sessions.db"}}}',
    "created as text": '{"created": "x", "tiers": {"sessions": {"file": "sessions.db"}}}',
    "created out of range": '{"created": 1e400, "tiers": {"sessions": {"file": "sessions.db"}}}',
    "unknown tier": '{"created": 1, "tiers": {"nope": {"file": "sessions.db"}}}',
    "file a number": '{"created": 1, "tiers": {"sessions": {"file": 5}}}',
    "file outside by ..": '{"created": 1, "tiers": {"sessions": {"file": "../snap/org.db"}}}',
    "file outside by absolute path": '{"created": 1, "tiers": {"sessions": {"file": "ORG"}}}',
    "file the snapshot itself": '{"created": 1, "tiers": {"sessions": {"file": ".."}}}',
    "not UTF-8": "\udcff\udcfe",
}


def test_restore_refuses_a_hostile_manifest_before_touching_anything(tmp_path: Path, home: Path, paths: Paths) -> None:
    """A snapshot may come from anywhere: its manifest once named any file, which was put in as a
    tier (the org database restored as sessions), and a malformed one ended in an internal error
    after the restore had happened."""
    enqueue("tool_event", {"tool_name": "kept", "success": True}, home=str(home))
    assert run_cli(home, "run", "--once").returncode == 0
    snap = tmp_path / "snap"
    assert run_cli(home, "backup", "--into", str(snap)).returncode == 0
    live = {t: Path(paths.database(t)).read_bytes() for t in ("org", "sessions")}
    for case, text in HOSTILE_MANIFESTS.items():
        hostile = tmp_path / f"hostile-{len(case)}-{case.split()[0]}"
        hostile.mkdir()
        for db in snap.glob("*.db"):
            (hostile / db.name).write_bytes(db.read_bytes())
        text = text.replace("ORG", str(Path(paths.database("org"))))
        (hostile / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        res = run_cli(home, "restore", str(hostile))
        assert res.returncode == 1, (case, res.stdout, res.stderr)
        assert "manifest.json" in res.stderr and "internal error" not in res.stderr, (case, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == "", (case, res.stderr)
    assert {t: Path(paths.database(t)).read_bytes() for t in ("org", "sessions")} == live
    assert not list(Path(paths.db_dir).glob("*before-restore*"))
    res = run_cli(home, "restore", str(snap), "--tier", "sessions", "--tier", "org")
    assert res.returncode == 0, res.stderr
    missing = tmp_path / "sessions-only"
    missing.mkdir()
    (missing / "sessions.db").write_bytes((snap / "sessions.db").read_bytes())
    (missing / "manifest.json").write_text('{"created": 1, "tiers": {"sessions": {"file": "sessions.db"}}}')
    res = run_cli(home, "restore", str(missing), "--tier", "org")
    assert res.returncode == 1 and "holds no org database" in res.stderr, res.stderr


def test_nothing_to_back_up_or_restore_is_said_not_done(tmp_path: Path) -> None:
    """A backup of a home with no database yet exited 1 after writing an empty snapshot, saying
    only where; restoring an empty snapshot said it re-sent 0 operations, exit 0 (session 13)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    res = run_cli(home, "backup")
    assert res.returncode == 1 and "nothing to back up" in res.stderr and not (home / "backups").exists()
    empty = tmp_path / "snapshot"
    empty.mkdir()
    (empty / "manifest.json").write_text('{"created": 1.0, "tiers": {}, "home": "/elsewhere"}')
    res = run_cli(home, "restore", str(empty))
    assert res.returncode == 1 and "holds no database: nothing to restore" in res.stderr


def test_backups_and_rebuilds_are_never_written_among_codi_queue_s_own_files(tmp_path: Path, home: Path,
                                                                           paths: Paths) -> None:
    """``rebuild --into`` the live inbox wrote five databases among its chunks (the consumer
    then took it for a broken inbox); ``backup --into`` the databases' or the segments'
    directory, or the home itself, put foreign directories among ours."""
    enqueue_many("tool_event", [{"tool_name": f"t{i}", "success": True} for i in range(3)], home=str(home))
    assert run_cli(home, "run", "--once").returncode == 0
    before = {d: sorted(os.listdir(d)) for d in (paths.spool, paths.db_dir, paths.state, paths.logs, str(home))}
    for command in ("rebuild", "backup"):
        for into in (home, Path(paths.spool) / "inbox", Path(paths.spool) / "segments" / "x", Path(paths.db_dir) / "x",
                     Path(paths.archive) / "x", Path(paths.state) / "x", Path(paths.logs) / "x"):
            res = run_cli(home, command, "--into", str(into))
            assert res.returncode == 1 and "codi-queue's own" in res.stderr, (command, into, res.stderr)
    assert {d: sorted(os.listdir(d)) for d in before} == before
    # Elsewhere in the home (where backups go by default) and outside it, as before.
    for command, into in (("backup", home / "backups" / "mine"), ("rebuild", tmp_path / "rebuilt")):
        res = run_cli(home, command, "--into", str(into))
        assert res.returncode == 0, res.stderr
    assert query(paths.with_db_dir(str(tmp_path / "rebuilt")), "sessions", "SELECT count(*) FROM tool_events") == [(3,)]
    assert run_cli(home, "run", "--once").returncode == 0 and run_cli(home, "db", "check").returncode == 0
