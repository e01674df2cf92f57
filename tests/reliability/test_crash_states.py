"""Crash states (ALICE-style): every state a crash could leave mid-enqueue or mid-claim, recovered and checked.

An enqueue and a consumer's claim and archive are recorded with strace; every
prefix of their file-system calls is turned into the disk a process crash, a
power loss or a torn last write would leave (see alice.py). Each state is
then recovered as a user would (the next enqueue, the next consumer run) and
the invariants checked: every acknowledged operation applied exactly once,
nothing decoded from damaged bytes, the queue still accepts and drains.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import resolve
from codi_queue.producers.api import enqueue

from ..conftest import cli_env, query
from .alice import crash_states, record

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to record the calls")

ENQUEUE = "from codi_queue import enqueue; import sys; assert enqueue('tool_event', {{'tool_name': '{name}', 'success': True}}, home=sys.argv[1])"


def _names(home: str) -> list[str]:
    return sorted(r[0] for r in query(resolve(home), "sessions", "SELECT tool_name FROM tool_events"))


def _recover_and_check(case: Path, acked: list[str], in_flight: str | None, finished: bool,
                       unacknowledged: tuple[str, ...] = ()) -> None:
    """``unacknowledged``: written by a producer that died before acknowledging: at most once."""
    enqueue("tool_event", {"tool_name": "after-crash", "success": True}, home=str(case))  # the queue still accepts
    Consumer(resolve(str(case))).run(once=True)
    names = _names(str(case))
    for name in [*acked, "after-crash"]:
        assert names.count(name) == 1, (name, names)
    if in_flight is not None:
        assert names.count(in_flight) == (1 if finished else names.count(in_flight)) and names.count(in_flight) <= 1
    for name in unacknowledged:
        assert names.count(name) <= 1, (name, names)
    assert set(names) <= {*acked, "after-crash", *([in_flight] if in_flight else []), *unacknowledged}


def _snapshot(home: Path, dest: Path) -> None:
    """The spool and archive as they are: the part of the home the model replays."""
    dest.mkdir()
    for part in ("spool", "archive"):
        if (home / part).exists():
            shutil.copytree(home / part, dest / part)


def _run(tmp_path: Path, home: Path, argv: list[str], acked: list[str], in_flight: str | None,
         db_variants: tuple[str, ...] = ("before",), unacknowledged: tuple[str, ...] = (),
         whole_home: bool = False) -> int:
    """Record ``argv``, then recover and check every crash state of the spool and archive it wrote
    (``whole_home``: and of the home directory's own entries, for a home with no spool yet)."""
    snapshot = tmp_path / "snapshot"
    _snapshot(home, snapshot)
    before = tmp_path / "home-before"
    shutil.copytree(home, before)
    roots = (str(home),) if whole_home else (str(home / "spool"), str(home / "archive"))
    ops = record(argv, str(tmp_path / "trace"), cli_env(home), roots)
    assert any(op.kind == "sync" for op in ops), "the recorder saw no fsync: nothing was traced"
    after = tmp_path / "home-after"
    shutil.copytree(home, after)
    checked = 0
    variants = {f"db-{v}": before if v == "before" else after for v in db_variants}
    for label, k, model, durable, torn in crash_states(str(home), str(snapshot), ops):
        for db_label, db_source in variants.items():
            case = tmp_path / f"case-{label}-{k}-{db_label}"
            shutil.copytree(db_source, case, ignore=shutil.ignore_patterns("spool", "archive"))
            model.materialise(str(case), durable, torn)
            try:
                _recover_and_check(case, acked, in_flight, finished=(k == len(ops) and label != "torn"),
                                   unacknowledged=unacknowledged)
            except AssertionError as exc:
                raise AssertionError(f"crash state {label} after {k} of {len(ops)} calls ({db_label}): {exc}") from None
            shutil.rmtree(case)
            checked += 1
    return checked


def test_every_crash_state_of_an_enqueue_into_an_existing_inbox(tmp_path: Path, home: Path) -> None:
    acked = ["one", "two", "three"]
    for name in acked:
        enqueue("tool_event", {"tool_name": name, "success": True}, home=str(home))
    Consumer(resolve(str(home)), rotate_bytes=1 << 40).run(once=True)  # applied, inbox kept
    enqueue("tool_event", {"tool_name": "four", "success": True}, home=str(home))
    argv = [sys.executable, "-c", ENQUEUE.format(name="five"), str(home)]
    checked = _run(tmp_path, home, argv, [*acked, "four"], "five")
    assert checked >= 15
    print(f"crash-states enqueue-existing-inbox: {checked} states recovered, lost 0, duplicates 0")


# The same enqueue while another producer holds lane 0: it starts lane 1's inbox (its lane file too).
IN_LANE_1 = ("import fcntl, os, sys; fd = os.open(os.path.join(sys.argv[1], 'spool', 'inbox.lock'), os.O_RDWR); "
             "fcntl.flock(fd, fcntl.LOCK_EX); ")


@pytest.mark.parametrize("lane", [0, 1])
def test_every_crash_state_of_an_enqueue_that_starts_a_fresh_inbox(tmp_path: Path, home: Path, lane: int) -> None:
    enqueue("tool_event", {"tool_name": "one", "success": True}, home=str(home))
    Consumer(resolve(str(home)), rotate_bytes=1).run(once=True)  # claimed and archived: no inbox now
    assert not (home / "spool" / "inbox").exists()
    argv = [sys.executable, "-c", (IN_LANE_1 if lane else "") + ENQUEUE.format(name="two"), str(home)]
    checked = _run(tmp_path, home, argv, ["one"], "two")
    assert (home / "spool" / ("inbox-1" if lane else "inbox")).exists()
    assert checked >= 25  # mkdir, id file, last_segment, chunk, info: many crash points
    print(f"crash-states enqueue-fresh-inbox (lane {lane}): {checked} states recovered, lost 0, duplicates 0")


def test_every_crash_state_of_a_claim_and_archive(tmp_path: Path, home: Path) -> None:
    acked = ["a", "b", "c"]
    for name in acked:
        enqueue("tool_event", {"tool_name": name, "success": True}, home=str(home))
    Consumer(resolve(str(home)), rotate_bytes=1 << 40).run(once=True)  # databases exist; inbox applied
    argv = [sys.executable, "-m", "codi_queue", "--home", str(home), "run", "--once", "--rotate-bytes", "1"]
    # The databases may be as before the run or as after it: both are crash-consistent with any spool state.
    checked = _run(tmp_path, home, argv, acked, None, ("before", "after"))
    assert checked >= 10
    print(f"crash-states claim-and-archive: {checked} states recovered, lost 0, duplicates 0")


# A producer killed at a chunk rollover: it has written the chunk's last record and created the
# next chunk file, and dies just before syncing the directory. Another producer then appends to
# that file and acknowledges.
ROLLOVER = """
import os, sys
home, dies_at = sys.argv[1], os.path.realpath(os.path.join(sys.argv[1], sys.argv[2]))
pid = os.fork()
if pid == 0:
    real_fsync = os.fsync
    def killed_at_the_directory_sync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}") == dies_at:  # the sync that would name what it made
            os._exit(9)
        real_fsync(fd)
    os.fsync = killed_at_the_directory_sync
    from codi_queue import enqueue
    enqueue('tool_event', {'tool_name': 'rolled', 'success': True}, home=home)
    os._exit(0)
os.waitpid(pid, 0)
from codi_queue import enqueue
assert enqueue('tool_event', {'tool_name': 'after-rollover', 'success': True}, home=home)
"""


def test_every_crash_state_of_an_append_into_a_chunk_a_killed_producer_created(tmp_path: Path, home: Path) -> None:
    """The chunk file's name reached the disk only if someone synced the directory, and the
    producer that created it died first: the next producer appends into a file that a power
    loss can take with its acknowledged record, unless it syncs the directory itself."""
    from codi_queue.queue.durable_queue import CHUNK_RECORDS

    acked = [f"pre-{i}" for i in range(CHUNK_RECORDS - 1)]  # the killed producer's record fills the chunk
    for name in acked:
        enqueue("tool_event", {"tool_name": name, "success": True}, home=str(home))
    Consumer(resolve(str(home)), rotate_bytes=1 << 40).run(once=True)  # applied, inbox kept
    argv = [sys.executable, "-c", ROLLOVER, str(home), "spool/inbox"]
    checked = _run(tmp_path, home, argv, acked, "after-rollover", unacknowledged=("rolled",))
    assert (home / "spool" / "inbox" / "q00001").exists()
    assert checked >= 15
    print(f"crash-states append-into-a-chunk-a-killed-producer-created: {checked} states recovered, lost 0, duplicates 0")




def test_every_crash_state_of_an_enqueue_into_a_spool_a_killed_producer_made(tmp_path: Path, home: Path) -> None:
    """A directory's name reaches the disk with a sync of its parent, and every producer made
    ``spool/`` and ``segments/`` only when missing: one killed between the mkdir and that sync
    left a spool a power loss could take with everything acknowledged into it later."""
    home.mkdir(mode=0o700)
    argv = [sys.executable, "-c", ROLLOVER, str(home), ""]  # killed at its first sync of the home itself
    checked = _run(tmp_path, home, argv, [], "after-rollover", unacknowledged=("rolled",), whole_home=True)
    assert (home / "spool" / "inbox").exists()
    assert checked >= 15
    print(f"crash-states enqueue-into-a-spool-a-killed-producer-made: {checked} states recovered, lost 0, duplicates 0")
