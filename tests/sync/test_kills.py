"""kill -9 of the pusher at random moments, under load: every row in PostgreSQL once, none missing.

``CODI_SYNC_KILLS`` sets how many pushers die (``make reliability``: 200).
The consumer runs meanwhile (``--no-push``: the pushers under test do all the
pushing, each finding the backlog the previous one left).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from codi_queue.queue.spool import Spool, lane_inbox, lane_lock
from tests.conftest import cli_env, query, run_cli, wait_until
from tests.pgserver import PgServer
from tests.test_lanes import held

from .conftest import configure, team_rows

KILLS = int(os.environ.get("CODI_SYNC_KILLS", "10"))


def _acked(ack: Path) -> set[str]:
    return {line.split()[1] for line in ack.read_text().splitlines() if line.startswith("e ")}


def test_pushers_killed_at_random_moments_lose_and_duplicate_nothing(
    home: Path, tmp_path: Path, pg: PgServer, team: str
) -> None:
    paths = configure(home, team, "alice")
    rng = random.Random(int(os.environ.get("CODI_SEED", "20261122")))
    consumer = subprocess.Popen(
        [sys.executable, "-m", "codi_queue", "run", "--poll", "0.1", "--batch", "50", "--rotate-bytes", "20000",
         "--no-push"],
        env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    count = 1500 + 40 * KILLS
    producers = []

    def start(i: int) -> None:
        ack = tmp_path / f"ack-{i}"
        proc = subprocess.Popen([sys.executable, "-m", "tests.procs", "producer", str(home), str(i), str(count), str(ack)],
                                env=cli_env(home), stderr=subprocess.PIPE)
        producers.append((proc, ack))

    # Two lanes, each pushed from its own place: the first producer finds lane 0 busy and
    # takes lane 1; the second finds lane 0 free.
    os.makedirs(paths.spool, mode=0o700, exist_ok=True)
    with held(lane_lock(paths.spool, 0)):
        start(0)
        wait_until(lambda: os.path.exists(lane_inbox(paths.spool, 1)), 60, "the first producer to take lane 1")
    start(1)
    kills = finished = 0
    try:
        while kills < KILLS:
            pusher = subprocess.Popen([sys.executable, "-m", "codi_queue", "sync", "push", "--batch", "97"],
                                      env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                _, err = pusher.communicate(timeout=rng.uniform(0.1, 1.0))
                assert pusher.returncode == 0, err
                finished += 1
            except subprocess.TimeoutExpired:
                pusher.send_signal(signal.SIGKILL)
                pusher.communicate()
                kills += 1
        for proc, _ in producers:
            assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
        acked = {f"p{i}-{s}" for i, (_, ack) in enumerate(producers) for s in _acked(ack)}
        sql = "SELECT count(*) FROM tool_events"
        wait_until(lambda: query(paths, "sessions", sql)[0][0] == len(acked), 120, "the consumer to apply every ack")
    finally:
        for proc, _ in producers:
            if proc.poll() is None:
                proc.kill()
        consumer.send_signal(signal.SIGTERM)
        _, consumer_err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, consumer_err
    final = run_cli(home, "sync", "push")
    assert final.returncode == 0, final.stderr

    local = {r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events")}
    assert local == acked
    rows = team_rows(team, "SELECT tool_use_id, op_id FROM sessions.tool_events")
    assert {r[0] for r in rows} == acked, "lost rows"
    assert len(rows) == len(acked) == len({r[1] for r in rows}), "duplicated rows"
    # Every committed batch counted what it sent: a batch sent twice would count its rows twice.
    sent = team_rows(team, "SELECT operations FROM codi_queue.push_cursors WHERE machine = 'alice' AND tier = 'sessions'")
    assert sent == [(len(acked),)]
    local_tasks = sorted(query(paths, "project", "SELECT task_id, title, op_id FROM tasks"))
    assert sorted(team_rows(team, "SELECT task_id, title, op_id FROM project.tasks")) == local_tasks
    lanes = {qd.lane for qd in Spool(paths.spool, paths.archive).journal()}
    assert lanes == {0, 1}
    print(f"\nsync kills: {kills} pushers killed, {finished} finished, {len(acked)} acknowledged in 2 lanes, "
          f"{len(rows)} rows in PostgreSQL, 0 lost, 0 duplicated")


def test_a_server_crash_mid_push_loses_and_duplicates_nothing(home: Path, pg: PgServer, team: str) -> None:
    """PostgreSQL stopped with ``-m immediate`` (a crash: no shutdown checkpoint) while a push runs."""
    from codi_queue.consumer.loop import Consumer
    from codi_queue.producers.api import enqueue_many

    paths = configure(home, team, "alice")
    for start in range(0, 20_000, 5_000):
        enqueue_many("tool_event", [{"tool_name": "Bash", "success": True, "tool_use_id": f"t{i}"}
                                    for i in range(start, start + 5_000)], home=str(home))
    Consumer(paths).run(once=True)
    pusher = subprocess.Popen([sys.executable, "-m", "codi_queue", "sync", "push", "--batch", "300"],
                              env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def some_pushed() -> bool:
        try:
            return bool(team_rows(team, "SELECT count(*) FROM sessions.tool_events")[0][0])
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            return False

    wait_until(some_pushed, 60, "the push to start")
    pg.stop("immediate")
    _, err = pusher.communicate(timeout=60)
    pg.start()
    assert pusher.returncode in (0, 1), err  # done just before the crash, or one line saying why
    print(f"\npusher at the crash: exit {pusher.returncode}: {err.strip()}")
    assert "Traceback" not in err
    again = run_cli(home, "sync", "push")
    assert again.returncode == 0, again.stderr
    rows = team_rows(team, "SELECT count(*), count(DISTINCT tool_use_id) FROM sessions.tool_events")
    assert rows == [(20_000, 20_000)]
    sent = team_rows(team, "SELECT operations FROM codi_queue.push_cursors WHERE machine = 'alice' AND tier = 'sessions'")
    assert sent == [(20_000,)]
