"""A home another user can write to, links planted under it, and the consumer lock (issue: hardening).

Every directory we keep state in must be ours and writable by no one else,
and nothing under the home is ever opened through a symbolic link: a
planted link must never make us read, truncate or write a file of someone
else's choosing.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue import enqueue
from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths, resolve

from ..conftest import cli_env, query, run_cli, wait_until

COMMANDS = [
    ["status"], ["run", "--once"], ["enqueue", "tool_event", '{"tool_name":"x","success":true}'],
    ["config", "--show"], ["db", "check"], ["backup"], ["replay", "--from-archive"],
]


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    return victim


@pytest.mark.parametrize("how", ["world-writable", "other-owner", "parent-world-writable", "parent-other-owner",
                                 "link-parent-world-writable"])
def test_a_home_another_user_can_write_is_refused_by_every_command(tmp_path: Path, how: str) -> None:
    """A directory above the home that another user can write lets them rename the home away and
    put their own in its place (session 13: only the home itself was checked)."""
    if how.endswith("other-owner") and os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root (CI runs as root)")
    parent = tmp_path / "above"
    parent.mkdir(mode=0o700)
    home = parent / "home"
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    if how == "link-parent-world-writable":  # the home is a link, in a directory others can write
        (tmp_path / "shared").mkdir()
        os.chmod(tmp_path / "shared", 0o777)
        (tmp_path / "shared" / "home").symlink_to(home, target_is_directory=True)
        home = tmp_path / "shared" / "home"
    elif how == "world-writable":
        os.chmod(home, 0o777)
    elif how == "parent-world-writable":
        os.chmod(parent, 0o777)
    elif how == "parent-other-owner":
        os.chown(parent, 12345, 12345)
    else:
        os.chown(home, 12345, 12345)
    # What another user could plant there: a config that points the textfile at a victim.
    victim = _victim(tmp_path)
    (home / "config.toml").write_text(f'[observability]\nprometheus_textfile = "{victim}"\n[archive]\nmax_bytes = 1\n')
    for args in COMMANDS:
        res = run_cli(home, *args)
        assert res.returncode == 1, (args, res.stderr)
        assert "refusing" in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    hook = run_cli(home, "hook", stdin=json.dumps({"session_id": "s", "hook_event_name": "Stop"}))
    assert hook.returncode == 0 and "refusing" in hook.stderr  # a hook never fails its caller, but says why
    assert enqueue("tool_event", {"tool_name": "api", "success": True}, home=str(home)) is False
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("mode", [0o1777, 0o775])
def test_a_home_below_a_sticky_or_own_group_directory_is_accepted(tmp_path: Path, mode: int) -> None:
    """/tmp (sticky: others cannot rename our entries) and a home directory writable by the
    user's own group (user private groups) are not another user's to replace."""
    parent = tmp_path / "above"
    parent.mkdir()
    os.chown(parent, os.getuid(), os.getgid())
    os.chmod(parent, mode)
    home = parent / "home"
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(resolve(str(home)), "sessions", "SELECT tool_name FROM tool_events") == [("x",)]


def test_a_home_that_is_the_user_s_link_to_a_private_directory_works_with_every_command(tmp_path: Path) -> None:
    """The home itself may be a link (a dotfiles checkout, a moved disk): producers always
    followed it, and the consumer once refused it with only "Not a directory"."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.symlink_to(real, target_is_directory=True)
    for args in COMMANDS:
        res = run_cli(home, *args)
        assert res.returncode == 0, (args, res.stderr)
        assert "Traceback" not in res.stderr
    assert run_cli(home, "run", "--once").returncode == 0
    paths = resolve(str(home))
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("x",)]
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.2"], env=cli_env(home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: json.loads(run_cli(home, "status", "--json").stdout)["consumer"]["running"], 30,
                   "the consumer on a linked home")
        second = run_cli(home, "run", timeout=30)
        assert second.returncode == 1 and f"pid {consumer.pid}" in second.stderr  # one consumer, through the link too
    finally:
        consumer.terminate()
        consumer.communicate(timeout=30)
    assert consumer.returncode == 0


