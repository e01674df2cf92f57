"""Checksummed, self-delimiting frames: the only bytes the spool ever holds.

Version 2 (written today) is a 24-byte header and a payload::

    0xFF "CQ" | version u8 = 2 | kind u8 | nops u24 LE | length u32 LE | seq u64 LE | crc32 u32 LE | payload

* The payload is **byte-stuffed** so 0xFF never occurs in it (0xFE → FE 00,
  0xFF → FE 01). A frame start (0xFF "CQ" 2) can therefore only be a real
  header: resynchronising after damage never lands inside a payload, so no
  text an attacker puts in a field can be decoded as a frame of its own.
  JSON and the strings inside MessagePack are UTF-8, where 0xFE and 0xFF
  never occur, so stuffing almost never changes a byte.
* ``seq`` is the directory's count of operations before this record and
  ``nops`` the operations in it: a reader knows, from any two intact frames,
  how many operations lie between them, so every loss is reported as a count.
* The CRC covers the header's first twenty bytes and the (stuffed) payload.

Version 1 (``"CQ" | 1 | kind | length u32 | crc u32``, no stuffing, no
sequence) is still read, so spools and archives written before stay readable;
a damaged version-1 chunk resynchronises only on version-1 headers.

Record payloads are msgspec MessagePack (``KIND_RECORD``) or, from the
stdlib-only producer path, JSON (``KIND_JSON_RECORD``); both decode into the
same ``Record`` Struct. persist-queue's own ``info`` dict is JSON
(``KIND_META``). There is no code-executing decoder anywhere on the read path.
"""

from __future__ import annotations

import os
import struct
import zlib

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

from .. import jsontext
from ..errors import CorruptRecord

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import IO, Any, TypeAlias, Union

    import mmap

__all__ = [
    "MAGIC",
    "HEADER",
    "MAX_PAYLOAD",
    "KIND_RECORD",
    "KIND_META",
    "KIND_JSON_RECORD",
    "encode_frame",
    "decode_frame",
    "encode_meta",
    "record_ops",
    "FrameSerializer",
    "load",
    "Frame",
    "Damage",
    "scan",
    "continuing",
    "JsonRecord",
]

MAGIC = b"\xffCQ\x02"  # version 2: stuffing keeps 0xFF out of every payload
VERSION = 2
KIND_RECORD = 0
KIND_META = 1
KIND_JSON_RECORD = 2
_KINDS = (KIND_RECORD, KIND_META, KIND_JSON_RECORD)
HEADER = struct.Struct("<4sB3sIQI")  # magic+version, kind, nops (u24), length, seq, crc
_NOPS_MAX = (1 << 24) - 1
MAX_PAYLOAD = 64 * 1024 * 1024  # a frame claiming more is corrupt, not a reason to allocate

V1_MAGIC = b"CQ\x01"
V1_HEADER = struct.Struct("<2sBBII")

Buffer: TypeAlias = 'Union[bytes, bytearray, "mmap.mmap"]'


def encode_meta(value: Any) -> bytes:
    return jsontext.dumps(value, separators=(",", ":")).encode()


def _decode_meta(payload: bytes) -> Any:
    try:
        return jsontext.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise CorruptRecord(f"metadata is not JSON: {exc}") from None


def _stuff(payload: bytes) -> bytes:
    if b"\xfe" in payload or b"\xff" in payload:
        return payload.replace(b"\xfe", b"\xfe\x00").replace(b"\xff", b"\xfe\x01")
    return payload


def _unstuff(data: bytes) -> bytes:
    return _unstuffed(data, 0, len(data))


def _unstuffed(buf: Any, start: int, stop: int) -> bytes:
    """``buf[start:stop]`` (bytes or a mapped chunk) without its stuffing, copied once.

    Every 0xFE is an escape lead (FE 00 is FE, FE 01 is FF), so reading the byte after each
    is exact; a lead followed by anything else (never written) stays as it is. A payload of
    several MiB holds few leads: the bytes between them are joined from views, not copied
    by two whole-payload replaces and a slice as before."""
    i = buf.find(b"\xfe", start, stop)
    if i < 0:
        return bytes(buf[start:stop])
    view = memoryview(buf)
    out: list[Any] = []
    try:
        pos = start
        while i >= 0:
            out.append(view[pos:i])
            after = buf[i + 1] if i + 1 < stop else -1
            out.append(b"\xff" if after == 1 else b"\xfe")
            pos = i + 2 if after in (0, 1) else i + 1
            i = buf.find(b"\xfe", pos, stop)
        out.append(view[pos:stop])
        return b"".join(out)
    finally:
        out.clear()  # the views go before the chunk's mapping may be closed, whatever happened
        view.release()


def encode_frame(payload: bytes, kind: int = KIND_RECORD, seq: int = 0, nops: int = 0) -> bytes:
    body = _stuff(payload)
    n = len(body)
    if n > MAX_PAYLOAD:
        raise ValueError(f"payload of {n} bytes exceeds the frame limit of {MAX_PAYLOAD}")
    head = HEADER.pack(MAGIC, kind, min(nops, _NOPS_MAX).to_bytes(3, "little"), n, seq, 0)[:-4]
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + struct.pack("<I", crc) + body


