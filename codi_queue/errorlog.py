"""The error log ``status`` reports from: one JSON object per line, appended atomically.

Producers must never crash their caller over infrastructure trouble, and must
never hide it either: they record it here (and count it) and return False.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

__all__ = ["record_error", "last_error", "error_count"]

_MAX_BYTES = 4 * 1024 * 1024  # past this the log is rotated to errors.jsonl.1


def record_error(path: str, source: str, message: str, **fields: Any) -> None:
    from .fsutil import append_line, ensure_private_dir

    entry = {"ts": time.time(), "source": source, "pid": os.getpid(), "message": message, **fields}
    line = json.dumps(entry, separators=(",", ":"), default=str).encode()
    try:
        ensure_private_dir(os.path.dirname(path))
        try:
            if os.path.getsize(path) > _MAX_BYTES:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass  # first error ever: nothing to rotate
        append_line(path, line)
    except OSError as exc:
        # The log lives on the same disk that just failed: stderr is what is left.
        sys.stderr.write(f"codi-queue: {message} (and the error log failed: {exc})\n")


def _lines(path: str) -> list[bytes]:
    try:
        with open(path, "rb") as fp:
            return fp.read().splitlines()
    except FileNotFoundError:
        return []


def last_error(path: str) -> dict[str, Any] | None:
    for line in reversed(_lines(path)):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-append; the one before it is intact
        if isinstance(entry, dict):
            return entry
    return None


def error_count(path: str, source: str | None = None) -> int:
    if source is None:
        return len(_lines(path))
    needle = f'"source":"{source}"'.encode()
    return sum(1 for line in _lines(path) if needle in line)