def test_a_link_to_a_directory_others_can_write_is_refused_by_every_command(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    home = tmp_path / "home"
    home.symlink_to(real, target_is_directory=True)
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    os.chmod(real, 0o777)
    for args in COMMANDS:
        res = run_cli(home, *args)
        assert res.returncode == 1 and "refusing" in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


def test_logs_swapped_for_a_link_are_refused_and_never_appended_to(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "run", "--once").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "consumer.log"
    victim.write_text("precious\n")
    os.rename(paths.logs, tmp_path / "old-logs")
    os.symlink(elsewhere, paths.logs)
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and "symbolic link" in res.stderr
    assert victim.read_text() == "precious\n"


def _forge_inbox(paths: Paths, target: Path) -> None:
    """An inbox whose info points its head chunk at a link to ``target``."""
    from codi_queue.queue import frame

    inbox = Path(paths.spool, "inbox")
    info = {"chunksize": 1000, "size": 1, "tail": [1, 0, 0], "head": [1, 1, 3], "ops": 1}
    (inbox / "info").write_bytes(frame.encode_frame(frame.encode_meta(info), frame.KIND_META))
    os.symlink(target, inbox / "q00001")


def test_a_link_planted_in_the_inbox_is_never_written_through(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert enqueue("tool_event", {"tool_name": "first", "success": True}, home=str(home))
    victim = _victim(tmp_path)
    _forge_inbox(paths, victim)
    os.symlink(victim, Path(paths.spool, "inbox", "info.tmp"))
    assert enqueue("tool_event", {"tool_name": "second", "success": True}, home=str(home))
    res = run_cli(home, "enqueue", "tool_event", '{"tool_name":"third","success":true}')
    assert res.returncode == 0, res.stderr
    assert victim.read_text() == "precious\n"  # neither truncated nor appended to
    assert run_cli(home, "run", "--once").returncode == 0
    names = {r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")}
    assert names == {"first", "second", "third"}
    dead = " ".join(str(r) for r in query(paths, "state", "SELECT reason, envelope FROM cq_dead_letters"))
    assert "precious" not in dead  # the link's target was never read into the dead-letter store


def test_an_inbox_swapped_for_a_forged_one_is_moved_aside(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert enqueue("tool_event", {"tool_name": "first", "success": True}, home=str(home))
    victim = _victim(tmp_path)
    os.rename(Path(paths.spool, "inbox"), tmp_path / "real-inbox")
    forged = tmp_path / "forged"
    forged.mkdir(mode=0o700)
    (forged / "id").write_text("09999999999999999999")
    os.symlink(forged, Path(paths.spool, "inbox"))  # the inbox itself is now a link
    _forge_inbox(paths, victim)
    assert enqueue("tool_event", {"tool_name": "second", "success": True}, home=str(home))
    assert victim.read_text() == "precious\n"
    assert run_cli(home, "run", "--once").returncode == 0
    assert query(paths, "sessions", "SELECT tool_name FROM tool_events") == [("second",)]


def test_a_linked_chunk_in_a_segment_is_not_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    for i in range(3):
        assert enqueue("tool_event", {"tool_name": f"t{i}", "success": True}, home=str(home))
    seg = Path(paths.spool, "segments", "00000000000000000001")
    os.rename(Path(paths.spool, "inbox"), seg)
    victim = _victim(tmp_path)
    os.rename(seg / "q00000", tmp_path / "real-chunk")
    os.symlink(victim, seg / "q00000")
    Consumer(paths).run(once=True)
    dead = " ".join(str(r) for r in query(paths, "state", "SELECT reason, envelope FROM cq_dead_letters"))
    assert "precious" not in dead and "not a regular file" in dead


def test_the_prometheus_file_is_0644_through_a_private_temporary_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "metrics" / "codi.prom"
    out.parent.mkdir()
    old = os.umask(0o077)
    try:
        assert run_cli(home, "status", "--prometheus", str(out)).returncode == 1  # no home yet: said so
        assert run_cli(home, "run", "--once").returncode == 0
        res = run_cli(home, "status", "--prometheus", str(out))
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(out.parent) == ["codi.prom"]


def _special_files(folder: Path) -> list[Path]:
    """A FIFO and a socket (anyone may make them), and a character device like /dev/null when
    this runs as root (the case found: ``status --prometheus /dev/null`` replaced the system's)."""
    folder.mkdir()
    made = [folder / "fifo"]
    os.mkfifo(made[0])
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock"))
    sock.close()
    made.append(folder / "sock")
    if os.geteuid() == 0:
        try:
            os.mknod(folder / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            made.append(folder / "null")
        except PermissionError:
            pass  # a container without CAP_MKNOD: the FIFO and the socket take the same path
    return made


def test_no_file_of_ours_is_renamed_over_a_device_fifo_or_socket(tmp_path: Path) -> None:
    """Every atomic write (the Prometheus file named on the command line or in the config, state
    files, a user's settings through their link) replaces only a regular file or a link."""
    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    specials = _special_files(tmp_path / "special")
    kinds = {p: stat.S_IFMT(p.lstat().st_mode) for p in specials}
    for target in specials:
        res = run_cli(home, "status", "--prometheus", str(target))
        assert res.returncode == 1 and "not a regular file: left as it is" in res.stderr, res.stderr
        settings = tmp_path / f"settings-{target.name}.json"
        settings.symlink_to(target)  # the user's link, followed to what it names
        res = run_cli(home, "install-hooks", str(settings))
        assert res.returncode == 1 and "internal error" not in res.stderr, res.stderr
    (home / "config.toml").write_text(f'[observability]\nprometheus_textfile = "{specials[0]}"\n')
    (home / "config.toml").chmod(0o600)
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0 and "not a regular file: left as it is" in res.stderr, res.stderr
    assert {p: stat.S_IFMT(p.lstat().st_mode) for p in specials} == kinds
    assert sorted(os.listdir(tmp_path / "special")) == sorted(p.name for p in specials)  # no temporary left


def test_the_prometheus_file_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    """``status --prometheus`` pointed at a tier's database replaced the database with the
    metrics (found by the sweep of every option: ``db check`` then said "file is not a
    database"); any other file of the user's would have gone the same way."""
    home = tmp_path / "home"
    adopted = tmp_path / "claude" / "claude.db"
    adopted.parent.mkdir()
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name": "A", "success": true}').returncode == 0
    (home / "config.toml").write_text(f'[databases]\nsessions = "{adopted}"\n')
    (home / "config.toml").chmod(0o600)
    assert run_cli(home, "run", "--once").returncode == 0
    precious = tmp_path / "notes.txt"
    precious.write_text("mine\n")
    (tmp_path / "to-db.prom").symlink_to(home / "db" / "project.db")
    (tmp_path / "to-nothing.prom").symlink_to(tmp_path / "nothing")
    for target, why in ((home / "db" / "project.db", "lies in codi-queue's own"),
                        (tmp_path / "to-db.prom", "lies in codi-queue's own"),
                        (home / "metrics.prom", "lies in codi-queue's own"),  # new, but among our files
                        (adopted, "is the sessions database's"),
                        (Path(f"{adopted}-wal"), "is the sessions database's"),  # empty, or not there
                        (Path(f"{adopted}-shm"), "is the sessions database's"),
                        (precious, "exists and is not a Prometheus file codi-queue wrote"),
                        (tmp_path / "to-nothing.prom", "a link to nothing")):
        res = run_cli(home, "status", "--prometheus", str(target))
        assert res.returncode == 1 and why in res.stderr, (target, res.stderr)
    assert precious.read_text() == "mine\n"
    assert not (tmp_path / "nothing").exists() and not (home / "metrics.prom").exists()
    check = run_cli(home, "db", "check")
    assert check.returncode == 0 and check.stdout.count("integrity ok") == 5, check.stdout
    # Its own file, again and through the user's link, is replaced as before.
    out = tmp_path / "codi.prom"
    (tmp_path / "linked.prom").symlink_to(out)
    for name in (out, out, tmp_path / "linked.prom"):
        assert run_cli(home, "status", "--prometheus", str(name)).returncode == 0
    assert out.read_text().startswith("# HELP codi_queue_") and (tmp_path / "linked.prom").is_symlink()
    # In the configuration, a textfile among codi-queue's own files is refused by its key.
    (home / "config.toml").write_text(f'[observability]\nprometheus_textfile = "{home}/db/x.prom"\n')
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and "observability.prometheus_textfile" in res.stderr, res.stderr


def test_a_group_writable_config_file_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    config = home / "config.toml"
    config.write_text("[archive]\nmax_bytes = 1\n")
    os.chmod(config, 0o664)
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and "writable by group or others" in res.stderr


def _consumer(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.1"], env=cli_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_deleting_the_pid_file_does_not_let_a_second_consumer_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    first = _consumer(home)
    try:
        wait_until(lambda: os.path.exists(paths.consumer_pid_file), 30, "the first consumer")
        for name in os.listdir(paths.state):
            os.remove(os.path.join(paths.state, name))
        second = run_cli(home, "run", "--once")
        assert second.returncode == 1 and f"pid {first.pid}" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)


def test_of_three_consumers_started_at_once_one_runs_and_the_others_name_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    procs = [_consumer(home) for _ in range(3)]
    try:
        wait_until(lambda: sum(p.poll() is None for p in procs) == 1, 60, "two of the three to give up")
        (winner,) = [p for p in procs if p.poll() is None]
        for loser in procs:
            if loser is not winner:
                err = loser.stderr.read() if loser.stderr else ""
                assert loser.returncode == 1 and f"pid {winner.pid}" in err, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)


@pytest.mark.parametrize("kind", ["fifo", "device", "group-writable"])
def test_a_default_config_file_no_producer_can_safely_read_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    """The platform config directory's file names the home. A FIFO there must not hang every
    hook and API call, a link to a device must not be read without end, and a file another
    user could write must not choose where operations go."""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "CODI_QUEUE_HOME"}
    env.update(PYTHONPATH=str(root), XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_STATE_HOME=str(tmp_path / "state"), HOME=str(tmp_path))
    folder = tmp_path / "cfg" / "codi-queue"
    folder.mkdir(parents=True)
    config = folder / "config.toml"
    if kind == "fifo":
        os.mkfifo(config, 0o600)
    elif kind == "device":
        os.symlink("/dev/zero", config)
    else:
        config.write_text(f'home = "{tmp_path / "elsewhere"}"\n')
        os.chmod(config, 0o664)
    # /dev/zero is writable by others too; a user who is not root is told first that root owns it
    reason = "not a regular file" if kind == "fifo" else \
        "owned by uid 0" if kind == "device" and os.geteuid() != 0 else "writable by group or others"
    hook = subprocess.run([sys.executable, "-m", "codi_queue", "enqueue", "tool_event",
                           '{"tool_name": "Bash", "success": true}'], env=env, capture_output=True, text=True, timeout=30)
    assert hook.returncode != 0 and reason in hook.stderr and "Traceback" not in hook.stderr, hook.stderr
    # The API raises (there is no safe home to log to), at once rather than hanging.
    api = subprocess.run([sys.executable, "-c", "from codi_queue import enqueue; from codi_queue.errors import "
                          "UnsafePath\ntry:\n enqueue('tool_event', {'tool_name': 'Bash', 'success': True})\n"
                          "except UnsafePath as exc:\n print(exc)"], env=env, capture_output=True, text=True, timeout=30)
    assert api.returncode == 0 and reason in api.stdout, api.stderr
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "data").exists()


# -- directories and databases under the home that are links (bug 24) ------------------------


def _victim_dir(tmp_path: Path) -> Path:
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    (victim / "notes.txt").write_text("precious\n")
    (victim / "data.json").write_text('{"t": "not a marker"}\n')
    return victim


def _hook(home: Path, event: str, **fields: object) -> None:
    payload = {"session_id": "s1", "hook_event_name": event, "tool_name": "Bash", "tool_input": {}, **fields}
    res = run_cli(home, "hook", stdin=json.dumps(payload))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr


def test_in_flight_markers_are_never_kept_through_a_link(tmp_path: Path) -> None:
    """A link at ``state/inflight`` once took the markers out of the home, and a Stop's sweep
    deleted every file it could not read as a marker there: someone else's files."""
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "run", "--once").returncode == 0
    victim = _victim_dir(tmp_path)
    os.symlink(victim, Path(paths.state, "inflight"))
    _hook(home, "PreToolUse", tool_use_id="t1")
    _hook(home, "PostToolUse", tool_use_id="t1", tool_response={})
    _hook(home, "Stop")
    _hook(home, "SessionEnd")
    assert sorted(p.name for p in victim.iterdir()) == ["data.json", "notes.txt"]
    assert (victim / "notes.txt").read_text() == "precious\n"
    assert run_cli(home, "run", "--once").returncode == 0
    # The call is still recorded, without the duration only the markers could give it.
    assert query(paths, "sessions", "SELECT tool_use_id, success, duration_ms FROM tool_events") == [("t1", 1, None)]
    errors = Path(paths.error_log).read_text()
    assert "inflight" in errors and "symbolic link" in errors


def test_a_backups_directory_that_is_a_link_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    victim = _victim_dir(tmp_path)
    os.symlink(victim, Path(paths.home, "backups"))
    res = run_cli(home, "backup")
    assert res.returncode == 1 and "backups: a symbolic link" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["data.json", "notes.txt"]
    into = tmp_path / "chosen"
    assert run_cli(home, "backup", "--into", str(into)).returncode == 0  # a place the user names is theirs


def _real_database(path: Path) -> None:
    import apsw

    conn = apsw.Connection(str(path))
    conn.execute("CREATE TABLE precious (x)")
    conn.execute("INSERT INTO precious VALUES (1)")
    conn.close()


@pytest.mark.parametrize("where", ["sessions.db", "sessions.db-wal", "sessions.db-journal"])
def test_a_database_under_the_home_that_is_a_link_is_never_opened(tmp_path: Path, where: str) -> None:
    """The link leads to a real database elsewhere: the worst case, since SQLite would adopt it."""
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    victim = tmp_path / "other.db"
    _real_database(victim)
    before = victim.read_bytes()
    planted = Path(paths.db_dir, where)
    if planted.exists():
        os.rename(planted, tmp_path / "moved-aside")
    os.symlink(victim, planted)
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"y","success":true}').returncode == 0
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and f"{where}: a symbolic link" in res.stderr, res.stderr
    for args in (["db", "check"], ["backup"], ["dead-letters"], ["db", "migrate"]):
        res = run_cli(home, *args)
        # db check lists the tier with why (the others still checked); the rest say it on stderr
        said = res.stdout if args == ["db", "check"] else res.stderr
        assert res.returncode == 1 and "symbolic link" in said and "Traceback" not in res.stderr, (args, res)
    status = run_cli(home, "status")
    assert status.returncode == 0 and "sessions: UnsafePath" in status.stdout, status.stdout
    assert victim.read_bytes() == before and not Path(f"{victim}-wal").exists()
    # Nothing was lost: the operation waits in the spool until the link is gone.
    os.unlink(planted)
    if where == "sessions.db":
        os.rename(tmp_path / "moved-aside", planted)
    assert run_cli(home, "run", "--once").returncode == 0
    assert sorted(query(paths, "sessions", "SELECT tool_name FROM tool_events")) == [("x",), ("y",)]


