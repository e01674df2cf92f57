"""Checksummed frames: the only bytes the spool ever holds.

A frame is a 12-byte header and a payload::

    magic "CQ" | version u8 | kind u8 | length u32 LE | crc32 u32 LE | payload

The CRC covers the first eight header bytes and the payload, so a flipped bit
in the length or kind is caught too. Record payloads are msgspec
MessagePack (``KIND_RECORD``) or, from the stdlib-only hook path, JSON
(``KIND_JSON_RECORD``); both decode into the same ``Record`` Struct. There is
no code-executing decoder anywhere on the read path.

This module is also the ``serializer`` handed to persist-queue's ``Queue``
(``dump(value, fp)`` / ``load(fp)``): records arrive as ready-encoded bytes;
persist-queue's own ``info`` dict is JSON, framed the same way, so opening a
queue needs nothing beyond the standard library.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, Union

from ..errors import CorruptRecord

if TYPE_CHECKING:
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
    "dump",
    "load",
    "Frame",
    "Damage",
    "scan",
    "JsonRecord",
]

MAGIC = b"CQ"
VERSION = 1
KIND_RECORD = 0
KIND_META = 1
KIND_JSON_RECORD = 2
_KINDS = (KIND_RECORD, KIND_META, KIND_JSON_RECORD)
HEADER = struct.Struct("<2sBBII")
MAX_PAYLOAD = 64 * 1024 * 1024  # a frame claiming more is corrupt, not a reason to allocate

Buffer = Union[bytes, bytearray, "mmap.mmap"]


def _encode_meta(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _decode_meta(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise CorruptRecord(f"metadata is not JSON: {exc}") from None


def encode_frame(payload: bytes, kind: int = KIND_RECORD) -> bytes:
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"payload of {n} bytes exceeds the frame limit of {MAX_PAYLOAD}")
    head = struct.pack("<2sBBI", MAGIC, VERSION, kind, n)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc) + payload


def _check_header(buf: Buffer, offset: int, limit: int) -> tuple[int, int, int] | str:
    """(kind, length, crc) of a plausible header at ``offset``, else why not."""
    if limit - offset < HEADER.size:
        return "truncated header"
    magic, version, kind, length, crc = HEADER.unpack_from(buf, offset)
    if magic != MAGIC:
        return "bad magic"
    if version != VERSION:
        return f"unknown frame version {version}"
    if kind not in _KINDS:
        return f"unknown frame kind {kind}"
    if length > MAX_PAYLOAD:
        return f"implausible length {length}"
    if offset + HEADER.size + length > limit:
        return "truncated payload"
    return kind, length, crc


def _crc_ok(buf: Buffer, offset: int, length: int, crc: int) -> bool:
    body = offset + HEADER.size
    # A scoped view: an export left open would keep an mmap from closing.
    with memoryview(buf) as mv:
        return zlib.crc32(mv[body : body + length], zlib.crc32(mv[offset : offset + 8])) == crc


def decode_frame(data: bytes) -> tuple[int, bytes]:
    """Kind and payload of exactly one frame; ``CorruptRecord`` if it is not intact."""
    got = _check_header(data, 0, len(data))
    if isinstance(got, str):
        raise CorruptRecord(got, offset=0)
    kind, length, crc = got
    if HEADER.size + length != len(data):
        raise CorruptRecord("trailing bytes after frame", offset=0)
    if not _crc_ok(data, 0, length, crc):
        raise CorruptRecord("checksum mismatch", offset=0)
    return kind, data[HEADER.size :]


# -- persist-queue serializer protocol -------------------------------------------------


class JsonRecord(bytes):
    """Record bytes that are JSON, not MessagePack (the stdlib-only producer path)."""


def dump(value: Any, fp: IO[bytes]) -> None:
    if isinstance(value, JsonRecord):
        fp.write(encode_frame(bytes(value), KIND_JSON_RECORD))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        fp.write(encode_frame(bytes(value), KIND_RECORD))
    else:
        fp.write(encode_frame(_encode_meta(value), KIND_META))


def load(fp: IO[bytes]) -> Any:
    head = fp.read(HEADER.size)
    if len(head) < HEADER.size:
        raise CorruptRecord("truncated header")
    length = HEADER.unpack(head)[3]
    if length > MAX_PAYLOAD:
        raise CorruptRecord(f"implausible length {length}")
    kind, payload = decode_frame(head + fp.read(length))
    if kind == KIND_META:
        return _decode_meta(payload)
    return JsonRecord(payload) if kind == KIND_JSON_RECORD else payload


# -- recovery-grade scanning -----------------------------------------------------------


class Frame:
    """An intact frame at ``[start, end)``. (Plain slotted classes: NamedTuple
    creation costs milliseconds of start-up on the hook path.)"""

    __slots__ = ("start", "end", "kind", "payload")

    def __init__(self, start: int, end: int, kind: int, payload: bytes) -> None:
        self.start, self.end, self.kind, self.payload = start, end, kind, payload


class Damage:
    """A span ``[start, end)`` that holds no intact frame, and why."""

    __slots__ = ("start", "end", "reason")

    def __init__(self, start: int, end: int, reason: str) -> None:
        self.start, self.end, self.reason = start, end, reason


def scan(buf: Buffer, start: int = 0, limit: int | None = None) -> Iterator[Frame | Damage]:
    """Every intact frame in ``buf[start:limit]``, and a ``Damage`` for each span between.

    After a bad frame the scan resynchronises on the next offset whose header
    is plausible *and* whose checksum matches, so one flipped bit costs one
    record, not the rest of the file.
    """
    end = len(buf) if limit is None else min(limit, len(buf))
    pos = start
    while pos < end:
        got = _check_header(buf, pos, end)
        if not isinstance(got, str):
            kind, length, crc = got
            if _crc_ok(buf, pos, length, crc):
                stop = pos + HEADER.size + length
                yield Frame(pos, stop, kind, bytes(buf[pos + HEADER.size : stop]))
                pos = stop
                continue
            reason = "checksum mismatch"
        else:
            reason = got
        nxt = _resync(buf, pos + 1, end)
        yield Damage(pos, nxt, reason)
        pos = nxt


def _resync(buf: Buffer, pos: int, end: int) -> int:
    while True:
        pos = buf.find(MAGIC, pos, end)
        if pos < 0:
            return end
        got = _check_header(buf, pos, end)
        if not isinstance(got, str) and _crc_ok(buf, pos, got[1], got[2]):
            return pos
        pos += 1
