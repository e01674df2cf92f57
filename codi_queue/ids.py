"""Operation ids: UUIDv7 strings, time-ordered and unique (standard library only).

``new_op_id`` is for fresh operations. ``derived_op_id`` is for operations
read from a source that may be read again (a JSONL file, a transcript): the
same source line always gets the same id, so the consumer's op_id checks turn
a re-import into a no-op. Its time bits come from the line's own timestamp
and its counter bits from the line number, so later lines sort later.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_op_id", "derived_op_id", "op_id_time"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def _format(ms: int, rand_a: int, rand_b: int) -> str:
    v = ((ms & (1 << 48) - 1) << 80) | (0x7 << 76) | ((rand_a & 0xFFF) << 64) | (0b10 << 62) | (rand_b & (1 << 62) - 1)
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_op_id() -> str:
    """A UUIDv7; monotonic within this process (RFC 9562, method 1 counter)."""
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
    return _format(ms, seq, int.from_bytes(os.urandom(8), "big"))


def op_id_time(op_id: object) -> float | None:
    """The unix time a well-formed operation id carries (its first 48 bits, milliseconds), or
    None for anything else: ids order upserts, so one from elsewhere must be one of ours."""
    if not isinstance(op_id, str) or len(op_id) != 36 or op_id.count("-") != 4:
        return None
    digits = op_id.replace("-", "")
    if len(digits) != 32 or digits.strip("0123456789abcdef") or [len(p) for p in op_id.split("-")] != [8, 4, 4, 4, 12]:
        return None
    return int(digits[:12], 16) / 1000


def derived_op_id(ts_seconds: float, line_no: int, *source: str | bytes) -> str:
    """The same id for the same source line, every time it is read."""
    import hashlib  # not on the hook path: fresh ids need only os.urandom

    digest = hashlib.blake2b(digest_size=8)
    for part in source:
        # A file name that is not UTF-8 reaches us with its bytes as surrogates: hash the bytes.
        digest.update(part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part)
        digest.update(b"\0")
    digest.update(str(line_no).encode())
    h = int.from_bytes(digest.digest(), "big")
    return _format(int(ts_seconds * 1000), line_no >> 30, ((line_no & (1 << 30) - 1) << 32) | (h & 0xFFFFFFFF))