def test_a_database_configured_outside_the_home_may_be_the_user_s_link(tmp_path: Path) -> None:
    home = tmp_path / "home"
    real = tmp_path / "data" / "claude.db"
    real.parent.mkdir(mode=0o700)
    _real_database(real)
    linked = tmp_path / "linked.db"
    os.symlink(real, linked)
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[databases]\nsessions = "{linked}"\n')
    os.chmod(home / "config.toml", 0o600)
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    res = run_cli(home, "run", "--once")
    assert res.returncode == 0, res.stderr
    import apsw

    assert apsw.Connection(str(real)).execute("SELECT tool_name FROM tool_events").fetchall() == [("x",)]


@pytest.mark.parametrize("where", ["archive", "quarantine"])
def test_a_consumer_meeting_a_linked_archive_or_quarantine_leaves_the_segment_and_goes_on(
        tmp_path: Path, where: str) -> None:
    """Retiring or setting aside a claimed directory never moves it out of the home through a
    link; it stays in the spool, said once, and the rest of the spool is still applied."""
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert enqueue("tool_event", {"tool_name": "first", "success": True}, home=str(home))
    segments = Path(paths.spool, "segments")
    claimed = segments / "00000000000000000001"
    os.rename(Path(paths.spool, "inbox"), claimed)
    if where == "quarantine":
        os.rename(claimed, tmp_path / "real-segment")
        claimed.write_text("not a queue directory")  # unreadable: would be set aside
        target = Path(paths.spool, "quarantine")
    else:
        target = Path(paths.archive)
    victim = _victim_dir(tmp_path)
    assert enqueue("tool_event", {"tool_name": "second", "success": True}, home=str(home))
    os.symlink(victim, target)  # planted while the consumer runs: after its start-up check
    consumer = Consumer(paths)
    try:
        consumer.drain()
        consumer.drain()  # a second pass tries again, and says nothing new
    finally:
        consumer._close_databases()
    assert sorted(p.name for p in victim.iterdir()) == ["data.json", "notes.txt"]
    assert claimed.exists()
    names = sorted(r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events"))
    assert names == (["first", "second"] if where == "archive" else ["second"])
    said = [line for line in Path(paths.error_log).read_text().splitlines() if "00000000000000000001" in line]
    assert len(said) == 1 and "symbolic link" in said[0], said


# -- files we write by a fixed name, found as something else (session 12) --------------------


@pytest.mark.parametrize("name", ["logs/consumer.log", "logs/.reserve", "logs/errors.jsonl", "state/metrics.json.tmp"])
def test_a_fifo_where_we_write_a_file_by_a_fixed_name_never_hangs_anything(tmp_path: Path, name: str) -> None:
    """Opening a FIFO to write waits for a reader, for ever: ``run`` hung at its log, the
    error log's reserve and the metrics' temporary file, and any error recorded into a FIFO
    ``errors.jsonl`` would have hung the hook or consumer recording it."""
    home = tmp_path / "home"
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    planted = home / name
    planted.unlink(missing_ok=True)
    os.mkfifo(planted, 0o600)
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"y","success":true}').returncode == 0
    res = run_cli(home, "run", "--once", timeout=30)
    if name == "logs/consumer.log":  # the consumer's own log: refused, saying what is there
        assert res.returncode == 1 and f"not a regular file ({planted})" in res.stderr, res.stderr
        planted.unlink()
        assert run_cli(home, "run", "--once", timeout=30).returncode == 0
    else:
        assert res.returncode == 0, res.stderr
    hook = run_cli(home, "hook", stdin="{not json", timeout=30)  # an error to record
    assert hook.returncode == 0 and "Traceback" not in hook.stderr
    assert sorted(r[0] for r in query(resolve(str(home)), "sessions", "SELECT tool_name FROM tool_events")) == ["x", "y"]
    assert stat_is_fifo(planted) or name == "logs/consumer.log"  # left as it was found, never read or replaced


