"""The error log ``status`` reports from: one JSON object per line, appended atomically.

Producers must never crash their caller over infrastructure trouble, and must
never hide it either: they record it here (and count it) and return False.
"""

from __future__ import annotations

import errno
import os
import time
TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from typing import Any

from . import jsontext
from .values import clean_text

__all__ = ["record_error", "last_error", "error_count", "ensure_reserve"]

_MAX_BYTES = 4 * 1024 * 1024  # past this the log is rotated to errors.jsonl.1


def record_error(path: str, source: str, message: str, **fields: Any) -> bool:
    """Append one error; True if it is in the log.

    The log lives on the disk that may just have filled up: a reserve file
    beside it (``RESERVE_BYTES``, made while there is room) is given back to
    the filesystem the first time an append fails, so the errors that
    explain a full disk still get written. Nothing is printed here: the
    caller decides whether its user should see the message too.
    """
    from .fsutil import append_line, check_private, ensure_private_dir

    entry = {"ts": time.time(), "source": source, "pid": os.getpid(), "message": clean_text(message), **fields}
    line = jsontext.dumps(entry, separators=(",", ":"), default=str, ensure_ascii=False).encode("utf-8", "replace")
    folder = os.path.dirname(path)
    try:
        ensure_private_dir(folder)
        if check_private(folder):
            return False  # never write into a directory another user controls
        try:
            if os.path.getsize(path) > _MAX_BYTES:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass  # first error ever: nothing to rotate
        try:
            append_line(path, line)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not _release_reserve(folder):
                raise
            append_line(path, line)
    except OSError:
        return False
    return True


RESERVE = ".reserve"
RESERVE_BYTES = 256 * 1024


def ensure_reserve(folder: str) -> None:
    """Keep RESERVE_BYTES of real blocks beside the error log while the disk has room."""
    path = os.path.join(folder, RESERVE)
    try:
        if os.path.getsize(path) >= RESERVE_BYTES:
            return
    except FileNotFoundError:
        pass
    from .fsutil import open_regular, write_all

    try:
        fd = open_regular(path, os.O_WRONLY | os.O_CREAT)
    except OSError:
        return
    try:
        os.ftruncate(fd, 0)
        write_all(fd, b"\0" * RESERVE_BYTES)  # written, not sparse: these blocks are really ours
    except OSError:
        os.ftruncate(fd, 0)  # no room for it now; the consumer tries again later
    finally:
        os.close(fd)


def _release_reserve(folder: str) -> bool:
    try:
        os.unlink(os.path.join(folder, RESERVE))
    except OSError:
        return False
    return True


def _lines(path: str) -> list[bytes]:
    """The log's lines, of its last ``2 * _MAX_BYTES`` at most: it is rotated past ``_MAX_BYTES``,
    so a larger file was not written by this module alone (a hole of gigabytes reads as one
    line of zeros), and ``status`` must not read all of it into memory."""
    from .fsutil import NOFOLLOW

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as fp:
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - 2 * _MAX_BYTES)
            fp.seek(start)
            data = fp.read(2 * _MAX_BYTES)
        except OSError:
            return []  # not a file that can be read (a directory): no errors to show
    lines = data.splitlines()
    return lines[1:] if start and lines else lines  # the first may be the end of a line cut in two


def last_error(path: str) -> dict[str, Any] | None:
    """The newest entry as this module writes them (a ``message`` text), its text valid Unicode."""
    for line in reversed(_lines(path)):
        try:
            entry = jsontext.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-append; the one before it is intact
        # Any other line (not ours, or edited by hand) is passed over like a torn one.
        if isinstance(entry, dict) and isinstance(entry.get("message"), str):
            return {k: clean_text(v) if isinstance(v, str) else v for k, v in entry.items()}
    return None


def error_count(path: str, sources: tuple[str, ...] | None = None) -> int:
    """Lines of the error log, or those recorded by any of ``sources``."""
    if sources is None:
        return len(_lines(path))
    needles = [f'"source":"{source}"'.encode() for source in sources]
    return sum(1 for line in _lines(path) if any(needle in line for needle in needles))