class _Head:
    __slots__ = ("kind", "size", "length", "seq", "nops", "crc")

    def __init__(self, kind: int, size: int, length: int, seq: int | None, nops: int, crc: int) -> None:
        self.kind, self.size, self.length, self.seq, self.nops, self.crc = kind, size, length, seq, nops, crc


def _check_header(buf: Buffer, offset: int, limit: int) -> _Head | str:
    """The header at ``offset`` if it is plausible, else why not."""
    if buf[offset : offset + 4] == MAGIC:
        if limit - offset < HEADER.size:
            return "truncated header"
        _m, kind, nops, length, seq, crc = HEADER.unpack_from(buf, offset)
        head = _Head(kind, HEADER.size, length, seq, int.from_bytes(nops, "little"), crc)
    elif buf[offset : offset + 3] == V1_MAGIC:
        if limit - offset < V1_HEADER.size:
            return "truncated header"
        _m, _v, kind, length, crc = V1_HEADER.unpack_from(buf, offset)
        head = _Head(kind, V1_HEADER.size, length, None, 0, crc)
    elif limit - offset < 4 and MAGIC.startswith(bytes(buf[offset:limit])):
        return "truncated header"
    else:
        return "bad magic"
    if head.kind not in _KINDS:
        return f"unknown frame kind {head.kind}"
    if head.length > MAX_PAYLOAD:
        return f"implausible length {head.length}"
    if offset + head.size + head.length > limit:
        return "truncated payload"
    return head


def _crc_ok(buf: Buffer, offset: int, head: _Head) -> bool:
    body = offset + head.size
    # A scoped view: an export left open would keep an mmap from closing.
    with memoryview(buf) as mv:
        return zlib.crc32(mv[body : body + head.length], zlib.crc32(mv[offset : body - 4])) == head.crc


def decode_frame(data: bytes) -> tuple[int, bytes]:
    """Kind and payload of exactly one frame; ``CorruptRecord`` if it is not intact."""
    head = _check_header(data, 0, len(data))
    if isinstance(head, str):
        raise CorruptRecord(head, offset=0)
    if head.size + head.length != len(data):
        raise CorruptRecord("trailing bytes after frame", offset=0)
    if not _crc_ok(data, 0, head):
        raise CorruptRecord("checksum mismatch", offset=0)
    body = data[head.size :]
    return head.kind, (body if head.seq is None else _unstuff(body))


def record_ops(payload: bytes, kind: int) -> int:
    """How many operations a record holds, read from its head (``[n, ts, ops]``); 0 if unreadable.

    Both encodings start with the count: JSON ``[n,``, MessagePack a
    three-element array whose first element is an unsigned integer.
    """
    try:
        if kind == KIND_JSON_RECORD:
            return int(payload[1 : payload.index(b",", 1, 24)])
        if payload[0] == 0x93:
            first = payload[1]
            if first < 0x80:
                return first
            width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(first)
            if width:
                return int.from_bytes(payload[2 : 2 + width], "big")
    except (ValueError, IndexError):
        pass  # not a record head we can read: the count stays unknown (0)
    return 0


# -- persist-queue serializer protocol -------------------------------------------------


class JsonRecord(bytes):
    """Record bytes that are JSON, not MessagePack (the stdlib-only producer path)."""


class FrameSerializer:
    """persist-queue's ``serializer`` (``dump(value, fp)`` / ``load(fp)``) for one queue directory.

    Records arrive as ready-encoded bytes and are framed with the directory's
    running operation count (``info["ops"]``, kept by persist-queue in its
    own ``info`` dict); anything else is persist-queue's ``info``, framed as JSON.
    """

    def __init__(self) -> None:
        self.info: dict[str, Any] | None = None  # the queue's info, once it is loaded
        self.last_frame_bytes = 0  # the size of the last frame written (the queue rewrites info after a large one)

    def dump(self, value: Any, fp: IO[bytes]) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            kind = KIND_JSON_RECORD if isinstance(value, JsonRecord) else KIND_RECORD
            data = bytes(value)
            info = self.info if self.info is not None else {}
            seq = int(info.get("ops", 0))
            nops = record_ops(data, kind)
            framed = encode_frame(data, kind, seq, nops)
            fp.write(framed)
            info["ops"] = seq + nops
        else:
            framed = encode_frame(encode_meta(value), KIND_META)
            fp.write(framed)
        self.last_frame_bytes = len(framed)

    def load(self, fp: IO[bytes]) -> Any:
        return load(fp)


def load(fp: IO[bytes]) -> Any:
    first = fp.read(4)
    size = HEADER.size if first == MAGIC else V1_HEADER.size
    head = first + fp.read(size - len(first))
    got = _check_header(head, 0, len(head) + MAX_PAYLOAD)
    if isinstance(got, str):
        raise CorruptRecord("truncated header" if len(head) < size else got)
    kind, payload = decode_frame(head + fp.read(got.length))
    if kind == KIND_META:
        return _decode_meta(payload)
    return JsonRecord(payload) if kind == KIND_JSON_RECORD else payload


