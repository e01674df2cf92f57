"""Signals are answered on a thread of their own, never inside the handler (codi_queue.signals)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.consumer.metrics import read_metrics
from codi_queue.paths import Paths

from .conftest import ROOT, cli_env, wait_until

# The main thread holds a lock the answer to the signal needs, as Event.wait holds the lock
# Event.set takes, and signals itself. The answer must wait for the lock, not hang on it.
SCENARIO = """
import os, signal, sys, threading
sys.path.insert(0, {root!r})
from codi_queue.signals import calling_on
lock, trying, answered = threading.Lock(), threading.Event(), threading.Event()
def answer(signum):
    trying.set()
    with lock:
        answered.set()
def install(body):
    if {naive!r}:
        signal.signal(signal.SIGTERM, lambda s, f: answer(s))
        body()
    else:
        with calling_on((signal.SIGTERM,), answer):
            body()
def body():
    with lock:
        os.kill(os.getpid(), signal.SIGTERM)
        trying.wait(20)  # released only once the answer has reached for it
    print("answered" if answered.wait(20) else "not answered")
install(body)
"""


def _scenario(naive: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    code = SCENARIO.format(root=str(ROOT), naive=naive)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_a_signal_while_the_main_thread_holds_what_its_answer_needs_is_answered() -> None:
    res = _scenario(naive=False, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "answered", res.stderr


def test_the_same_signal_answered_inside_the_handler_hangs() -> None:
    """The control: what the consumer's handler did until session 9 (request_stop, an Event.set,
    from inside the handler) deadlocks on the lock its own thread holds."""
    with pytest.raises(subprocess.TimeoutExpired):
        _scenario(naive=True, timeout=3)


def test_a_consumer_stops_on_a_burst_of_signals(home: Path, paths: Paths) -> None:
    """SIGTERM after SIGTERM, and SIGINT, while the consumer waits: it finishes and exits 0."""
    proc = subprocess.Popen([sys.executable, "-m", "codi_queue", "run", "--poll", "0.05"], env=cli_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (read_metrics(paths.metrics) or {}).get("pid") == proc.pid, 30, "the consumer to run")
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "finishing the batch in flight" in Path(paths.consumer_log).read_text()
