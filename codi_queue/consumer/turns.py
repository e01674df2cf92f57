"""Turns at a database's write lock, so the consumer never keeps the database's other writers out.

An adopted database (the platform's ``claude.db``) has writers of its own:
the platform's hooks and scripts write it directly, each with a busy
timeout of 5 seconds (Python's default), and their write is lost when that
runs out (their code swallows the error). SQLite's write lock is not a
queue. A writer that finds it taken sleeps in its busy handler and tries
again, at most 100 ms later with SQLite's own handler, so a consumer
draining a backlog in back-to-back batches, free for a few milliseconds
between them, kept such a writer out for seconds (docs/reliability.md,
bug 74).

So on a database others write (one the user pointed us at, or one another
connection has committed to since we opened it) the consumer holds the lock
at most ``HOLD_S`` in a row, then leaves it free for ``BREAK_S``, longer
than any sleep of that busy handler: every writer waiting then gets in
within ``HOLD_S`` and a break. A database only the consumer writes is never
made to wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import apsw

__all__ = ["WriteTurns", "HOLD_S", "BREAK_S"]

HOLD_S = 1.0  # the longest the consumer holds a shared database's write lock without a break
BREAK_S = 0.15  # the break: longer than SQLite's busy handler sleeps between its tries (100 ms)


def data_version(conn: apsw.Connection) -> int:
    """Changes when another connection commits to the database (never for this one's own)."""
    return int(conn.execute("PRAGMA data_version").get)


class WriteTurns:
    """``with turns:`` around each write transaction of one tier's connection; ``with turns(may_hold=s):``
    around one that may hold the lock ``s`` seconds (a checkpoint waiting for readers)."""

    __slots__ = ("conn", "shared", "held", "free_since", "began", "version", "clock", "sleep", "may_hold")

    def __init__(self, conn: apsw.Connection, shared: bool, *, sleep: Callable[[float], Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``sleep(seconds)`` waits out a break: the consumer's stop flag, so a stop never waits."""
        self.conn = conn
        self.shared = shared  # others write this database: take turns
        self.held = 0.0  # how long the lock has been held since it was last left free for a break
        self.free_since: float | None = None  # when our last transaction ended
        self.began = 0.0
        self.clock, self.sleep = clock, sleep
        self.version = data_version(conn)
        self.may_hold = 0.0

    def __call__(self, may_hold: float) -> WriteTurns:
        self.may_hold = may_hold
        return self

    def __enter__(self) -> None:
        if not self.shared and data_version(self.conn) != self.version:
            self.shared = True  # another connection has committed here (our own commits leave it as it was)
        now = self.clock()
        if self.free_since is not None:
            free = now - self.free_since
            if free >= BREAK_S:
                self.held = 0.0  # it was free long enough for anyone waiting
            elif self.shared and self.held + self.may_hold >= HOLD_S:
                self.sleep(BREAK_S - free)
                self.held = 0.0
                now = self.clock()
        self.began = now
        self.may_hold = 0.0

    def __exit__(self, *_exc: object) -> None:
        self.free_since = self.clock()
        self.held += self.free_since - self.began
