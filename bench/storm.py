"""Write storm: 16 producer processes at once while a dashboard reader holds long read transactions.

Compares codi-queue's enqueue with how the platform writes today: a direct
sqlite3 connect/insert/commit/close per event (WAL and rollback journal),
BEGIN IMMEDIATE with up to 15 retries and 20-150 ms jitter, and persist-queue's
SQLiteAckQueue drained into the same table. Reports producer latency, errors,
events lost (attempted minus stored once everything drained) and the time
until every event is queryable.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, Row, host_steal_s, median, ms, pct, tmpdir  # noqa: E402
from bench.storm_worker import FLOOR  # noqa: E402

PRODUCERS = 16
LANE_CONTROL = "codi-queue-1-lane"  # the same with CODI_QUEUE_LANES=1: what lanes change
# Our floor on this machine: the same producers with no consumer running (every operation waits in
# the spool; one `run --once` applies them after the last producer returns). What the producers'
# own CPU and syncs cost when 16 of them share the cores, with nothing else running.
PRODUCERS_ALONE = "codi-queue-producers-alone"
# The physical floor (FLOOR, from the worker): 16 processes each appending an operation's size to a
# file of its own and fdatasyncing it, with the same reader running. Nothing durable is faster here.
# The same floor spending, before each append, as much CPU as our enqueue took per event in this
# run: what our CPU costs on these cores, apart from how the queue is built (docs/benchmarks.md,
# session 10: on this class of machine the host pauses the whole VM every 100 ms while its CPUs
# are busy and its disk syncs thousands of times a second, and CPU per event decides how many
# calls those pauses meet).
FLOOR_WITH_OUR_CPU = f"{FLOOR}-with-our-cpu"
SCHEMA = ("CREATE TABLE IF NOT EXISTS tool_events (id INTEGER PRIMARY KEY, timestamp INT NOT NULL, "
          "tool_name TEXT NOT NULL, success INT NOT NULL, duration_ms INT, error_message TEXT, context TEXT)")


def _reader(db: str, stop: threading.Event) -> None:
    """A dashboard: repeated long read transactions on the table producers write."""
    while not stop.is_set():
        try:
            conn = sqlite3.connect(db, timeout=5, isolation_level=None)
            conn.execute("BEGIN")
            conn.execute("SELECT tool_name, count(*) FROM tool_events GROUP BY tool_name").fetchall()
            stop.wait(0.5)
            conn.execute("COMMIT")
            conn.close()
        except sqlite3.OperationalError:
            stop.wait(0.05)


def _count(db: str, column: str = "context") -> int:
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return int(conn.execute(f"SELECT count(DISTINCT {column}) FROM tool_events").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def _appended(floor_dir: str) -> int:
    """Lines the physical-floor writers appended (each one event)."""
    total = 0
    for name in os.listdir(floor_dir):
        with open(os.path.join(floor_dir, name), "rb") as fp:
            total += fp.read().count(b"\n")
    return total


def _ackqueue_drain(queue_path: str, db: str, stop: threading.Event) -> None:
    import persistqueue
    from persistqueue.serializers import json as json_serializer

    q = persistqueue.SQLiteAckQueue(queue_path, serializer=json_serializer, multithreading=True, auto_commit=True)
    conn = sqlite3.connect(db, timeout=30)
    while True:
        try:
            item = q.get(block=True, timeout=0.2)
        except persistqueue.Empty:
            if stop.is_set():
                break
            continue
        conn.execute("INSERT INTO tool_events (timestamp, tool_name, success, context) VALUES (?, 'storm', 1, ?)",
                     (int(time.time()), item["key"]))
        conn.commit()
        q.ack(item)
    conn.close()


def run_method(method: str, per_producer: int, busy_s: float = 0.0) -> dict[str, object]:
    work = tmpdir(f"storm-{method}")
    go = os.path.join(work, "go")
    home = os.path.join(work, "home")
    default_sync = 2  # codi-queue acknowledges after its fsyncs
    ours = method.startswith("codi-queue")
    worker_env = dict(os.environ)
    if method == LANE_CONTROL:
        worker_env["CODI_QUEUE_LANES"] = "1"  # every producer behind the one lock, as before lanes
    if ours:
        from codi_queue.paths import resolve

        db = resolve(home).database("sessions")
        target = home
        env = dict(os.environ, CODI_QUEUE_HOME=home)
        subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=env, check=True, capture_output=True)
        consumer = None if method == PRODUCERS_ALONE else subprocess.Popen(
            [sys.executable, "-m", "codi_queue", "run", "--poll", "0.5"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        column = "tool_use_id"
    else:
        db = os.path.join(work, "sessions.db")
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=" + ("DELETE" if method == "direct-rollback" else "WAL"))
        default_sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
        conn.execute(SCHEMA)
        conn.commit()
        conn.close()
        target = {"sqliteackqueue": os.path.join(work, "ackqueue"), FLOOR: os.path.join(work, "floor")}.get(method, db)
        if method == FLOOR:
            os.mkdir(target)
        consumer = None
        column = "context"
    sync_level = {"direct-wal-full": 2, "direct-wal-normal": 1, FLOOR: 2}.get(method, default_sync)
    stop_reader = threading.Event()
    reader = threading.Thread(target=_reader, args=(db, stop_reader))
    reader.start()
    stop_drain = threading.Event()
    drain = None
    if method == "sqliteackqueue":
        drain = threading.Thread(target=_ackqueue_drain, args=(target, db, stop_drain))
        drain.start()
    outs = [os.path.join(work, f"out-{i}.json") for i in range(PRODUCERS)]
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "storm_worker.py"),
                               "codi-queue" if ours else method, target, str(per_producer), outs[i], go, str(busy_s)],
                              env=worker_env) for i in range(PRODUCERS)]
    time.sleep(0.5)  # let every worker import and wait at the gate
    steal0 = host_steal_s()
    t0 = time.perf_counter()
    open(go, "w").close()
    for p in procs:
        p.wait(timeout=1800)
    storm_s = time.perf_counter() - t0
    steal1 = host_steal_s()
    attempted = PRODUCERS * per_producer
    results = [json.load(open(o)) for o in outs]
    acked = sum(r["acked"] for r in results)
    if method == PRODUCERS_ALONE:
        subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=env, check=True, capture_output=True)
    deadline = time.monotonic() + 300
    while method != FLOOR and _count(db, column) < acked and time.monotonic() < deadline:
        time.sleep(0.02)
    queryable = time.perf_counter() - t0
    stop_drain.set()
    if drain is not None:
        drain.join(timeout=600)
    stop_reader.set()
    reader.join(timeout=60)
    if consumer is not None:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    lanes = len([n for n in os.listdir(os.path.join(home, "spool")) if n.startswith("inbox")
                 and not n.endswith(".lock")]) if ours else 0
    lat = [x for r in results for x in r["lat"]]
    errors = sum(len(r["errors"]) for r in results)
    stored = _appended(target) if method == FLOOR else _count(db, column)
    return {"method": method, "p50": median(lat), "p99": pct(lat, 99), "max": max(lat), "errors": errors,
            "lost": attempted - stored, "attempted": attempted, "queryable_s": queryable,
            "sample_error": next((e for r in results for e in r["errors"]), ""),
            # synchronous=FULL (2) commits fsync the WAL (or journal) before returning; NORMAL (1) in WAL
            # mode does not. codi-queue acknowledges after its fsyncs; SQLiteAckQueue commits with FULL.
            "durable": sync_level >= 2, "synchronous": sync_level, "lanes": lanes, "storm_s": storm_s,
            "cpu_per_event": sum(float(r["cpu"]) for r in results) / attempted,
            "steal_s": None if steal0 is None or steal1 is None else steal1 - steal0}


def run(quick: bool = False) -> list[Row]:
    per = 40 if quick else 300  # the storm: 16 producers × 300 events (16 × 150 until session 9)
    methods = ["codi-queue", LANE_CONTROL, PRODUCERS_ALONE, FLOOR, "direct-wal", "direct-wal-full", "direct-wal-normal", "direct-rollback",
               "retry-immediate", "sqliteackqueue"]
    res = {m: run_method(m, per) for m in methods}
    ours = res["codi-queue"]
    res[FLOOR_WITH_OUR_CPU] = run_method(FLOOR, per, busy_s=float(ours["cpu_per_event"]))  # type: ignore[arg-type]
    methods.insert(methods.index(FLOOR) + 1, FLOOR_WITH_OUR_CPU)
    rows = []
    for m in methods:
        r = res[m]
        ratio = "" if m == "codi-queue" else f"{float(r['p99']) / float(ours['p99']):.1f}× ours"  # type: ignore[arg-type]
        durable = "durable on return" if r["durable"] else "NOT durable on return"
        used = f", {r['lanes']} lanes used" if r["lanes"] else ""
        paused = "" if r["steal_s"] is None else f", host took {float(r['steal_s']) * 1000:.0f} ms"  # type: ignore[arg-type]
        rows.append(Row(
            f"storm {PRODUCERS}×{per}: {m} (synchronous={r['synchronous']}, {durable}{used})",
            f"p50 {ms(r['p50'])}, p99 {ms(r['p99'])}, max {ms(r['max'])}, "  # type: ignore[arg-type]
            f"CPU {float(r['cpu_per_event']) * 1e6:.0f} µs/event",  # type: ignore[arg-type]
            f"errors {r['errors']}, lost {r['lost']}/{r['attempted']}, storm {float(r['storm_s']):.2f} s{paused}, "  # type: ignore[arg-type]
            f"queryable {r['queryable_s']:.1f} s",
            ratio,
            "0 errors, 0 lost, p99 ≥10× lower than direct" if m == "codi-queue" else "",
        ))
    return rows


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
