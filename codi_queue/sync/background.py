"""The consumer's push thread: pushes after local commits, never in their way.

A stoppable thread in the watchdog manner: ``wake()`` after each local commit,
``stop()`` and ``join()`` to end it. A PostgreSQL that is down, slow or
refusing only delays pushes (retried every few seconds); the local consumer
never waits for it and the backlog stays in the journal, held back from
archive retention until it is pushed.
"""

from __future__ import annotations

import logging
import threading

from ..config import SyncConfig
from ..consumer.pushed import note_error
from ..errorlog import record_error
from ..errors import CodiQueueError
from ..paths import Paths
from .push import Pusher

__all__ = ["PushThread"]

log = logging.getLogger("codi_queue.sync")

IDLE_S = 5.0  # pushes at least this often even if no commit woke us (another pusher, a restarted server)
MAX_BACKOFF_S = 5.0  # a restarted server is caught up within about this (a refused connect costs ~nothing)


class PushThread(threading.Thread):
    def __init__(self, paths: Paths, sync: SyncConfig) -> None:
        super().__init__(name="codi-queue-push", daemon=True)  # never keeps a stopping consumer alive
        self.paths = paths
        self.sync = sync
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self.pushed = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    def __enter__(self) -> PushThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.join(timeout=10)

    def run(self) -> None:
        backoff = 0.0
        with Pusher(self.paths, self.sync) as pusher:
            while not self._stop_event.is_set():
                self._wake.clear()
                try:
                    results = pusher.push(self._stop_event.is_set)
                except Exception as exc:  # noqa: BLE001 - nothing here may end the thread: reported, retried
                    why = str(exc) if isinstance(exc, CodiQueueError) else f"{type(exc).__name__}: {exc}"
                    backoff = min(MAX_BACKOFF_S, max(1.0, backoff * 2))
                    self._failed(why, backoff)
                    self._stop_event.wait(backoff)
                    continue
                backoff = 0.0
                self.pushed += sum(r.operations for r in results.values())
                if self.last_error is not None:
                    log.info("pushing to the team database again")
                    self.last_error = None
                self._wake.wait(IDLE_S)

    def _failed(self, why: str, backoff: float) -> None:
        if why != self.last_error:  # once per distinct reason: an outage must not flood the log
            log.warning("push failed, retrying in %.0fs: %s", backoff, why)
            record_error(self.paths.error_log, "sync", why)
        self.last_error = why
        try:
            # Only the reason: ``status`` counts the backlog itself, in its own process,
            # so an outage costs this one (the consumer's) nothing but a retry now and then.
            note_error(self.paths, why)
        except OSError as exc:
            log.warning("could not record the push error: %s", exc)