def stat_is_fifo(path: Path) -> bool:
    import stat

    return stat.S_ISFIFO(os.lstat(path).st_mode)


def test_status_passes_over_error_log_lines_of_another_shape(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    log = home / "logs" / "errors.jsonl"
    log.write_text('{"ts": 1, "source": "hook", "message": "the real one \\ud800"}\n{"a": 1e400}\n[1, 2]\n'
                   '{"message": 5}\n{"ts": 2}\n')
    for args in (["status"], ["status", "--json"]):
        res = run_cli(home, *args)
        assert res.returncode == 0 and "internal error" not in res.stderr, (args, res.stderr)
        assert "the real one \ufffd" in res.stdout or "the real one \\ufffd" in res.stdout, res.stdout


# -- a database, its sidecars or a snapshot's files found as something else (session 13) ----


@pytest.mark.parametrize(("kind", "name"), [("fifo", "sessions.db"), ("fifo", "sessions.db-wal"),
                                            ("fifo", "state.db"), ("dir", "sessions.db-journal")])
def test_a_database_or_sidecar_that_is_not_a_file_costs_that_tier_only(tmp_path: Path, kind: str, name: str) -> None:
    """A FIFO at a tier's database hung ``status``, ``backup`` and ``db check`` for ever, and
    one at the database or its ``-wal`` ended ``run`` with "database error" for every tier
    (bug 29). Now that tier is unavailable, said by name, and the others go on."""
    home = tmp_path / "home"
    tier = name.split(".")[0]
    other = "project" if tier == "state" else "state"
    assert run_cli(home, "run", "--once").returncode == 0
    planted = home / "db" / name
    planted.unlink(missing_ok=True)
    os.mkfifo(planted, 0o600) if kind == "fifo" else planted.mkdir()
    why = f"refusing {planted}: not a regular file"
    run = run_cli(home, "run", "--once", timeout=60)
    assert run.returncode == 1 and f"{tier} database" in run.stderr and why in run.stderr, run.stderr
    status = run_cli(home, "status", timeout=60)
    assert status.returncode == 0 and f"tier unavailable {tier}: UnsafePath: {why}" in status.stdout, status.stdout
    check = run_cli(home, "db", "check", timeout=60)
    assert check.returncode == 1 and f"{tier:<9} cannot be read: UnsafePath: {why}" in check.stdout
    assert f"{other:<9} integrity ok" in check.stdout
    backup = run_cli(home, "backup", timeout=60)
    assert backup.returncode == 1 and f"{tier}: not backed up: {why}" in backup.stderr, backup.stderr
    (snapshot,) = (home / "backups").iterdir()
    held = json.loads((snapshot / "manifest.json").read_text())["tiers"]
    assert other in held and tier not in held  # the others were still backed up
    assert stat_is_fifo(planted) if kind == "fifo" else planted.is_dir()  # left as found


@pytest.mark.parametrize("plant", ["fifo", "link", "fifo journal", "missing"])
def test_restore_refuses_a_snapshot_file_that_is_not_a_plain_file(tmp_path: Path, plant: str) -> None:
    """A FIFO as a snapshot's tier file (or a hot journal beside it) hung ``restore``; a link
    restored whatever it pointed at."""
    home = tmp_path / "home"
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    assert run_cli(home, "backup").returncode == 0
    (snapshot,) = (home / "backups").iterdir()
    target = snapshot / "sessions.db"
    if plant != "fifo journal":
        target.unlink()
    if plant == "fifo":
        os.mkfifo(target)
    elif plant == "link":
        target.symlink_to(home / "db" / "org.db")
    elif plant == "fifo journal":
        target = snapshot / "sessions.db-journal"
        os.mkfifo(target)
    before = sorted(os.listdir(home / "db"))
    res = run_cli(home, "restore", str(snapshot), timeout=60)
    assert res.returncode == 1 and res.stderr.startswith(f"codi-queue: {target}: "), res.stderr
    assert sorted(os.listdir(home / "db")) == before  # nothing touched
