"""Read append-only source files (JSONL logs, transcripts) from where we left off, across restarts.

The read position of each source lives in ``state/offsets/`` and moves only
after what was read is durably in the spool. A rotated file (new inode), a
truncated one (shorter than the position) or one rewritten in place (its
first bytes changed) is read again from the start; a partial last line waits
for its newline. Re-reading is harmless: operations from a source carry ids
derived from the source line, so the consumer applies each line once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import BinaryIO

from ..fsutil import ensure_private_dir, open_regular, read_file, write_atomic

__all__ = ["SourceFile", "Line"]

_HEAD = 1024  # bytes hashed to recognise a file rewritten in place
_CHUNK = 1 << 20


class Line:
    """One line of a source: its number, its bytes without the newline, the offset after it,
    and whether a newline ended it (only a ``final`` read yields one that none did)."""

    __slots__ = ("number", "raw", "end", "complete")

    def __init__(self, number: int, raw: bytes, end: int, complete: bool = True) -> None:
        self.number, self.raw, self.end, self.complete = number, raw, end, complete


def _open_regular(path: str) -> BinaryIO:
    """``path`` to read, never blocking: a FIFO in a watched tree would hold the consumer for
    ever. Anything but a regular file is an OSError saying so; the user's links are followed."""
    return os.fdopen(open_regular(path, os.O_RDONLY | os.O_CLOEXEC, follow=True), "rb")


def _position_ok(saved: dict[str, object]) -> bool:
    """Whether a saved position has the shape ``commit`` writes (dev and ino may be null)."""
    if not isinstance(saved.get("path"), str) or not isinstance(saved.get("head"), str):
        return False
    for key in ("offset", "line", "dev", "ino"):
        value = saved.get(key)
        if not (value is None and key in ("dev", "ino")) and (type(value) is not int or value < 0):
            return False
    return True


class SourceFile:
    def __init__(self, path: str, state_dir: str) -> None:
        self.path = os.path.realpath(path)
        # A name that is not UTF-8 comes with its bytes as surrogates: the key is those bytes.
        key = hashlib.blake2b(self.path.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()
        self._store = os.path.join(state_dir, "offsets", f"{key}.json")
        self.offset = 0
        self.line = 0
        self.notes: list[str] = []  # rotation/truncation, for the log
        self._saved: dict[str, object] = {}
        self._load()

    def _load(self) -> None:
        try:
            saved = json.loads(read_file(self._store))
        except FileNotFoundError:
            return  # no position yet: the file is read from the start
        except (OSError, ValueError, RecursionError):
            saved = None
        if not isinstance(saved, dict) or not _position_ok(saved):
            # Read again from the start, which stores nothing twice (ids come from the lines); a
            # position taken as it came raised on every later read of the file, for good.
            self.notes.append(f"{self.path}: its saved position {self._store} is unreadable; "
                              "reading it from the start")
        elif saved["path"] == self.path:
            self._saved = saved

    def _head_hash(self, fp: object, length: int) -> str:
        fp.seek(0)  # type: ignore[attr-defined]
        return hashlib.blake2b(fp.read(min(length, _HEAD)), digest_size=12).hexdigest()  # type: ignore[attr-defined]

    def lines(self, final: bool = False) -> Iterator[Line]:
        """Complete lines past the saved position; with ``final``, a last line without newline too."""
        try:
            fp = _open_regular(self.path)
        except FileNotFoundError:
            return
        with fp:
            st = os.fstat(fp.fileno())
            saved = self._saved
            offset = int(saved.get("offset", 0) or 0)  # type: ignore[call-overload]
            line = int(saved.get("line", 0) or 0)  # type: ignore[call-overload]
            if saved and (saved.get("dev"), saved.get("ino")) != (st.st_dev, st.st_ino):
                self.notes.append(f"{self.path}: a new file (rotated or replaced); reading it from the start")
                offset = line = 0
            elif st.st_size < offset:
                self.notes.append(f"{self.path}: truncated to {st.st_size} bytes; reading it from the start")
                offset = line = 0
            elif offset and saved.get("head") != self._head_hash(fp, offset):
                self.notes.append(f"{self.path}: rewritten in place; reading it from the start")
                offset = line = 0
            self.offset, self.line = offset, line
            self._identity = (st.st_dev, st.st_ino)
            fp.seek(offset)
            pending = b""
            pos = offset
            while True:
                chunk = fp.read(_CHUNK)
                if not chunk:
                    break
                pending += chunk
                start = 0
                while True:
                    nl = pending.find(b"\n", start)
                    if nl < 0:
                        break
                    line += 1
                    raw = pending[start:nl]
                    pos += nl + 1 - start
                    start = nl + 1
                    if raw.strip():
                        yield Line(line, raw, pos)
                    else:
                        self._advance(pos, line)
                pending = pending[start:]
            if final and pending.strip():
                yield Line(line + 1, pending, pos + len(pending), complete=False)

    def _advance(self, end: int, line: int) -> None:
        self.offset, self.line = end, line

    def commit(self, end: int, line: int) -> None:
        """Persist the position after ``line`` (ending at byte ``end``): call once it is in the spool."""
        self._advance(end, line)
        with _open_regular(self.path) as fp:
            head = self._head_hash(fp, end)
        dev, ino = getattr(self, "_identity", (None, None))
        self._saved = {"path": self.path, "dev": dev, "ino": ino, "offset": end, "line": line, "head": head}
        offsets = os.path.dirname(self._store)
        ensure_private_dir(offsets, under=os.path.dirname(offsets))  # the state directory
        write_atomic(self._store, json.dumps(self._saved).encode())
