"""The envelope around every operation, and the record that carries one or many.

A spool record is one ``Record``: the operations one producer call appended
in one durable step. Bodies stay encoded (``msgspec.Raw``) inside the
envelope, so routing a record never decodes them and one bad body costs one
dead letter, not the record. All are ``array_like`` (compact, fast); new fields go at the end with
defaults so old records still decode.
"""

from __future__ import annotations

import os
import threading
import time

import msgspec

__all__ = ["Envelope", "Record", "RecordHead", "new_op_id"]


class Envelope(msgspec.Struct, array_like=True):
    id: str  # UUIDv7: time-ordered and unique
    op: str
    v: int  # the operation's schema version at enqueue
    ts: float  # enqueue time, unix seconds
    producer: str
    body: msgspec.Raw  # the encoded Operation (tagged), decoded only when applied


class Record(msgspec.Struct, array_like=True):
    n: int
    ts: float  # enqueue time of the first operation
    ops: list[Envelope]


class RecordHead(msgspec.Struct, array_like=True):
    """What ``status`` needs of a record without decoding its operations."""

    n: int
    ts: float


_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_op_id() -> str:
    """A UUIDv7 string; monotonic within this process (RFC 9562, method 1 counter)."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF  # leave room to count up
        else:
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
        ms, seq = _last_ms, _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    v = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
