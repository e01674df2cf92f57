"""One consumer per home: an flock on the home directory itself, and the owner's pid beside it.

The lock is taken on a descriptor of the home directory, which cannot be
unlinked from under us the way a lock file can (deleting ``consumer.lock``
once let a second consumer start beside the first). The pid goes to
``state/consumer.pid`` after the lock is taken; a process that loses the
race waits briefly for it, so it can say who holds the home.
"""

from __future__ import annotations

import fcntl
import os
import threading

from ..errors import ConsumerRunning, UnsafePath
from ..fsutil import NOFOLLOW, ensure_private_dir, open_home, write_atomic
from ..paths import Paths

__all__ = ["ConsumerLock", "consumer_pid"]

_HOLDER_WAIT_S = 3.0  # how long a loser waits for the winner to write its pid


class ConsumerLock:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._fd = -1

    def __enter__(self) -> ConsumerLock:
        ensure_private_dir(self.paths.home)
        try:
            fd = open_home(self.paths.home)
        except ValueError as exc:
            raise UnsafePath(self.paths.home, str(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConsumerRunning(_holder(self.paths), self.paths.home) from None
        try:
            ensure_private_dir(self.paths.state)
            write_atomic(self.paths.consumer_pid_file, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def still_guards(self) -> bool:
        """Whether the home path still names the directory this lock holds. Deleted (a user
        clearing the data directory) or replaced, the flock guards nothing: a consumer started
        now locks the new one, and two would write the same databases."""
        try:
            now, held = os.stat(self.paths.home), os.fstat(self._fd)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock; the stale pid file is harmless
            self._fd = -1


def _read_pid(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
        with os.fdopen(fd, "rb") as fp:
            return int(fp.read(32).strip() or b"0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kernel_holder(path: str) -> int | None:
    """Who holds the flock on ``path``, from the kernel's lock table (Linux), whatever became of the pid file."""
    try:
        st = os.stat(path)
        with open("/proc/locks", "rb") as fp:
            table = fp.read().decode("ascii", "replace")
    except OSError:
        return None
    inode = f":{st.st_ino} "
    for line in table.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[3] == "WRITE" and (fields[5] + " ").endswith(inode):
            major, minor = (int(x, 16) for x in fields[5].split(":")[:2])
            if os.makedev(major, minor) == st.st_dev and fields[4].isdigit():
                return int(fields[4])
    return None


def _holder(paths: Paths, wait_s: float = _HOLDER_WAIT_S) -> int | None:
    """The pid of the process holding the home: from its pid file once written (a stale one names
    a dead process), else from the kernel's lock table."""
    tick = threading.Event()
    for _ in range(int(wait_s / 0.05) + 1):
        pid = _read_pid(paths.consumer_pid_file) or _kernel_holder(paths.home)
        if pid and _alive(pid):
            return pid
        tick.wait(0.05)
    return None


def consumer_pid(paths: Paths) -> int | None:
    """The running consumer's pid (-1 if it cannot be told), or None if no process holds the home."""
    try:
        fd = open_home(paths.home)
    except (OSError, ValueError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(paths, wait_s=0.5) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
