"""Signals answered on an ordinary thread, never inside the handler.

A Python signal handler runs in the main thread between two bytecodes, possibly
while that thread holds a lock the handler's work needs: ``Event.set`` takes the
lock ``Event.wait`` holds around its wait. The consumer's handler called
``Event.set`` and, once in thousands of stops, hung for good on SIGTERM (service
managers then wait out their stop timeout and kill it). So the handler here does
nothing, and the C-level handler's wakeup byte (``signal.set_wakeup_fd``, written
the moment the signal arrives, even while the main thread is inside a long C
call) is read by a small thread that runs the callback where taking a lock is
ordinary.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["calling_on"]

_QUIT = 0  # the byte that tells the reading thread to end (no signal has number 0)


def _ignore(_signum: int, _frame: Any) -> None:
    """Installed so the default action (exit) is not taken; the wakeup byte carries the signal."""


@contextmanager
def calling_on(signums: Iterable[int], callback: Callable[[int], None]) -> Iterator[None]:
    """While inside, each of ``signums`` calls ``callback(signum)`` on a thread of its own.

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = frozenset(signums)
    r, w = os.pipe()
    os.set_blocking(w, False)  # required by set_wakeup_fd; the C handler must never block

    def read() -> None:
        while True:
            data = os.read(r, 64)
            for signum in data:
                if signum == _QUIT:
                    return
                if signum in wanted:
                    callback(signum)
            if not data:
                return

    reader = threading.Thread(target=read, name="codi-queue-signals", daemon=True)
    reader.start()
    previous = {sig: signal.signal(sig, _ignore) for sig in wanted}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, old in previous.items():
            signal.signal(sig, old)
        try:
            os.write(w, bytes([_QUIT]))
        except BlockingIOError:
            pass  # a pipe full of signal bytes: the reader is awake and reaches EOF below
        os.close(w)
        reader.join(timeout=10)
        os.close(r)
