"""What a user sees at the edge: one line and a documented exit status, never a traceback (issue: hardening)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.errorlog import last_error
from codi_queue.paths import resolve

from .conftest import cli_env, run_cli, wait_until


def _one_line_failure(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 1, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("codi-queue: "), res.stderr


def test_a_fresh_home_shows_no_false_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.05"], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stderr is not None
        started = consumer.stderr.readline()  # make run's first words: home, databases, waiting
        assert f"home {home}" in started and "sessions.db" in started and "waiting" in started
        assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
        wait_until(lambda: '"pending": 0' in run_cli(home, "status", "--json").stdout
                   and '"tool_events": 1' in run_cli(home, "status", "--json").stdout, 60, "the op to apply")
        status = run_cli(home, "status")
        assert "last error       none" in status.stdout, status.stdout
    finally:
        consumer.terminate()
        consumer.wait(timeout=60)


def test_status_piped_into_a_closed_reader_is_quiet(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    res = subprocess.run(f"{sys.executable} -m codi_queue status | head -c 1 >/dev/null; "
                         f"{sys.executable} -m codi_queue status --json | head -c 1 >/dev/null",
                         shell=True, env=cli_env(home), capture_output=True, text=True, timeout=60)
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_text_stdout_cannot_show_is_escaped_not_an_internal_error(tmp_path: Path, encoding: str) -> None:
    """A locale whose encoding lacks a character of the user's own text (a home named with one):
    `status` and `paths` ended in "internal error: UnicodeEncodeError" (bug 73)."""
    home = tmp_path / "h\u2713\U0001f600me"
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name": "Bash", "success": true}').returncode == 0
    env = dict(cli_env(home), PYTHONIOENCODING=encoding)
    for args in (["status"], ["paths"], ["config"], ["run", "--once"], ["paths", "--json"]):
        res = subprocess.run([sys.executable, "-m", "codi_queue", *args], env=env, capture_output=True, timeout=60)
        assert res.returncode == 0 and b"internal error" not in res.stderr, (args, res)
        if args == ["paths"]:
            assert b"h\\u2713\\U0001f600me" in res.stdout, res.stdout
        if args == ["paths", "--json"]:
            import json

            assert json.loads(res.stdout)["home"] == str(home)


def test_each_edge_is_one_line_and_exit_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    _one_line_failure(run_cli(home, "backup", "--into", str(taken)))
    _one_line_failure(run_cli(home, "status", "--prometheus", str(tmp_path / "missing" / "dir" / "x.prom")))
    _one_line_failure(run_cli(tmp_path / "nobody-home", "status"))
    assert "nothing was ever enqueued" in run_cli(tmp_path / "nobody-home", "status").stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for args in (["status"], ["run", "--once"], ["enqueue", "tool_event", '{"tool_name":"x","success":true}'],
                 ["db", "check"], ["backup"]):
        _one_line_failure(run_cli(a_file, *args))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)


def test_a_full_disk_is_loud_logged_and_counted(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("needs root to mount a small tmpfs")  # the project's machines run the suite as root
    try:
        home = disk / "home"
        paths = resolve(str(home))
        assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"x","success":true}').returncode == 0
        assert run_cli(home, "run", "--once").returncode == 0  # makes the error log's reserve
        filler = disk / "filler"
        _fill(filler)
        res = run_cli(home, "enqueue", "tool_event", '{"tool_name":"y","success":true,"error_message":"'
                      + "z" * 60000 + '"}')
        _one_line_failure(res)
        assert "No space left" in res.stderr
        _fill(filler)  # what the error log's reserve gave back is taken again
        api = subprocess.run([sys.executable, "-c", "from codi_queue import enqueue; import sys; "
                              f"sys.exit(0 if enqueue('tool_event', {{'tool_name': 'api', 'error_message': 'z' * 60000, 'success': True}}, "
                              f"home={str(home)!r}) is False else 3)"],
                             env=cli_env(home), capture_output=True, text=True, timeout=60)
        assert api.returncode == 0 and api.stderr == ""  # False, and nothing printed to the caller
        err = last_error(paths.error_log)
        assert err is not None and "No space left" in err["message"] and err["source"] == "producer"
        status = run_cli(home, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"producer_errors": 2' in status.stdout
        for args in (["run", "--once"], ["backup"]):
            res = run_cli(home, *args)
            assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 1, res.stderr
        os.remove(filler)
        assert run_cli(home, "run", "--once").returncode == 0
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_two_restores_in_one_second_keep_both_replaced_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    paths = resolve(str(home))
    assert run_cli(home, "enqueue", "decision", '{"decision_id":"d1","title":"t","decision":"d"}').returncode == 0
    assert run_cli(home, "run", "--once").returncode == 0
    snap = tmp_path / "snap"
    assert run_cli(home, "backup", "--into", str(snap)).returncode == 0
    for _ in range(3):
        res = run_cli(home, "restore", str(snap), "--tier", "org", "--no-catch-up")
        assert res.returncode == 0, res.stderr
    kept = [p for p in os.listdir(paths.db_dir) if p.startswith("org.db.before-restore-") and not p.endswith(("-wal", "-shm"))]
    assert len(kept) == 3, kept


@pytest.mark.parametrize(("args", "why"), [
    (["run", "--poll", "1e400"], "argument --poll: '1e400': expected a finite number of seconds above 0"),
    (["run", "--poll", "nan"], "argument --poll: 'nan': expected a finite number of seconds above 0"),
    (["run", "--poll", "-1"], "argument --poll: '-1': expected a finite number of seconds above 0"),
    (["run", "--batch", "0"], "argument --batch: '0': expected 1 to 10000000"),
    (["run", "--rotate-bytes", "x"], "argument --rotate-bytes: 'x' is not a whole number"),
    (["status", "--watch", "--interval", "inf"], "argument --interval: 'inf': expected a finite number of seconds above 0"),
    (["sync", "push", "--batch", "-5"], "argument --batch: '-5': expected 1 to 10000000"),
])
def test_a_number_option_out_of_its_range_is_a_usage_error(home: Path, args: list[str], why: str) -> None:
    """Before, an infinite --poll ended the consumer in an internal error once it waited,
    and NaN or negative values were taken silently."""
    res = run_cli(home, *args, timeout=30)
    assert res.returncode == 2 and res.stderr.rstrip().endswith(why), res.stderr


def test_a_huge_unknown_operation_name_is_cut_in_the_message(home: Path) -> None:
    res = run_cli(home, "enqueue", "x" * 20_000, "{}")
    assert res.returncode == 2 and "unknown operation 'xxx" in res.stderr
    assert len(res.stderr) < 2_000, len(res.stderr)  # the name once, cut, not 20 kB twice


def test_status_says_when_the_last_error_was_recorded(tmp_path: Path) -> None:
    """The last error stays the last one after its cause is gone: its age tells a user whether
    it is news. A time the log does not hold as its writer does (text, NaN) adds nothing."""
    import time

    from codi_queue.consumer.status import collect, render_human

    home = tmp_path / "home"
    assert run_cli(home, "run", "--once").returncode == 0
    paths = resolve(str(home))
    report = collect(paths)
    for ts, shown in ((time.time() - 300, " (5 min ago, "), (time.time() - 30, "s ago, "), ("soon", None),
                      (float("nan"), None), (1e300, None)):
        report["last_error"] = {"message": "disk full", "ts": ts}
        line = render_human(report, str(home)).splitlines()[-1]
        if shown is None:
            assert line == "last error       disk full", line
        else:
            assert line.startswith("last error       disk full") and shown in line, line
