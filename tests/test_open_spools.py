"""A process that enqueues to many homes holds a bounded number of descriptors (bug 69).

Each spool a process appends to keeps five descriptors open between appends. Kept for every
home, a process enqueueing to a few hundred homes (an analyzer walking projects, a test
runner) reached the usual limit of 1,024 and then failed its own opens as well as ours.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import resolve
from codi_queue.producers.api import enqueue
from codi_queue.queue import spool as spool_module

from .conftest import ROOT, query, wait_until

PROBE = textwrap.dedent("""
    import os, resource, sys
    from codi_queue import enqueue
    from codi_queue.queue.spool import shared_spool
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    base, homes = sys.argv[1], int(sys.argv[3])
    results = []
    for round in range(2):  # the second round reopens every spool the first one closed
        for i in range(homes):
            results.append(enqueue("tool_event", {"tool_name": "Bash", "success": True, "tool_use_id": f"{round}-{i}"},
                                   home=os.path.join(base, f"h{i}")))
    lanes = {shared_spool(os.path.join(base, f"h{i}", "spool"), "").lane for i in range(homes)}
    print(sum(results), len(results), len(os.listdir("/proc/self/fd")), sorted(lanes))
""")


def test_a_process_enqueueing_to_many_homes_stays_within_a_small_descriptor_limit(tmp_path: Path) -> None:
    # 40 homes x 5 descriptors would need 200; a limit of 100 held 19 homes before the fix.
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), "100", "40"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    ok, calls, fds, lanes = out.stdout.split(" ", 3)
    assert (int(ok), int(calls)) == (80, 80), out.stdout
    assert int(fds) <= 10 + spool_module.OPEN_SPOOLS * 5, out.stdout
    assert lanes.strip() == "[0]", out.stdout  # nothing contended: every home's lane 0, kept across the reopen
    for i in range(40):
        paths = resolve(str(tmp_path / f"h{i}"))
        assert Consumer(paths).run(once=True).applied == 2
        assert query(paths, "sessions", "SELECT tool_use_id FROM tool_events ORDER BY tool_use_id") == \
            [(f"0-{i}",), (f"1-{i}",)]


def test_a_spool_keeps_its_lane_when_its_descriptors_are_closed_and_reopened(tmp_path: Path) -> None:
    root = str(tmp_path / "h" / "spool")
    first = spool_module.shared_spool(root, str(tmp_path / "h" / "archive"))
    first._set_lane(3)  # as if lane 3 had been the free one at its first append
    first._lane_pid = __import__("os").getpid()
    for i in range(spool_module.OPEN_SPOOLS + 1):  # pushes it out of the open ones
        spool_module.shared_spool(str(tmp_path / f"o{i}" / "spool"), str(tmp_path / f"o{i}" / "archive"))
    assert first._lock_fd == -1 and first._queue is None
    again = spool_module.shared_spool(root, "")
    assert again is first and again.lane == 3


def test_threads_enqueueing_across_more_homes_than_stay_open_lose_nothing(tmp_path: Path) -> None:
    homes = [tmp_path / f"h{i}" for i in range(spool_module.OPEN_SPOOLS + 4)]
    failed: list[str] = []

    def produce(t: int) -> None:
        for n in range(150):
            home = homes[(t * 7 + n) % len(homes)]
            if not enqueue("tool_event", {"tool_name": "Bash", "success": True, "tool_use_id": f"{t}-{n}"},
                           home=str(home)):
                failed.append(f"{t}-{n}")

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    stored: list[str] = []
    for home in homes:
        paths = resolve(str(home))
        Consumer(paths).run(once=True)
        stored += [r[0] for r in query(paths, "sessions", "SELECT tool_use_id FROM tool_events")]
    assert sorted(stored) == sorted(f"{t}-{n}" for t in range(4) for n in range(150))


def test_a_child_forked_while_another_thread_looks_up_a_spool_can_enqueue(tmp_path: Path) -> None:
    """The lock around the spools a process keeps is held for a moment by each append's lookup;
    a child forked at that moment inherited it held, and its first enqueue waited for ever."""
    import os
    import signal

    last: list[int] = []

    def reaped() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            last.append(status)
        return bool(done)

    spool_module._SHARED.acquire()  # as another thread's lookup holds it when the fork comes
    try:
        pid = os.fork()
        if pid == 0:  # the child: one enqueue, then out without running the parent's cleanups
            code = 1  # also on an exception
            try:
                code = 0 if enqueue("tool_event", {"tool_name": "Bash", "success": True}, home=str(tmp_path / "h")) else 1
            finally:
                os._exit(code)
    finally:
        spool_module._SHARED.release()
    try:
        wait_until(reaped, 60, "the forked child's enqueue to return")
    finally:
        if not last:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(last[0]) == 0
