"""Turn producer input into validated, encoded records, with errors that say where and why."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ..errors import InvalidOperation, did_you_mean, unknown_operation
from ..schemas.envelope import MAX_OP_BYTES, MAX_RECORD_BYTES, Envelope, RawRecord, new_op_id
from ..schemas.registry import OPS, OpSpec
from ..schemas.types import OpBase
from ..schemas.vocab import outside
from ..values import clean_text, clean_value
from .records import batches_within, fit_name, producer_name

__all__ = [
    "MAX_OP_BYTES",
    "MAX_RECORD_BYTES",
    "validate",
    "decode_json",
    "encode_body",
    "pack_records",
    "invalid_from_msgspec",
]

_encode = msgspec.msgpack.Encoder().encode
_AT = re.compile(r"^(?P<reason>.*?) - at `\$(?:\.)?(?P<path>[^`]*)`$", re.S)
_NAMED = re.compile(r"field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]+)`")
_json_decoders: dict[str, msgspec.json.Decoder[Any]] = {}


def spec_or_raise(op: str, record: int | None = None) -> OpSpec:
    spec = OPS.get(op)
    if spec is None:
        raise unknown_operation(op, OPS, record)
    return spec


def invalid_from_msgspec(exc: msgspec.DecodeError, op: str, record: int | None) -> InvalidOperation:
    text = str(exc)
    unknown = _UNKNOWN.match(text)
    spec = OPS.get(op)
    if unknown and spec is not None:
        text += did_you_mean(unknown.group(1), spec.columns)
    m = _AT.match(text)
    if m:
        return InvalidOperation(m.group("reason"), op=op, field=m.group("path") or None, record=record)
    named = _NAMED.search(text)
    if named and isinstance(exc, msgspec.ValidationError):
        return InvalidOperation(text, op=op, field=named.group("field"), record=record)
    return InvalidOperation(text, op=op, record=record)


def validate(op: str, body: Mapping[str, Any], *, record: int | None = None) -> OpBase:
    """The body as its operation's Struct; ``InvalidOperation`` saying which field and why."""
    spec = spec_or_raise(op, record)
    if not isinstance(body, Mapping):
        raise InvalidOperation(f"body must be an object, not {type(body).__name__}", op=op, record=record)
    try:
        item: OpBase = msgspec.convert(body if isinstance(body, dict) else dict(body), spec.type)
    except msgspec.ValidationError as exc:
        raise invalid_from_msgspec(exc, op, record) from None
    except RecursionError:
        raise InvalidOperation("nested too deeply", op=op, record=record) from None
    except (TypeError, ValueError, OverflowError) as exc:  # whatever else a hostile body provokes
        raise InvalidOperation(f"{type(exc).__name__}: {exc}", op=op, record=record) from None
    for field, why in outside(op, item):  # our own producers use our words and scales
        raise InvalidOperation(why, op=op, field=field, record=record)
    return item


def decode_json(op: str, line: bytes | str, *, record: int | None = None) -> OpBase:
    """Decode and validate one JSON object straight into its Struct (no dict in between)."""
    spec = spec_or_raise(op, record)
    dec = _json_decoders.get(op)
    if dec is None:
        dec = _json_decoders[op] = msgspec.json.Decoder(spec.type)
    try:
        op_struct: OpBase = dec.decode(line)
        return op_struct
    except msgspec.ValidationError as exc:
        raise invalid_from_msgspec(exc, op, record) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidOperation(f"not valid JSON: {exc}", op=op, record=record) from None


def encode_body(item: OpBase, op: str, record: int | None = None) -> bytes:
    """The operation's encoded body; ``InvalidOperation`` if it is over the size limit."""
    try:
        body = _encode(item)
    except UnicodeEncodeError:
        # Unpaired surrogates in a text field: replaced with U+FFFD (codi_queue.values).
        item = msgspec.convert(clean_value(msgspec.to_builtins(item)), type(item))
        body = _encode(item)
    if len(body) > MAX_OP_BYTES:
        raise InvalidOperation(
            f"operation is {len(body)} bytes encoded, over the {MAX_OP_BYTES}-byte limit", op=op, record=record
        )
    return body


def pack_records(
    op: str, bodies: Iterable[bytes], producer: str | None = None, ids: Sequence[str] | None = None
) -> list[bytes]:
    """Envelope encoded bodies into spool records, each under ``MAX_RECORD_BYTES``.

    ``ids`` gives each body its operation id (derived ids for re-readable
    sources); by default each gets a fresh UUIDv7.
    """
    spec = OPS[op]
    who = clean_text(fit_name(producer) or producer_name())  # a name, cut as names are
    now = time.time()
    envelopes = [
        _encode(Envelope(clean_text(ids[n]) if ids is not None else new_op_id(), op, spec.version, now, who,
                         msgspec.Raw(body)))
        for n, body in enumerate(bodies)
    ]
    return [_encode(RawRecord(len(batch), now, [msgspec.Raw(e) for e in batch]))
            for batch in batches_within(envelopes, MAX_RECORD_BYTES)]
