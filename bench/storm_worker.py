"""One producer process of the write storm: ``python bench/storm_worker.py METHOD TARGET N OUT GO [BUSY_S]``.

Writes N events the way METHOD does, times each call, and writes a JSON
summary to OUT (with the CPU the calls took). All workers wait for the file
GO so they start together. BUSY_S, for the physical floor only: CPU seconds
spent in a busy loop before each append (the floor spending our CPU per event).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time

FLOOR = "fdatasync-append"
INSERT = "INSERT INTO tool_events (timestamp, tool_name, success, duration_ms, context) VALUES (?, ?, ?, ?, ?)"


def main() -> int:
    method, target, n, out, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    busy = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    ident = os.getpid()
    write = _writer(method, target, busy)
    while not os.path.exists(go):
        time.sleep(0.001)
    lat: list[float] = []
    errors: list[str] = []
    acked = 0
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        try:
            write(f"{ident}-{i}")
            acked += 1
        except Exception as exc:  # noqa: BLE001 - counting every way a direct writer fails is the point
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
        lat.append(time.perf_counter() - t0)
    cpu = time.process_time() - cpu0
    with open(out, "w") as fp:
        json.dump({"lat": lat, "errors": errors, "acked": acked, "cpu": cpu}, fp)
    return 0


def _writer(method: str, target: str, busy: float = 0.0):  # type: ignore[no-untyped-def]
    if method == "codi-queue":
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from codi_queue import enqueue

        def w(key: str) -> None:
            if not enqueue("tool_event", {"tool_name": "storm", "success": True, "tool_use_id": key}, home=target):
                raise OSError("enqueue returned False")
        return w
    if method in ("direct-wal", "direct-rollback", "direct-wal-full", "direct-wal-normal"):
        # direct-wal and direct-rollback: what the platform's scripts do today (the
        # connection's default synchronous); the other two set it explicitly.
        sync = {"direct-wal-full": "FULL", "direct-wal-normal": "NORMAL"}.get(method)

        def w(key: str) -> None:
            conn = sqlite3.connect(target, timeout=5)
            try:
                if sync:
                    conn.execute(f"PRAGMA synchronous={sync}")
                conn.execute(INSERT, (int(time.time()), "storm", 1, 0, key))
                conn.commit()
            finally:
                conn.close()
        return w
    if method == FLOOR:
        # The physical floor of one acknowledged write: an append of an operation's size to a file of
        # this process's own, fdatasync'd before the call returns. No lock, no encoding, no index.
        fd = os.open(os.path.join(target, f"floor-{os.getpid()}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        flush = os.fdatasync if hasattr(os, "fdatasync") else os.fsync  # macOS has no fdatasync (as codi_queue.fsutil.sync_data)

        def w(key: str) -> None:
            if busy:
                until = time.process_time() + busy
                while time.process_time() < until:
                    pass
            os.write(fd, key.encode().ljust(240, b" ") + b"\n")
            flush(fd)
        return w
    if method == "retry-immediate":
        def w(key: str) -> None:
            conn = sqlite3.connect(target, timeout=0.1, isolation_level=None)
            try:
                for attempt in range(15):
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                        conn.execute(INSERT, (int(time.time()), "storm", 1, 0, key))
                        conn.execute("COMMIT")
                        return
                    except sqlite3.OperationalError:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        if attempt == 14:
                            raise
                        time.sleep(random.uniform(0.02, 0.15))
            finally:
                conn.close()
        return w
    if method == "sqliteackqueue":
        import persistqueue
        from persistqueue.serializers import json as json_serializer

        q = persistqueue.SQLiteAckQueue(target, serializer=json_serializer, multithreading=True, auto_commit=True)

        def w(key: str) -> None:
            q.put({"key": key})
        return w
    raise SystemExit(f"unknown method {method}")


if __name__ == "__main__":
    sys.exit(main())
