"""Read a claimed segment frame by frame, with positions the consumer can checkpoint.

The consumer does not use ``Queue.get``: a get loop cannot step past a
corrupt record, and ``task_done`` would rewrite ``info`` for every record. It
reads persist-queue's chunk files directly, bounded by the head pointer in
``info`` (bytes past it were never acknowledged), verifies every checksum, and
reports damaged spans instead of decoding them.

A position is ``chunk << 40 | byte offset``: a total order over the segment
that stays valid across restarts because a claimed segment never changes.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import CorruptRecord
from . import frame
from .pq import read_info

__all__ = ["Entry", "SegmentReader", "POS_SHIFT", "describe_pos"]

POS_SHIFT = 40
_OFFSET_MASK = (1 << POS_SHIFT) - 1
_CHUNK = re.compile(r"q(\d{5,})")
_QUARANTINE_CAP = 1 << 20  # keep at most this many damaged bytes per report
# Scanned pages of a mapped chunk are dropped from memory every this many
# bytes: a chunk can be gigabytes (persist-queue chunks by record count, and a
# record can be a large batch), and the consumer must stay small whatever the depth.
_RELEASE_EVERY = 32 * 1024 * 1024


class Entry(NamedTuple):
    start: int
    end: int
    payload: bytes | None  # an intact record
    damage: str | None  # or why this span is not one
    raw: bytes = b""  # the damaged bytes (capped), for quarantine
    kind: int = frame.KIND_RECORD  # MessagePack or JSON record


def describe_pos(pos: int) -> str:
    return f"q{pos >> POS_SHIFT:05d}+{pos & _OFFSET_MASK}"


class SegmentReader:
    """A snapshot of one queue directory: what ``info`` acknowledged when it was opened.

    Files are opened relative to a descriptor of the directory, so the inbox
    being claimed (renamed) mid-read changes nothing for the reader.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []
        self._dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._bounds = self._read_bounds()
        except BaseException:
            os.close(self._dfd)
            raise

    def close(self) -> None:
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def __enter__(self) -> SegmentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def end(self) -> int:
        """Position just past the last acknowledged byte (0 for an empty directory)."""
        if not self._bounds:
            return 0
        chunk, limit = self._bounds[-1]
        if limit is None:
            try:
                limit = os.stat(f"q{chunk:05d}", dir_fd=self._dfd).st_size
            except FileNotFoundError:
                limit = 0
        return (chunk << POS_SHIFT) | limit

    def _read_bounds(self) -> list[tuple[int, int | None]]:
        present = sorted(
            int(m.group(1)) for n in os.listdir(self._dfd) if (m := _CHUNK.fullmatch(n))
        )
        try:
            info = read_info(self.path, dir_fd=self._dfd)
            hnum, _, hoff = (int(x) for x in info["head"])
        except FileNotFoundError:
            if present:
                self.warnings.append(f"{self.path}: no info file; scanning every chunk to its end")
            return [(n, None) for n in present]
        except (CorruptRecord, ValueError, TypeError, KeyError) as exc:
            self.warnings.append(f"{self.path}: info unreadable ({exc}); scanning every chunk to its end")
            return [(n, None) for n in present]
        return [(n, None) for n in range(hnum)] + [(hnum, hoff)]

    def entries(self, start: int = 0) -> Iterator[Entry]:
        first_chunk, first_off = start >> POS_SHIFT, start & _OFFSET_MASK
        for chunk, limit in self._bounds:
            if chunk < first_chunk:
                continue
            offset = first_off if chunk == first_chunk else 0
            yield from self._chunk_entries(chunk, offset, limit)

    def _chunk_entries(self, chunk: int, offset: int, limit: int | None) -> Iterator[Entry]:
        # Entries come out in position order, and every span ends past where it
        # starts: the consumer's cursor moves to the end of the last entry.
        base = chunk << POS_SHIFT
        try:
            fp = os.fdopen(os.open(f"q{chunk:05d}", os.O_RDONLY, dir_fd=self._dfd), "rb")
        except FileNotFoundError:
            end = base + limit if limit else (chunk + 1) << POS_SHIFT
            if offset < end - base and limit != 0:
                yield Entry(base + offset, end, None, f"chunk file q{chunk:05d} is missing")
            return
        with fp:
            size = os.fstat(fp.fileno()).st_size
            end = size if limit is None else limit
            avail = min(size, end)
            held: Entry | None = None  # damage at the end of the bytes, merged with a short file below
            if offset < avail:
                with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    released = 0
                    for item in frame.scan(buf, offset, avail):
                        if item.start - released >= _RELEASE_EVERY:
                            upto = item.start - item.start % mmap.PAGESIZE
                            buf.madvise(mmap.MADV_DONTNEED, released, upto - released)
                            released = upto
                        if held is not None:
                            yield held
                            held = None
                        if isinstance(item, frame.Frame):
                            if item.kind != frame.KIND_META:
                                yield Entry(base + item.start, base + item.end, item.payload, None, b"", item.kind)
                            else:
                                yield Entry(base + item.start, base + item.end, None, "unexpected metadata frame")
                        else:
                            raw = bytes(buf[item.start : min(item.end, item.start + _QUARANTINE_CAP)])
                            held = Entry(base + item.start, base + item.end, None, item.reason, raw)
            if size < end and offset < end:
                short = f"chunk q{chunk:05d} is {end - size} bytes shorter than info says"
                if held is not None:  # one torn record, one report
                    yield held._replace(end=base + end, damage=f"{short} ({held.damage})")
                    return
                yield Entry(base + max(size, offset), base + end, None, short)
            elif held is not None:
                yield held
