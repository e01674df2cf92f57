"""Read a queue directory frame by frame, with positions the consumer can checkpoint.

The consumer does not use ``Queue.get``: a get loop cannot step past a
corrupt record, and ``task_done`` would rewrite ``info`` for every record. It
reads persist-queue's chunk files directly, verifies every checksum, and
reports damaged spans instead of decoding them.

How far it reads depends on who may still write the directory:

* **live** (the inbox): only up to the position producers have acknowledged
  (``acked``, published after their fsyncs), and never past the head in
  ``info``. An inbox with no readable ``info`` has nothing to read: a
  producer may be writing its first record. When the acknowledged position
  lags ``info`` for long (a producer died between its fsync and publishing,
  or a power cut lost the unsynced hint), the consumer reads up to ``info``
  with ``trust_info`` after making that head durable itself
  (``make_durable``). (The consumer rescues a broken inbox under the lock.)
* **claimed** (segments, archive): no producer can write it any more, so
  when ``info`` is missing or unreadable every chunk is scanned to its end.

Version-2 frames carry the directory's running operation count, so every
gap (a damaged span, a chunk cut short at a record boundary, a missing
chunk, a tail shorter than ``info`` says) is reported with the number of
operations lost (``Entry.lost``).

A position is ``chunk << 40 | byte offset``: a total order over the directory
that stays valid across restarts because bytes at a position never change.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
from collections.abc import Iterator
from typing import NamedTuple

from ..errors import CorruptRecord
from ..fsutil import DIR_FLAGS, NOFOLLOW, data_extents
from . import frame
from .durable_queue import cannot_read_now, checked_info, read_acked_state, recover_head

__all__ = ["Entry", "SegmentReader", "SpanData", "POS_SHIFT", "describe_pos", "QUARANTINE_INLINE", "cannot_read_now"]

POS_SHIFT = 40
_OFFSET_MASK = (1 << POS_SHIFT) - 1
_CHUNK = re.compile(r"q(\d{5,})")
QUARANTINE_INLINE = 1 << 20  # damaged bytes kept inline in a report; the whole span is copied aside
# Scanned pages of a mapped chunk are dropped from memory every this many
# bytes: a chunk can be gigabytes (persist-queue chunks by record count, and a
# record can be a large batch), and the consumer must stay small whatever the depth.
_RELEASE_EVERY = 32 * 1024 * 1024
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW  # a planted FIFO must not hang us


class Entry(NamedTuple):
    start: int
    end: int
    payload: bytes | None  # an intact record
    damage: str | None  # or why this span is not one
    raw: bytes = b""  # the damaged bytes (the first QUARANTINE_INLINE of them)
    kind: int = frame.KIND_RECORD  # MessagePack or JSON record
    # Operations lost: inside this damaged span, or (on an intact record)
    # missing just before it; None when it cannot be known (version-1 frames).
    lost: int | None = 0
    seq: int | None = None  # an intact version-2 record: operations before it in the directory
    nops: int = 0  # and how many it holds


def describe_pos(pos: int) -> str:
    return f"q{pos >> POS_SHIFT:05d}+{pos & _OFFSET_MASK}"


def describe_lost(lost: int | None) -> str:
    if lost is None:
        return "an unknown number of operations lost"
    return f"{lost} operation{'s' if lost != 1 else ''} lost"


def _open_regular(name: str, dir_fd: int) -> int:
    """A descriptor of a regular file, never through a link, never blocking on a FIFO."""
    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{name} is not a regular file")
    return fd


class SegmentReader:
    """A snapshot of one queue directory: what ``info`` acknowledged when it was opened.

    Files are opened relative to a descriptor of the directory, so the inbox
    being claimed (renamed) mid-read changes nothing for the reader.
    """

    def __init__(self, path: str, live: bool = False, trust_info: bool = False) -> None:
        self.path = path
        self.live = live
        self.warnings: list[str] = []
        self.total_ops: int | None = None  # the directory's operation count per info
        self.trusted = live and trust_info  # reading a live inbox up to info, not to what was acknowledged
        self._info_fd = -1
        self._chunks = 0  # chunk files present: numbered from 0, never deleted, so no position lies past this
        self._dfd = os.open(path, DIR_FLAGS)
        try:
            self._bounds = self._read_bounds()
            acked, acked_ops = read_acked_state(self._dfd)
            if acked is not None and acked >> POS_SHIFT > self._chunks:
                self.warnings.append(f"{path}: the acknowledged position {describe_pos(acked)} lies past every "
                                     "chunk file: a damaged acked file, ignored")
                acked, acked_ops = None, None
            # Producers publish the acknowledged position only after their data sync:
            # bytes short of it are acknowledged records that damage took (reported),
            # never an unacknowledged tail for recovery to drop silently.
            self._bounds = _reach(self._bounds, acked)
            if acked_ops is not None and (self.total_ops is None or acked_ops > self.total_ops):
                self.total_ops = acked_ops  # acknowledged operations the data no longer reaches
            self.info_end = self.end  # how far info (recovered) says; ``end`` may stop short of it (live)
            if live and not trust_info:
                self._bounds = _clip(self._bounds, acked)
                if self.end < self.info_end:
                    # Read only to the acknowledged position: info, recovered past it, also counts
                    # records written and not yet acknowledged, which would read as operations lost.
                    self.total_ops = acked_ops
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for name in ("_dfd", "_info_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

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
                limit = os.stat(f"q{chunk:05d}", dir_fd=self._dfd, follow_symlinks=False).st_size
            except FileNotFoundError:
                limit = 0
        return (chunk << POS_SHIFT) | limit

    def make_durable(self) -> None:
        """fsync the head chunk, ``info`` and the directory: what this reader reads can never
        be rolled back by a power loss (which would let later appends reuse its positions).
        The producer syncs the same after releasing the spool lock; this covers a reader
        that got there first."""
        if not self._bounds or self._info_fd < 0:
            return
        chunk = self._bounds[-1][0]
        try:
            fd = _open_regular(f"q{chunk:05d}", self._dfd)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.fsync(self._info_fd)
        os.fsync(self._dfd)

    def _read_bounds(self) -> list[tuple[int, int | None]]:
        present = sorted(
            int(m.group(1)) for n in os.listdir(self._dfd) if (m := _CHUNK.fullmatch(n))
        )
        self._chunks = len(present)
        try:
            self._info_fd = _open_regular("info", self._dfd)
            with open(os.dup(self._info_fd), "rb") as fp:
                info = checked_info(frame.load(fp))
            info = recover_head(info, self._dfd)  # info may trail what is on disk: see recover_head
            hnum, _, hoff = (int(x) for x in info["head"])
            if not 0 <= hnum <= self._chunks or not 0 <= hoff <= _OFFSET_MASK:
                # Past every chunk file (there is no deleting them in a queue directory):
                # damage, and never a reason to walk millions of absent chunks.
                raise CorruptRecord(f"head {info['head']} is out of range")
            ops = info.get("ops")
            self.total_ops = ops if isinstance(ops, int) and not isinstance(ops, bool) else None
        except FileNotFoundError:
            if self.live:
                return []  # a producer may be writing the first record: nothing is acknowledged yet
            if present:
                self.warnings.append(f"{self.path}: no info file; scanning every chunk to its end")
            return [(n, None) for n in present]
        except (CorruptRecord, OSError, ValueError, TypeError, KeyError) as exc:
            if cannot_read_now(exc) and (self.live or getattr(exc, "filename", None) != "info"):
                # A chunk (recover_head reads the head chunk) we may not read now: not a reason
                # to say nothing (live) or to scan chunks that cannot be read either. An info we
                # may not read in a claimed segment is passed over: its chunks are scanned.
                raise
            if self.live:
                return []  # the consumer moves such an inbox aside under the lock
            self.warnings.append(f"{self.path}: info unreadable ({exc}); scanning every chunk to its end")
            return [(n, None) for n in present]
        beyond = [n for n in present if n > hnum]
        if beyond and not self.live:
            # Chunks past the head hold nothing acknowledged (a producer died
            # mid-rollover); they are reported, never decoded.
            self.warnings.append(f"{self.path}: chunks {beyond} lie past info's head and were not read")
        return [(n, None) for n in range(hnum)] + [(hnum, hoff)]

    # -- entries, with the operations each gap lost -----------------------------------

    def entries(self, start: int = 0) -> Iterator[Entry]:
        expected: int | None = 0 if start == 0 else None  # operations before the next record
        held: list[Entry] = []  # damage waiting for the next record's sequence number
        last_end = start
        for entry in self._raw_entries(start):
            if entry.payload is None:
                held.append(entry)
                continue
            seq, nops = entry.seq, entry.nops
            if seq is None:  # version 1: no sequence numbers
                yield from _settle(held, None)
                held, expected = [], None
                yield entry
                last_end = entry.end
                continue
            if expected is None and held:
                expected = self._baseline(start)
            gap = None if expected is None else max(0, seq - expected)
            if held:
                yield from _settle(held, gap)
                held, gap = [], 0
            elif gap and entry.start >> POS_SHIFT != last_end >> POS_SHIFT:
                yield Entry(last_end, entry.start, None, f"{gap} operations missing before {describe_pos(entry.start)}"
                            " (a chunk cut short at a record boundary, or missing)", lost=gap)
                gap = 0
            yield entry._replace(lost=gap or 0)
            expected = seq + nops
            last_end = entry.end
        tail: int | None = None
        if self.total_ops is not None and expected is not None:
            tail = max(0, self.total_ops - expected)
        if held:
            yield from _settle(held, tail)
        elif tail and self.end > last_end:
            yield Entry(last_end, self.end, None, f"{tail} operations missing at the end", lost=tail)
        elif tail:
            self.warnings.append(f"{self.path}: info counts {tail} more operations than its chunks hold")

    def _baseline(self, start: int) -> int | None:
        """The operation count just before ``start``: from the intact record that ends there."""
        chunk, off = start >> POS_SHIFT, start & _OFFSET_MASK
        whole = off == 0  # the last record of the chunk before
        if whole:
            chunk -= 1
        if chunk < 0:
            return 0
        last: frame.Frame | frame.Damage | None = None
        try:
            fd = _open_regular(f"q{chunk:05d}", self._dfd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            if not size:
                return None
            with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                for last in frame.scan(buf, 0, size if whole else off, legacy=_is_legacy(buf)):
                    pass
        if not isinstance(last, frame.Frame) or last.seq is None or (not whole and last.end != off):
            return None
        return last.seq + last.nops

    def _raw_entries(self, start: int) -> Iterator[Entry]:
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
        name = f"q{chunk:05d}"
        try:
            fd = _open_regular(name, self._dfd)
        except OSError as exc:
            if cannot_read_now(exc):
                raise
            end = base + limit if limit else (chunk + 1) << POS_SHIFT
            if offset < end - base and limit != 0:
                why = "is missing" if isinstance(exc, FileNotFoundError) else f"is not a regular file, not read ({exc.strerror or exc})"
                yield Entry(base + offset, end, None, f"chunk file {name} {why}", lost=None)
            return
        with os.fdopen(fd, "rb") as fp:
            size = os.fstat(fp.fileno()).st_size
            end = size if limit is None else limit
            avail = min(size, end)
            held: Entry | None = None  # damage at the end of the bytes, merged with a short file below
            if offset < avail:
                with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    released = 0
                    # A hole (a sparse file's gigabytes of nothing) is stepped over, never read.
                    data = data_extents(fp.fileno(), offset, avail)
                    for item in frame.scan(buf, offset, avail, legacy=_is_legacy(buf), data=data):
                        if item.start - released >= _RELEASE_EVERY:
                            upto = item.start - item.start % mmap.PAGESIZE
                            buf.madvise(mmap.MADV_DONTNEED, released, upto - released)
                            released = upto
                        if held is not None:
                            yield held
                            held = None
                        if isinstance(item, frame.Frame):
                            if item.kind != frame.KIND_META:
                                yield Entry(base + item.start, base + item.end, item.payload, None, b"", item.kind,
                                            0, item.seq, item.nops)
                            else:
                                yield Entry(base + item.start, base + item.end, None, "unexpected metadata frame")
                        else:
                            raw = bytes(buf[item.start : min(item.end, item.start + QUARANTINE_INLINE)])
                            held = Entry(base + item.start, base + item.end, None, item.reason, raw)
            if size < end and offset < end:
                short = f"chunk {name} is {end - size} bytes shorter than info says or was acknowledged"
                if held is not None:  # one torn record, one report
                    yield held._replace(end=base + end, damage=f"{short} ({held.damage})")
                    return
                yield Entry(base + max(size, offset), base + end, None, short)
            elif held is not None:
                yield held

    def span_data(self, start: int, end: int) -> SpanData | None:
        """The stored bytes of ``[start, end)`` (within one chunk), for copying a damaged span aside;
        None if its chunk cannot be opened."""
        chunk = start >> POS_SHIFT
        stop = end if end >> POS_SHIFT == chunk else (chunk << POS_SHIFT) | _OFFSET_MASK
        try:
            fd = _open_regular(f"q{chunk:05d}", self._dfd)
        except OSError:
            return None
        return SpanData(fd, start & _OFFSET_MASK, stop & _OFFSET_MASK)


class SpanData:
    """A span of a chunk file as its ranges that hold data (holes left out, they read as zeros)."""

    def __init__(self, fd: int, lo: int, hi: int) -> None:
        self.fd, self.lo = fd, lo
        self.size = hi - lo  # what the span covers, holes included
        self.extents = data_extents(fd, lo, hi)
        self.data_bytes = sum(b - a for a, b in self.extents)  # what copying it writes

    def blocks(self, block: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
        """(offset within the span, bytes) of its data, block by block."""
        for a, b in self.extents:
            pos = a
            while pos < b:
                data = os.pread(self.fd, min(block, b - pos), pos)
                if not data:
                    return  # cut shorter meanwhile
                yield pos - self.lo, data
                pos += len(data)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> SpanData:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _reach(bounds: list[tuple[int, int | None]], acked: int | None) -> list[tuple[int, int | None]]:
    """``bounds`` extended to the acknowledged position when that lies past them."""
    if acked is None or not bounds:
        return bounds
    chunk, off = acked >> POS_SHIFT, acked & _OFFSET_MASK
    last, limit = bounds[-1]
    if chunk < last or chunk == last and (limit is None or off <= limit):
        return bounds
    if chunk == last:
        return [*bounds[:-1], (last, off)]
    return [*bounds[:-1], (last, None), *((n, None) for n in range(last + 1, chunk)), (chunk, off)]


def _clip(bounds: list[tuple[int, int | None]], acked: int | None) -> list[tuple[int, int | None]]:
    """``bounds`` cut at the acknowledged position (nothing when none was published yet)."""
    if acked is None:
        return []
    chunk, off = acked >> POS_SHIFT, acked & _OFFSET_MASK
    out: list[tuple[int, int | None]] = []
    for n, limit in bounds:
        if n < chunk:
            out.append((n, limit))
        elif n == chunk:
            out.append((n, off if limit is None else min(off, limit)))
    return out


def _is_legacy(buf: mmap.mmap) -> bool:
    """A chunk written before frame version 2 (its payloads are not stuffed)."""
    return buf[:3] == frame.V1_MAGIC


def _settle(held: list[Entry], lost: int | None) -> Iterator[Entry]:
    """Damaged spans with the operations they lost (all counted on the last: one gap, one count)."""
    for i, entry in enumerate(held):
        yield entry._replace(lost=lost if i == len(held) - 1 else 0 if lost is not None else None)
