"""Processes the crash tests start and kill: ``python -m tests.procs producer HOME ID COUNT ACKFILE``.

A producer writes an acknowledgement line only after ``enqueue`` returned
True, so the ack file is exactly the set of operations codi-queue promised
to keep. Events carry ``tool_use_id = p<ID>-<seq>``; every third seq also
upserts task ``p<ID>`` with title ``<seq>``; every fifth is a five-event batch.
"""

from __future__ import annotations

import os
import sys


def producer(home: str, ident: str, count: int, ackfile: str) -> int:
    from codi_queue import enqueue, enqueue_many

    ack = os.open(ackfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    seq = 0
    while seq < count:
        if seq % 5 == 4 and seq + 5 <= count:
            group = list(range(seq, seq + 5))
            ok = enqueue_many(
                "tool_event",
                [{"tool_name": "batch", "success": True, "tool_use_id": f"p{ident}-{s}"} for s in group],
                home=home,
            )
            if not ok:
                return 1
            os.write(ack, "".join(f"e {s}\n" for s in group).encode())
            seq += 5
            continue
        if not enqueue("tool_event", {"tool_name": "one", "success": True, "tool_use_id": f"p{ident}-{seq}"}, home=home):
            return 1
        os.write(ack, f"e {seq}\n".encode())
        if seq % 3 == 0:
            if not enqueue("task", {"task_id": f"p{ident}", "title": str(seq)}, home=home):
                return 1
            os.write(ack, f"t {seq}\n".encode())
        seq += 1
    os.close(ack)
    return 0


THREADS = 6


def threaded(home: str, ident: str, count: int, ackfile: str) -> int:
    """``THREADS`` producers as threads of this one process (a thread pool in an analyzer):
    thread T is producer ``<ID>t<T>`` with its own ack file ``ACKFILE.T``."""
    import threading

    results: list[int] = []
    threads = [threading.Thread(target=lambda t=t: results.append(producer(home, f"{ident}t{t}", count,
                                                                             f"{ackfile}.{t}")))
               for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0 if results == [0] * THREADS else 1


def naive_putter(qdir: str, ident: str, count: int, go: str) -> int:
    """persist-queue used the obvious way: one Queue per process on a shared directory."""
    import time

    import persistqueue
    from persistqueue.serializers import json as json_serializer

    q = persistqueue.Queue(qdir, serializer=json_serializer, autosave=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(count):
        q.put(f"{ident}-{i}")
    return 0


def spool_putter(home: str, ident: str, count: int, go: str) -> int:
    import time

    from codi_queue import enqueue

    while not os.path.exists(go):
        time.sleep(0.001)
    for i in range(count):
        if not enqueue("tool_event", {"tool_name": "race", "success": True, "tool_use_id": f"{ident}-{i}"}, home=home):
            return 1
    return 0


def paced(home: str, ident: str, seconds: int, ackfile: str, rate: float = 40.0) -> int:
    """Enqueue at a steady rate for ``seconds``; one ack line per acknowledged operation."""
    import time

    from codi_queue import enqueue

    ack = os.open(ackfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        if not enqueue("tool_event", {"tool_name": "soak", "success": True, "tool_use_id": f"s{ident}-{n}"}, home=home):
            return 1
        os.write(ack, f"{n}\n".encode())
        n += 1
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
    os.close(ack)
    return 0


ROLES = {"producer": producer, "threaded": threaded, "naive": naive_putter, "spool": spool_putter, "paced": paced}

if __name__ == "__main__":
    sys.exit(ROLES[sys.argv[1]](sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
