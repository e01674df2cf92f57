"""Kill -9 of real processes at random moments: nothing acknowledged is lost or applied twice.

The quick versions run in the default suite; ``CODI_CRASH_ROUNDS`` scales
them up (the long runs in ``tests/reliability`` use it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from codi_queue.paths import Paths, resolve
from codi_queue.queue.spool import Spool, lane_inbox, lane_lock

from .conftest import cli_env, query, run_cli, wait_until

ROUNDS = int(os.environ.get("CODI_CRASH_ROUNDS", "1"))


def _spawn_producers(home: Path, tmp: Path, n: int, count: int) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """Producers that spread over lanes: lane 0 is held until one of them has taken lane 1."""
    from .test_lanes import held

    procs = {}
    spool = resolve(str(home)).spool
    os.makedirs(spool, mode=0o700, exist_ok=True)
    with held(lane_lock(spool, 0)):
        for i in range(n):
            ack = tmp / f"ack-{i}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.procs", "producer", str(home), str(i), str(count), str(ack)],
                env=cli_env(home),
                stderr=subprocess.PIPE,
            )
            procs[str(i)] = (proc, ack)
        wait_until(lambda: os.path.exists(lane_inbox(spool, 1)) or any(p.poll() is not None for p, _ in procs.values()),
                   60, "a producer to take lane 1", interval=0.001)
    return procs


def _lanes_used(paths: Paths) -> int:
    return len({qd.lane for qd in Spool(paths.spool, paths.archive).journal()})


def _start_consumer(home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "codi_queue", "run", "--poll", "0.1", "--batch", "7", "--rotate-bytes", "3000"],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


MIN_KILLS = 8


def _kill_consumer_until_done(home: Path, producers: list[subprocess.Popen[bytes]], rng: random.Random,
                              deadline: float, kill_producers: bool = False) -> tuple[int, set[int]]:
    """Start and SIGKILL the consumer until the producers are done and it died at least MIN_KILLS times.

    Kills after the producers finish land while it drains the backlog.
    """
    kills = 0
    killed_producers: set[int] = set()
    if kill_producers:
        # One producer dies mid-enqueue in every round, early, while all are writing: with lanes they
        # no longer queue on one lock, and most rounds finished before the kills below reached one.
        time.sleep(rng.uniform(0.0, 0.12))
        alive = [i for i, p in enumerate(producers) if p.poll() is None]
        if alive:
            victim = rng.choice(alive)
            producers[victim].send_signal(signal.SIGKILL)
            killed_producers.add(victim)
    while kills < MIN_KILLS or any(p.poll() is None for p in producers):
        assert time.monotonic() < deadline, "crash loop ran out of time"
        consumer = _start_consumer(home)
        time.sleep(rng.uniform(0.05, 0.6))
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=30)
        kills += 1
        if kill_producers and rng.random() < 0.5:
            alive = [i for i, p in enumerate(producers) if p.poll() is None]
            if alive:
                victim = rng.choice(alive)
                producers[victim].send_signal(signal.SIGKILL)
                killed_producers.add(victim)
    return kills, killed_producers


def _acks(path: Path) -> tuple[set[int], list[int]]:
    events: set[int] = set()
    tasks: list[int] = []
    if not path.exists():
        return events, tasks
    for line in path.read_text().splitlines():
        kind, seq = line.split()
        (events.add(int(seq)) if kind == "e" else tasks.append(int(seq)))
    return events, tasks


def _check_exactly_once(paths: Paths, acked: dict[str, tuple[set[int], list[int]]], count: int,
                        killed: set[str]) -> int:
    rows = query(paths, "sessions", "SELECT tool_use_id FROM tool_events WHERE tool_use_id IS NOT NULL")
    counts = Counter(r[0] for r in rows)
    duplicates = {k: v for k, v in counts.items() if v != 1}
    assert not duplicates, f"applied more than once: {list(duplicates.items())[:10]}"
    titles = dict(query(paths, "project", "SELECT task_id, title FROM tasks"))
    for ident, (events, tasks) in acked.items():
        present = {int(k.split("-")[1]) for k in counts if k.startswith(f"p{ident}-")}
        lost = events - present
        assert not lost, f"producer {ident}: acknowledged but lost: {sorted(lost)[:20]}"
        assert present <= set(range(count)), f"producer {ident}: rows nobody enqueued"
        if tasks:
            final = int(titles[f"p{ident}"])
            if ident in killed:
                assert final >= tasks[-1], f"producer {ident}: upsert went backwards"
            else:
                # G6: operations from one producer apply in order; the last upsert wins.
                assert final == tasks[-1], f"producer {ident}: final title {final}, last enqueued {tasks[-1]}"
    return len(rows)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_consumer_killed_in_a_loop_while_eight_producers_enqueue(tmp_path: Path, home: Path, paths: Paths,
                                                                  round_: int) -> None:
    rng = random.Random(round_ * 7919 + os.getpid())
    count = 300
    procs = _spawn_producers(home, tmp_path, 8, count)
    kills, _ = _kill_consumer_until_done(home, [p for p, _ in procs.values()], rng, time.monotonic() + 240)
    for ident, (proc, _) in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"producer {ident} failed: {err.decode()[-2000:]}"
    assert kills >= MIN_KILLS
    final = run_cli(home, "run", "--once", timeout=120)
    assert final.returncode == 0, final.stderr
    acked = {i: _acks(ack) for i, (_, ack) in procs.items()}
    assert all(len(a[0]) == count for a in acked.values())
    assert _check_exactly_once(paths, acked, count, set()) == 8 * count
    print(f"crash-consumer: {kills} consumer SIGKILLs, {8 * count} acknowledged over {_lanes_used(paths)} lanes, "
          "lost 0, duplicates 0")
    status = run_cli(home, "status", "--json")
    assert '"pending": 0' in status.stdout and '"dead_letters": 0' in status.stdout


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_producers_and_consumer_killed_at_random(tmp_path: Path, home: Path, paths: Paths, round_: int) -> None:
    rng = random.Random(round_ * 104729 + os.getpid())
    count = 600  # producers must still be writing when the kills start (lanes made 150 finish first)
    procs = _spawn_producers(home, tmp_path, 8, count)
    popens = [p for p, _ in procs.values()]
    kills, killed = _kill_consumer_until_done(home, popens, rng, time.monotonic() + 240, kill_producers=True)
    for proc in popens:
        proc.communicate(timeout=60)
    # The queue still accepts and drains after all that.
    assert run_cli(home, "enqueue", "tool_event", '{"tool_name":"after","success":true}').returncode == 0
    final = run_cli(home, "run", "--once", timeout=120)
    assert final.returncode == 0, final.stderr
    acked = {i: _acks(ack) for i, (_, ack) in procs.items()}
    rows = _check_exactly_once(paths, acked, count, {str(k) for k in killed})
    assert query(paths, "sessions", "SELECT count(*) FROM tool_events WHERE tool_name = 'after'") == [(1,)]
    total = sum(len(a[0]) for a in acked.values())
    print(f"crash-both: {kills} consumer SIGKILLs, {len(killed)} producer SIGKILLs, {total} acknowledged over "
          f"{_lanes_used(paths)} lanes, "
          f"{rows} rows, lost 0, duplicates 0")
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_replay_killed_mid_way_then_run_again_applies_everything_once(home: Path, paths: Paths, round_: int) -> None:
    import apsw

    from codi_queue.consumer.loop import Consumer
    from codi_queue.producers.api import enqueue_many

    rng = random.Random(round_ * 31 + os.getpid())
    consumer = Consumer(paths, rotate_bytes=1)
    for i in range(40):
        enqueue_many("tool_event", [{"tool_name": f"r{i}-{j}", "success": True} for j in range(25)], home=str(home))
        if i % 4 == 3:
            consumer.run(once=True)  # 10 archived segments
    consumer.run(once=True)
    conn = apsw.Connection(paths.database("sessions"))
    conn.execute("DELETE FROM tool_events")  # lost: only the archive has them now
    conn.close()
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "replay", "--from-archive"], env=cli_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The consumer is killed too, now and then, while it applies a partial replay.
        runner = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--once"], env=cli_env(home),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.3))
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    assert run_cli(home, "replay", "--from-archive").returncode == 0
    assert run_cli(home, "run", "--once", timeout=120).returncode == 0
    names = [r[0] for r in query(paths, "sessions", "SELECT tool_name FROM tool_events")]
    assert len(names) == 1000 and len(set(names)) == 1000
    print("crash-replay: 4 replay SIGKILLs, 4 consumer SIGKILLs, 1000 acknowledged, lost 0, duplicates 0")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_consumer_killed_while_a_large_first_batch_is_written(tmp_path: Path, round_: int) -> None:
    """The live-inbox shape: the first write of a fresh home (and of each new inbox) is a
    multi-MiB batch while the consumer is killed and restarted; nothing acked may be lost."""
    from .conftest import tool_event_lines

    rng = random.Random(round_ * 613 + os.getpid())
    home = tmp_path / "home"
    paths = resolve(str(home))
    batches = [20_000, 1, 8_000]
    kills = 0
    for n, lines in enumerate(batches):
        producer = subprocess.Popen([sys.executable, "-m", "codi_queue", "enqueue", "tool_event", "-"],
                                    env=cli_env(home), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert producer.stdin is not None
        producer.stdin.write(tool_event_lines(lines, f"b{n}").encode())
        producer.stdin.close()
        while producer.poll() is None or kills < 3 * (n + 1):
            consumer = subprocess.Popen(
                [sys.executable, "-m", "codi_queue", "run", "--poll", "0.02", "--rotate-bytes", "1"],
                env=cli_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.05, 0.5))
            consumer.send_signal(signal.SIGKILL)
            consumer.wait(timeout=30)
            kills += 1
        assert producer.wait(timeout=120) == 0, producer.stderr.read() if producer.stderr else ""
    assert run_cli(home, "run", "--once", timeout=300).returncode == 0
    total = sum(batches)
    assert query(paths, "sessions", "SELECT count(*), count(DISTINCT tool_use_id) FROM tool_events") == [(total, total)]
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    print(f"crash-first-batch: {kills} consumer SIGKILLs during large first writes, {total} acknowledged, "
          "lost 0, duplicates 0")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_threads_of_producer_processes_with_the_consumer_killed_at_random(tmp_path: Path, home: Path, paths: Paths,
                                                                          round_: int) -> None:
    """Threads of one process enqueue through one lane and one lock descriptor, which flock
    does not tell apart: before the spool excluded them itself, 8 threads × 500 enqueues lost
    operations to damage, made dead letters and had enqueue fail (bug 33)."""
    from .procs import THREADS

    rng = random.Random(round_ * 15485863 + os.getpid())
    count = 150
    procs = {}
    for i in range(3):
        ack = tmp_path / f"ack-{i}"
        procs[str(i)] = (subprocess.Popen([sys.executable, "-m", "tests.procs", "threaded", str(home), str(i),
                                           str(count), str(ack)], env=cli_env(home), stderr=subprocess.PIPE), ack)
    popens = [p for p, _ in procs.values()]
    kills, killed = _kill_consumer_until_done(home, popens, rng, time.monotonic() + 240, kill_producers=True)
    for ident, (proc, _) in procs.items():
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 or int(ident) in killed, f"producer {ident} failed: {err.decode()[-2000:]}"
    final = run_cli(home, "run", "--once", timeout=120)
    assert final.returncode == 0, final.stderr
    acked = {f"{i}t{t}": _acks(Path(f"{ack}.{t}")) for i, (_, ack) in procs.items() for t in range(THREADS)}
    killed_threads = {f"{i}t{t}" for i in killed for t in range(THREADS)}
    assert all(len(a[0]) == count for name, a in acked.items() if name not in killed_threads)
    rows = _check_exactly_once(paths, acked, count, killed_threads)
    print(f"crash-threads: {kills} consumer SIGKILLs, {len(killed)} producer SIGKILLs, "
          f"{sum(len(a[0]) for a in acked.values())} acknowledged by {len(acked)} threads, {rows} rows, "
          "lost 0, duplicates 0")
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_tailer_killed_at_random_stores_each_line_without_a_timestamp_once(tmp_path: Path, home: Path, paths: Paths,
                                                                          round_: int) -> None:
    """The consumer tails a legacy file whose lines carry no timestamp (so each row's time is the
    time of reading) and is SIGKILLed at random: a line read again must get the same id, so every
    line is stored once. The window bug 43 needed (between the append and the offset) is too
    narrow for random kills to find on the old code; test_jsonl's lost-offset case reproduces
    it deterministically. This loop holds the fix under real kills."""
    import json

    rng = random.Random(round_ * 7919 + os.getpid())
    src = tmp_path / "tool-usage.jsonl"
    src.write_text("")
    home.mkdir(mode=0o700)
    Path(paths.config).write_text(f'[watch.jsonl]\n"{src}" = "auto"\n')
    Path(paths.config).chmod(0o600)
    total, kills = 0, 0
    deadline = time.monotonic() + 300
    while kills < MIN_KILLS:
        assert time.monotonic() < deadline, "crash loop ran out of time"
        consumer = _start_consumer(home)
        with src.open("a") as fp:  # a burst while it runs: reads, appends and offsets in flight
            for _ in range(rng.randint(20, 200)):
                fp.write(json.dumps({"tool": f"t{total}", "success": True}) + "\n")
                total += 1
        time.sleep(rng.uniform(0.05, 0.6))  # a random moment to kill it: the loop's timing, not a wait for a state
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=30)
        kills += 1
        time.sleep(rng.uniform(0.0, 1.1))  # a re-read lands in another second, often: ids used to carry it
    assert run_cli(home, "run", "--once", timeout=300).returncode == 0
    assert query(paths, "sessions", "SELECT count(*), count(DISTINCT tool_name) FROM tool_events") == [(total, total)]
    assert query(paths, "sessions", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    print(f"crash-tailer: {kills} consumer SIGKILLs while tailing lines without a timestamp, {total} lines, "
          "lost 0, duplicates 0")
