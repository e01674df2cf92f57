"""The envelope around every operation, and the record that carries one or many.

A spool record is one ``Record``: the operations one producer call appended
in one durable step. Bodies stay encoded (``msgspec.Raw``) inside the
envelope, so routing a record never decodes them and one bad body costs one
dead letter, not the record. All are ``array_like`` (compact, fast); new fields go at the end with
defaults so old records still decode.
"""

from __future__ import annotations

import msgspec

from ..ids import new_op_id

__all__ = ["Envelope", "Record", "RawRecord", "RecordHead", "RecordOps", "OpName", "Rejected", "new_op_id", "MAX_OP_BYTES", "MAX_RECORD_BYTES"]

# The limits every producer path enforces (published to the standard-library
# path by ``schemas.gen`` in ``schemas/wire.py``; documented in the README).
MAX_OP_BYTES = 1024 * 1024  # one encoded operation body
MAX_RECORD_BYTES = 32 * 1024 * 1024  # a larger batch is split into several records


class Envelope(msgspec.Struct, array_like=True):
    id: str  # UUIDv7: time-ordered and unique
    op: str
    v: int  # the operation's schema version at enqueue
    ts: float  # enqueue time, unix seconds
    producer: str
    body: msgspec.Raw  # the encoded Operation (tagged), decoded only when applied
    # Added after release (hence the default): the dead letter this operation
    # re-applies; on success the consumer removes it, on failure it files the
    # new reason under that same dead letter.
    retry_of: str | None = None


class Record(msgspec.Struct, array_like=True):
    n: int
    ts: float  # enqueue time of the first operation
    ops: list[Envelope]


class RawRecord(msgspec.Struct, array_like=True):
    """A ``Record`` whose envelopes are encoded already (producers size records by them)."""

    n: int
    ts: float
    ops: list[msgspec.Raw]


class RecordHead(msgspec.Struct, array_like=True):
    """What ``status`` needs of a record without decoding its operations."""

    n: int
    ts: float


class OpName(msgspec.Struct, array_like=True):
    """An envelope's id and operation, the rest skipped (what each tier still owes, for ``status``)."""

    id: str
    op: str


class RecordOps(msgspec.Struct, array_like=True):
    n: int
    ts: float
    ops: list[OpName]


class Rejected(msgspec.Struct, array_like=True):
    """A source line that did not become an operation; the consumer files it as a dead letter."""

    op: str  # the operation it was meant to be
    source: str
    line: int
    reason: str
    raw: str
    # The line's length in bytes when ``raw`` holds only its start (a line past the reader's
    # limit); 0: ``raw`` is the whole line. Last and defaulted: reports filed before it decode.
    size: int = 0
