"""Read append-only source files (JSONL logs, transcripts) from where we left off, across restarts.

The read position of each source lives in ``state/offsets/`` and moves only
after what was read is durably in the spool. A rotated file (new inode), a
truncated one (shorter than the position) or one rewritten in place (its
first bytes changed) is read again from the start; a partial last line waits
for its newline. Re-reading is harmless: operations from a source carry ids
derived from the source line, so the consumer applies each line once.

A line longer than ``LINE_MAX`` is never held whole: its first ``LINE_KEPT``
bytes and its length are, and the reader skips to its newline. One such line
(a log that wrote a blob, a writer that never writes a newline) had made the
consumer hold it all, copying it once per megabyte read, and every later
line of the file wait behind it for good.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import BinaryIO

from ..fsutil import ensure_private_dir, open_regular, read_file, write_atomic
from ..schemas.types import TEXT_MAX

__all__ = ["SourceFile", "Line", "LINE_MAX", "LINE_KEPT"]

_HEAD = 1024  # bytes hashed to recognise a file rewritten in place
_CHUNK = 1 << 20  # at most LINE_MAX: a line within one chunk is never too long
# The longest line (or state.json) held in memory. Every operation a line becomes is far smaller (its texts
# hold at most 1 MiB), and a rejected line travels whole in one spool frame (64 MiB).
LINE_MAX = 16 << 20
LINE_KEPT = TEXT_MAX  # of a longer line, the bytes kept to say what it was: one text value's worth


class Line:
    """One line of a source: its number, its bytes without the newline, the offset after it,
    and whether a newline ended it (only a ``final`` read yields one that none did).
    ``size`` is its length; ``raw`` holds only its first ``LINE_KEPT`` bytes when that is
    over ``LINE_MAX`` (``cut``)."""

    __slots__ = ("number", "raw", "end", "complete", "size")

    def __init__(self, number: int, raw: bytes, end: int, complete: bool = True, size: int | None = None) -> None:
        self.number, self.raw, self.end, self.complete = number, raw, end, complete
        self.size = len(raw) if size is None else size

    @property
    def cut(self) -> bool:
        return self.size > len(self.raw)

    def too_long(self) -> str:
        """Why a cut line is not read, for its rejection or the importer's note."""
        return (f"a line of {self.size:,} bytes is longer than the {LINE_MAX:,} a line may have; "
                f"only its first {len(self.raw):,} bytes are kept")


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


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

    def _head_hash(self, fp: BinaryIO, length: int) -> str:
        fp.seek(0)
        return _digest(fp.read(min(length, _HEAD)))

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
            scanned, kept = 0, b""  # kept: of a line past LINE_MAX, its first bytes; its length is ``skipped``
            if saved and (saved.get("dev"), saved.get("ino")) != (st.st_dev, st.st_ino):
                self.notes.append(f"{self.path}: a new file (rotated or replaced); reading it from the start")
                offset = line = 0
            elif st.st_size < offset:
                self.notes.append(f"{self.path}: truncated to {st.st_size} bytes; reading it from the start")
                offset = line = 0
            elif offset and saved.get("head") != self._head_hash(fp, offset):
                self.notes.append(f"{self.path}: rewritten in place; reading it from the start")
                offset = line = 0
            else:
                scanned, kept = self._scanned(saved, fp, offset, st.st_size)
            self.offset, self.line = offset, line
            self._identity = (st.st_dev, st.st_ino)
            yielded = False  # whether a line was handed out (then the caller commits the position)
            fp.seek(offset)
            held: list[bytes] = []  # a line no newline has ended yet, in pieces: joined once, when it ends
            held_len = 0
            skipped = 0
            if scanned:  # an earlier read passed over this much of a long line with no newline yet
                skipped = scanned - offset
                fp.seek(scanned)
            pos = offset  # where the line being read starts
            while True:
                chunk = fp.read(_CHUNK)
                if not chunk:
                    break
                start = 0
                nl = chunk.find(b"\n")
                if skipped:  # passing over a long line
                    if nl < 0:
                        skipped += len(chunk)
                        continue
                    line += 1
                    pos += skipped + nl + 1
                    yielded = True
                    yield Line(line, kept, pos, size=skipped + nl)
                    kept, skipped, start = b"", 0, nl + 1
                    nl = chunk.find(b"\n", start)
                elif held and nl >= 0:  # the held line ends in this chunk
                    held.append(chunk[:nl])
                    size = held_len + nl
                    raw = b"".join(held)[:LINE_KEPT] if size > LINE_MAX else b"".join(held)
                    held, held_len = [], 0
                    line += 1
                    pos += size + 1
                    start = nl + 1
                    if size > LINE_MAX or raw.strip():
                        yielded = True
                        yield Line(line, raw, pos, size=size)
                    else:
                        self._advance(pos, line)
                    nl = chunk.find(b"\n", start)
                while nl >= 0:  # lines within the chunk: the hot path (a chunk is no longer than LINE_MAX)
                    line += 1
                    raw = chunk[start:nl]
                    pos += nl + 1 - start
                    start = nl + 1
                    if raw.strip():
                        yielded = True
                        yield Line(line, raw, pos)
                    else:
                        self._advance(pos, line)
                    nl = chunk.find(b"\n", start)
                if start < len(chunk):
                    held.append(chunk[start:] if start else chunk)
                    held_len += len(chunk) - start
                    if held_len > LINE_MAX:  # no newline within LINE_MAX: keep its start, pass over the rest
                        kept, skipped = b"".join(held)[:LINE_KEPT], held_len
                        held, held_len = [], 0
            if skipped:
                if final:
                    yield Line(line + 1, kept, pos + skipped, complete=False, size=skipped)
                elif not yielded:
                    # Its newline has not come: the next read starts where this one stopped. (After
                    # lines handed out, the caller's commit comes first, and the next read notes it.)
                    self.commit(pos, line, scanned=pos + skipped)
            elif final and held:
                rest = b"".join(held)
                if rest.strip():
                    yield Line(line + 1, rest, pos + len(rest), complete=False)

    def _advance(self, end: int, line: int) -> None:
        self.offset, self.line = end, line

    def _scanned(self, saved: dict[str, object], fp: BinaryIO, offset: int, size: int) -> tuple[int, bytes]:
        """Where an earlier read of the line at ``offset`` stopped, passing over a long line that
        had no newline yet, and the line's first bytes ((0, b""): read it from its start). Only for
        that line, recognised by those bytes: a file replaced by one that took its inode number
        must not be read from there."""
        scanned = saved.get("scanned")
        if not (type(scanned) is int and saved.get("offset") == offset and offset + LINE_MAX < scanned <= size):
            return 0, b""
        fp.seek(offset)
        kept = fp.read(LINE_KEPT)
        return (scanned, kept) if saved.get("line_head") == _digest(kept) else (0, b"")

    def commit(self, end: int, line: int, scanned: int | None = None) -> None:
        """Persist the position after ``line`` (ending at byte ``end``): call once it is in the spool.
        ``scanned``: how far the long unfinished line after it was passed over (a writer that never
        ends its line would otherwise have all of it read again at every poll)."""
        self._advance(end, line)
        with _open_regular(self.path) as fp:
            head = self._head_hash(fp, end)
        dev, ino = getattr(self, "_identity", (None, None))
        self._saved = {"path": self.path, "dev": dev, "ino": ino, "offset": end, "line": line, "head": head}
        if scanned is not None:
            with _open_regular(self.path) as fp:
                fp.seek(end)
                self._saved.update(scanned=scanned, line_head=_digest(fp.read(LINE_KEPT)))
        offsets = os.path.dirname(self._store)
        ensure_private_dir(offsets, under=os.path.dirname(offsets))  # the state directory
        write_atomic(self._store, json.dumps(self._saved).encode())
