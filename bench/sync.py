"""Team sync against a real local PostgreSQL (started here): push throughput, push lag, an outage.

- Throughput: ``Pusher.push`` of a drained 1 M mixed-op journal, against the
  floor: psycopg COPY of the same rows (already decoded, no journal) into the
  same tables, in the same run.
- Lag: the consumer runs with ``[sync]``; paced producers enqueue 1,000 ops/s;
  one loop polls the local table and PostgreSQL and times, per operation,
  local commit (first seen locally) to visible in PostgreSQL.
- Outage: the server is stopped for a while under load; local lag is measured
  before and during it, then the time the backlog takes to reach PostgreSQL
  after the restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import ROOT, Row, median, ms, pct, tmpdir  # noqa: E402
from bench.drain import fill  # noqa: E402


def _configure(home: str, url: str, machine: str) -> Any:
    from codi_queue.paths import resolve

    os.makedirs(home, mode=0o700, exist_ok=True)
    paths = resolve(home)
    fd = os.open(paths.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fp:
        fp.write(f'[sync]\nurl = "{url}"\nmachine = "{machine}"\n')
    return paths


def throughput(pg: Any, total: int) -> tuple[float, float, int]:
    """(push ops/s, COPY floor rows/s, operations)."""
    import psycopg

    from codi_queue.config import load_config
    from codi_queue.consumer.loop import Consumer
    from codi_queue.schemas.postgres import tables
    from codi_queue.sync.push import Pusher
    from codi_queue.sync.teamdb import ensure_schema

    url = pg.url(pg.create_database("bench_push"))
    home = tmpdir("push")
    paths = _configure(home, url, "bench")
    fill(home, total)
    Consumer(paths).run(once=True)
    sync = load_config(paths).sync
    assert sync is not None
    t0 = time.perf_counter()
    with Pusher(paths, sync) as pusher:
        results = pusher.push()
    push_s = time.perf_counter() - t0
    n = sum(r.operations for r in results.values())

    # The floor: the rows the push sent, copied straight back in (fresh database, same DDL, same merge).
    floor_url = pg.url(pg.create_database("bench_floor"))
    with psycopg.connect(url) as src:
        data = {}
        for op, table in tables().items():
            names = ", ".join(f'"{c}"' for c in table.columns)
            data[op] = src.execute(f"SELECT {names} FROM {table.qualified}").fetchall()
    with psycopg.connect(floor_url) as conn:
        ensure_schema(conn)
        t0 = time.perf_counter()
        with conn.transaction():
            for op, rows in data.items():
                if not rows:
                    continue
                table = tables()[op]
                conn.execute(table.create_stage())
                with conn.cursor().copy(table.copy_stage()) as copy:
                    for row in rows:
                        copy.write_row(row)
                conn.execute(table.merge())
        floor_s = time.perf_counter() - t0
    rows_n = sum(len(r) for r in data.values())
    return n / push_s, rows_n / floor_s, n


def _watch(home: str, url: str, seconds: float, rate: int, procs: int,
           outage: tuple[Any, float, float] | None = None) -> dict[str, Any]:
    """Run a consumer with [sync] and paced producers; per op: enqueue→local and local→PostgreSQL."""
    import apsw
    import psycopg

    from codi_queue.paths import resolve

    env = dict(os.environ, CODI_QUEUE_HOME=home)
    subprocess.run([sys.executable, "-m", "codi_queue", "run", "--once"], env=env, check=True, capture_output=True)
    consumer = subprocess.Popen([sys.executable, "-m", "codi_queue", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    local = apsw.Connection(resolve(home).database("sessions"), flags=apsw.SQLITE_OPEN_READONLY)
    workers = [subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "lag_worker.py"), home,
                                 str(rate / procs), str(seconds), "1"], env=env) for _ in range(procs)]
    started = time.monotonic()
    seen: dict[str, float] = {}
    enqueue_to_local: list[tuple[float, float]] = []  # (seconds since start, lag)
    local_to_pg: list[float] = []
    pushed_at: list[float] = []
    team: Any = None
    last_local = last_pg = 0
    down = False
    restarted: float | None = None
    backlog_at_restart = 0
    caught_up: float | None = None
    end = time.monotonic() + seconds + 120
    done_at: float | None = None
    while time.monotonic() < end:
        now_rel = time.monotonic() - started
        if outage and not down and now_rel >= outage[1]:
            outage[0].stop()
            down = True
            if team is not None:
                team.close()
                team = None
        if outage and down and now_rel >= outage[1] + outage[2] and not outage[0].running():
            outage[0].start()
            restarted = time.monotonic() - started
            backlog_at_restart = len(enqueue_to_local)
        rows = local.execute("SELECT id, context FROM tool_events WHERE id > ? ORDER BY id", (last_local,)).fetchall()
        now = time.time()
        for rid, ctx in rows:
            seen[ctx] = now
            enqueue_to_local.append((now_rel, now - float(ctx)))
            last_local = rid
        try:
            if team is None:
                team = psycopg.connect(url, autocommit=True, connect_timeout=2)
            got = team.execute("SELECT id, context FROM sessions.tool_events WHERE id > %s ORDER BY id",
                               (last_pg,)).fetchall()
            now = time.time()
            for rid, ctx in got:
                if ctx in seen:
                    local_to_pg.append(now - seen[ctx])
                pushed_at.append(time.monotonic() - started)
                last_pg = rid
        except psycopg.Error:
            if team is not None:
                team.close()
            team = None
        if restarted is not None and caught_up is None and len(pushed_at) >= backlog_at_restart:
            caught_up = time.monotonic() - started - restarted  # PostgreSQL has all applied before the restart
        if done_at is None and all(w.poll() is not None for w in workers):
            done_at = time.monotonic()
        if done_at is not None and len(local_to_pg) >= len(enqueue_to_local) and enqueue_to_local:
            break
        time.sleep(0.005)
    local.close()
    if team is not None:
        team.close()
    consumer.send_signal(signal.SIGTERM)
    consumer.wait(timeout=60)
    return {"local": enqueue_to_local, "pg": local_to_pg, "pushed_at": pushed_at, "caught_up": caught_up}


def lag(pg: Any, seconds: float) -> dict[str, Any]:
    url = pg.url(pg.create_database("bench_lag"))
    home = tmpdir("pushlag")
    _configure(home, url, "bench")
    return _watch(home, url, seconds, 1000, 4)


def outage(pg: Any, seconds: float, down_after: float, down_for: float, push: bool = True) -> dict[str, Any]:
    """The same load and the same server stop, with the consumer pushing or (the control) not."""
    url = pg.url(pg.create_database("bench_outage"))
    with pg.admin() as conn:
        # The stop's shutdown checkpoint writes whatever is dirty: flushed now, so that both
        # runs (pushing and the control) meet a stop of the same weight.
        conn.execute("CHECKPOINT")
    home = tmpdir("outage")
    if push:
        _configure(home, url, "bench")
    return {**_watch(home, url, seconds, 200, 2, (pg, down_after, down_for)),
            "down": (down_after, down_after + down_for)}


def _during(out: dict[str, Any]) -> tuple[list[float], list[float]]:
    lo, hi = out["down"]
    return [x for t, x in out["local"] if t < lo], [x for t, x in out["local"] if lo <= t < hi]


def run(quick: bool = False) -> list[Row]:
    from tests.pgserver import PgServer

    pg = PgServer()
    try:
        total = 100_000 if quick else 1_000_000
        rate, floor, n = throughput(pg, total)
        lagged = lag(pg, 10.0 if quick else 20.0)
        down_for = 10.0 if quick else 60.0
        out = outage(pg, down_for + 20.0, 8.0, down_for)
        control = outage(pg, down_for + 20.0, 8.0, down_for, push=False)
    finally:
        pg.destroy()
    before, during = _during(out)
    _, control_during = _during(control)
    catch_up = out["caught_up"] if out["caught_up"] is not None else float("nan")
    pg_lag = lagged["pg"]
    return [
        Row(f"sync push, {n:,} mixed ops to a local PostgreSQL", f"{rate:,.0f} ops/s",
            f"COPY + merge of the same rows {floor:,.0f} rows/s", f"{rate / floor:.2f}× the floor",
            "≥ 50,000 ops/s"),
        Row(f"push lag at 1,000 ops/s ({len(pg_lag):,} ops), local commit → PostgreSQL",
            f"p50 {ms(median(pg_lag))}, p99 {ms(pct(pg_lag, 99))}", "", "", "p99 < 2 s"),
        Row(f"PostgreSQL down {down_for:.0f} s at 200 ops/s: local lag before / during",
            f"p99 {ms(pct(before, 99))} / {ms(pct(during, 99))}",
            f"same stop, consumer not pushing: p99 {ms(pct(control_during, 99))}",
            f"{pct(during, 99) / pct(control_during, 99):.2f}×", "local applies unaffected"),
        Row("everything applied before the restart is in PostgreSQL after", f"{catch_up:.1f} s", "", "",
            "backlog drained"),
    ]


if __name__ == "__main__":
    from bench.common import print_table

    print_table(run(quick="--quick" in sys.argv))
