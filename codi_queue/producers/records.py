"""Spool records as producers build them: the size split both paths share, and JSON records.

Hooks run on every tool call, and on this class of machine importing msgspec
alone costs about as much as three bare interpreter starts. So besides the
validating path (``validate.pack_records``, MessagePack) there is this one:
the same envelope and record as JSON, built with the standard library from
the layout ``schemas/wire.py`` publishes (generated from the Structs, so the
two cannot drift). The consumer decodes both into the same Structs and
validates every body then (a body that does not validate becomes a dead
letter with the reason, visible in ``status``).

Use the JSON path only where the caller cannot act on a validation error
anyway (hooks, tailers); everything else goes through the validating API.
"""

from __future__ import annotations

import os
import sys
import time
TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

from .. import jsontext
from ..errors import shown
from ..ids import new_op_id
from ..paths import Paths
from ..queue.frame import JsonRecord
from ..schemas.wire import ENVELOPE_FIELDS, MAX_RECORD_BYTES, NAME_MAX, OP_VERSIONS, RECORD_FIELDS

__all__ = ["Op", "json_records", "append_ops", "append_records", "producer_name", "batches_within", "fit_name"]

# One operation as producers hand it over: (operation, body, op id or None for a fresh one).
Op = tuple[str, "dict[str, Any]", "str | None"]

# Room for a record's own framing around its envelopes: an array header, the
# count and the time (MessagePack: at most 24 bytes; JSON: a few more digits).
_RECORD_HEAD = 64


def fit_name(value: Any) -> str | None:
    """An identifier read from someone else's file or payload (a session id, a model, a tool
    name) as a name column holds it: a string longer than any real one is cut and marked,
    never the reason the whole operation is refused; anything but a non-empty string is None."""
    return shown(value, NAME_MAX) if isinstance(value, str) and value else None


_names: dict[tuple[str | None, str, int], str] = {}


def producer_name(kind: str | None = None) -> str:
    """``kind@host:pid``: who wrote an operation. ``kind`` defaults to the program's name."""
    argv0 = sys.argv[0] if sys.argv else ""
    key = (kind, argv0, os.getpid())  # a forked child is another producer
    name = _names.get(key)
    if name is None:
        name = _names[key] = f"{kind or os.path.basename(argv0) or 'python'}@{os.uname().nodename}:{key[2]}"
    return name


def batches_within(envelopes: Sequence[bytes], limit: int = MAX_RECORD_BYTES) -> list[Sequence[bytes]]:
    """Encoded envelopes cut into runs whose record stays under ``limit`` bytes: each envelope
    counts its exact length plus one separator, the record its head."""
    batches: list[Sequence[bytes]] = []
    start, size = 0, _RECORD_HEAD
    for i, env in enumerate(envelopes):
        if i > start and size + len(env) + 1 > limit:
            batches.append(envelopes[start:i])
            start, size = i, _RECORD_HEAD
        size += len(env) + 1
    if start < len(envelopes):
        batches.append(envelopes[start:])
    return batches


def _envelope(op: str, body: dict[str, Any], op_id: str | None, now: float, producer: str) -> bytes:
    # An operation nobody defined still travels (version 0): the consumer files it as a dead letter.
    fields = {"id": op_id or new_op_id(), "op": op, "v": OP_VERSIONS.get(op, 0), "ts": now, "producer": producer,
              "body": body}
    text = jsontext.dumps([fields.get(name) for name in ENVELOPE_FIELDS], separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Unpaired surrogates (a truncated emoji escape, an undecodable argv
        # byte): replaced with U+FFFD, the rule at every entry point.
        from ..values import clean_text

        return clean_text(text).encode("utf-8")


def json_records(ops: Iterable[Op], producer: str) -> list[JsonRecord]:
    """JSON records for the operations, each under the record size limit."""
    now = time.time()
    producer = fit_name(producer) or producer_name()  # who wrote it is a name: not a 40 MB one on every envelope
    envelopes = [_envelope(op, body, op_id, now, producer) for op, body, op_id in ops]
    return [_record(batch, now) for batch in batches_within(envelopes)]


def _record(envelopes: Sequence[bytes], now: float) -> JsonRecord:
    fields = {"n": str(len(envelopes)).encode(), "ts": repr(now).encode(), "ops": b"[" + b",".join(envelopes) + b"]"}
    return JsonRecord(b"[" + b",".join(fields[name] for name in RECORD_FIELDS) + b"]")


_shared_spool: Any = None  # queue.spool.shared_spool, imported at the first append


def append_records(paths: Paths, records: Sequence[bytes]) -> None:
    """Durably append encoded records (MessagePack or ``JsonRecord``); raises ``SpoolError``."""
    global _shared_spool
    if _shared_spool is None:
        from ..queue.spool import shared_spool as _shared_spool
    _shared_spool(paths.spool, paths.archive).append(records)


def append_ops(paths: Paths, ops: Sequence[Op], producer: str) -> None:
    """Durably append the operations; raises ``SpoolError``."""
    if ops:
        append_records(paths, json_records(ops, producer))
