"""One consumer per home: an flock on ``state/consumer.lock`` holding the owner's pid."""

from __future__ import annotations

import fcntl
import os

from ..errors import ConsumerRunning
from ..fsutil import FILE_MODE, ensure_private_dir

__all__ = ["ConsumerLock", "consumer_pid"]


class ConsumerLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> ConsumerLock:
        ensure_private_dir(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConsumerRunning(_read_pid(self.path), self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock; the stale pid is harmless
            self._fd = -1


def _read_pid(path: str) -> int | None:
    try:
        with open(path, "rb") as fp:
            return int(fp.read().strip() or b"0") or None
    except (FileNotFoundError, ValueError):
        return None


def consumer_pid(path: str) -> int | None:
    """The running consumer's pid, or None if no process holds the lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or -1
        return None
    finally:
        os.close(fd)