# -- recovery-grade scanning -----------------------------------------------------------


class Frame:
    """An intact frame at ``[start, end)``: its payload (unstuffed), and for version 2 its
    operation sequence ``seq`` and count ``nops`` (``seq`` is None for version 1).
    (Plain slotted classes: NamedTuple creation costs milliseconds of start-up on the hook path.)"""

    __slots__ = ("start", "end", "kind", "payload", "seq", "nops")

    def __init__(self, start: int, end: int, kind: int, payload: bytes, seq: int | None = None, nops: int = 0) -> None:
        self.start, self.end, self.kind, self.payload, self.seq, self.nops = start, end, kind, payload, seq, nops


class Damage:
    """A span ``[start, end)`` that holds no intact frame, and why."""

    __slots__ = ("start", "end", "reason")

    def __init__(self, start: int, end: int, reason: str) -> None:
        self.start, self.end, self.reason = start, end, reason


def scan(buf: Buffer, start: int = 0, limit: int | None = None, legacy: bool = False,
         data: Sequence[tuple[int, int]] | None = None) -> Iterator[Frame | Damage]:
    """Every intact frame in ``buf[start:limit]``, and a ``Damage`` for each span between.

    After a bad frame the scan resynchronises on the next version-2 header
    whose checksum matches (version-1 headers only when ``legacy``: a chunk
    written before version 2, whose payloads were not stuffed), so one
    flipped bit costs one record, not the rest of the file. ``data``: the
    ranges of ``buf`` that hold data (``fsutil.data_extents``); the search
    passes over the holes between them, which read as zeros and so hold no
    header (every byte of a magic is non-zero), without touching them.
    """
    end = len(buf) if limit is None else min(limit, len(buf))
    pos = start
    while pos < end:
        got = _check_header(buf, pos, end)
        if not isinstance(got, str):
            if _crc_ok(buf, pos, got):
                stop = pos + got.size + got.length
                # Version 2 is stuffed: unstuffed straight from the chunk, one copy.
                body = bytes(buf[pos + got.size : stop]) if got.seq is None else \
                    _unstuffed(buf, pos + got.size, stop)
                yield Frame(pos, stop, got.kind, body, got.seq, got.nops)
                pos = stop
                continue
            reason = "checksum mismatch"
        else:
            reason = got
        nxt = _resync(buf, pos + 1, end, legacy, data)
        yield Damage(pos, nxt, reason)
        pos = nxt


def continuing(fd: int, start: int, seq: int) -> Iterator[tuple[int, int]]:
    """(end, nops) of each intact record frame of the file ``fd`` from ``start`` that continues the
    sequence ``seq``.

    What recovery trusts past a head pointer that may be stale: a run of
    checksummed frames, each numbered exactly where the previous one left
    off, with nothing in between. It stops at the first byte that is not.
    Read a frame at a time (at most a header and ``MAX_PAYLOAD``), never what
    follows the run: that may be anything, gigabytes of a killed append or of
    a hole, and producers run this on every open. Read, not mapped: the live
    inbox's bytes past its head may be cut off meanwhile (a failed append).
    """
    pos, end = start, os.fstat(fd).st_size
    while pos < end:
        head = os.pread(fd, HEADER.size, pos)
        got = _check_header(head, 0, end - pos)
        if isinstance(got, str) or got.seq != seq or got.kind == KIND_META:
            return
        body = os.pread(fd, got.size + got.length, pos)
        if not _crc_ok(body, 0, got):  # also when the file was cut shorter meanwhile
            return
        pos += got.size + got.length
        seq += got.nops
        yield pos, got.nops


def _resync(buf: Buffer, pos: int, end: int, legacy: bool, data: Sequence[tuple[int, int]] | None = None) -> int:
    while True:
        stop = end
        if data is not None:
            import bisect  # only after damage: not a cost of the hook path

            # The data range holding pos, or the next one: a magic never lies in a hole.
            i = bisect.bisect_right(data, (pos, end)) - 1
            if i < 0 or data[i][1] <= pos:
                i += 1
            if i >= len(data) or data[i][0] >= end:
                return end
            pos, stop = max(pos, data[i][0]), min(data[i][1], end)
        if legacy:  # version-1 "CQ" headers, and version-2 ones appended after an upgrade
            found = buf.find(b"CQ", pos, stop)
            candidates = [] if found < 0 else [found - 1, found]
        else:
            found = buf.find(MAGIC, pos, stop)
            candidates = [] if found < 0 else [found]
        if found < 0:
            if stop >= end:
                return end
            pos = stop
            continue
        for cand in candidates:
            if cand < pos:
                continue
            got = _check_header(buf, cand, end)
            if not isinstance(got, str) and (legacy or got.seq is not None) and _crc_ok(buf, cand, got):
                return cand
        pos = found + 1
