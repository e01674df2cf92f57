"""The consumer's own figures, published for ``status`` (and Prometheus) in ``state/metrics.json``.

Advisory data: written atomically (temp file + rename) at most once a second,
never fsynced; losing the last second of counters on a crash costs nothing.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import msgspec

from ..fsutil import NOFOLLOW, open_regular
from ..values import clean_text

__all__ = ["Metrics", "read_metrics", "WINDOW_S"]

WINDOW_S = 60.0


class Snapshot(msgspec.Struct, forbid_unknown_fields=False):
    """What ``state/metrics.json`` holds: written from it and read back through it, so a file
    of any other shape (damaged, or written by hand) reads as no figures at all."""

    pid: int = 0
    running: bool = False
    started: float | None = None
    updated: float | None = None
    batches: int = 0
    operations: int = 0
    applied: int = 0
    dead_letters: int = 0
    last_batch_at: float | None = None
    throughput_1m_ops_s: float = 0.0
    unavailable_tiers: dict[str, str] = msgspec.field(default_factory=dict)
    unwatched: list[str] = msgspec.field(default_factory=list)  # "directory: why", polled instead
    outside_vocabulary: dict[str, int] = msgspec.field(default_factory=dict)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Snapshot).decode


class Metrics:
    def __init__(self, path: str) -> None:
        self.path = path
        self.started = time.time()
        self.batches = 0
        self.operations = 0
        self.applied = 0
        self.dead_letters = 0
        self.last_batch_at: float | None = None
        self.unavailable: dict[str, str] = {}  # tier → why it cannot be written now
        self.unwatched: list[str] = []  # "directory: why" for each the kernel will not watch (polled)
        self.outside: dict[str, int] = {}  # "op.field" → values stored outside our vocabularies and scales
        self._window: deque[tuple[float, int]] = deque()
        self._flushed = 0.0

    def batch(self, operations: int, applied: int, dead_letters: int) -> None:
        now = time.time()
        self.batches += 1
        self.operations += operations
        self.applied += applied
        self.dead_letters += dead_letters
        self.last_batch_at = now
        self._window.append((now, operations))

    def rate(self, now: float | None = None) -> float:
        """Operations per second over the last minute."""
        now = time.time() if now is None else now
        while self._window and self._window[0][0] < now - WINDOW_S:
            self._window.popleft()
        return sum(n for _, n in self._window) / WINDOW_S

    def snapshot(self, running: bool = True) -> Snapshot:
        now = time.time()
        # Reasons and names can carry a path's undecodable bytes: kept readable (U+FFFD), never unwritable.
        return Snapshot(
            pid=os.getpid(), running=running, started=self.started, updated=now, batches=self.batches,
            operations=self.operations, applied=self.applied, dead_letters=self.dead_letters,
            last_batch_at=self.last_batch_at, throughput_1m_ops_s=round(self.rate(now), 3),
            unavailable_tiers={clean_text(t): clean_text(why) for t, why in self.unavailable.items()},
            unwatched=[clean_text(what) for what in self.unwatched],
            outside_vocabulary={clean_text(k): n for k, n in self.outside.items()},
        )

    def flush(self, force: bool = False, running: bool = True) -> str | None:
        """Publish the figures; why not, when the disk refused (they are advisory: never fatal)."""
        now = time.time()
        if not force and now - self._flushed < 1.0:
            return None
        self._flushed = now
        tmp = f"{self.path}.tmp"
        try:
            fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as fp:
                fp.write(_encode(self.snapshot(running)))
            os.replace(tmp, self.path)
        except OSError as exc:
            return f"could not publish metrics to {self.path}: {exc.strerror or exc}"
        return None


def read_metrics(path: str) -> dict[str, Any] | None:
    """The published figures as a dict, or None when there are none of the shape ``Snapshot`` says."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
        with os.fdopen(fd, "rb") as fp:
            found: dict[str, Any] = msgspec.to_builtins(_decode(fp.read(1 << 20)))
    except (OSError, msgspec.DecodeError):
        return None
    return found
