"""Spool records decoded the one way the loop, the journal and the push all read them."""

from __future__ import annotations

import msgspec

from ..schemas.envelope import Record
from ..values import loads

__all__ = ["decode_record"]

_decode_record = msgspec.msgpack.Decoder(Record).decode
_decode_json_record = msgspec.json.Decoder(Record).decode


def decode_record(payload: bytes, is_json: bool) -> tuple[Record, bool]:
    """The record, and whether invalid text in it had to be replaced (JSON records only).

    Raises whatever a hostile payload provokes; callers turn that into a dead letter.
    """
    try:
        return (_decode_json_record if is_json else _decode_record)(payload), False
    except (msgspec.DecodeError, UnicodeDecodeError):
        if not is_json:
            raise
    # Invalid UTF-8, unpaired surrogates, numbers too large for a double: the
    # rules every producer applies at enqueue (codi_queue.values).
    import json

    value = loads(payload)
    return _decode_json_record(json.dumps(value, ensure_ascii=False).encode()), True
