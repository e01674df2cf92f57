"""The Python producer API: ``enqueue`` and ``enqueue_many``.

Fire-and-forget for the caller, but never silent: an invalid operation is a
programming error and raises ``InvalidOperation``; an infrastructure fault
(spool unwritable, disk full) is recorded in the error log that ``status``
reports and the call returns False, so the hook that called it keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SpoolError
from ..paths import resolve_cached
from .records import append_records
from .validate import encode_body, pack_records, validate

__all__ = ["enqueue", "enqueue_many", "append_records"]

def enqueue(op: str, body: Mapping[str, Any], *, home: str | None = None, producer: str | None = None) -> bool:
    """Validate one operation and append it durably; True once it is on disk."""
    return enqueue_many(op, (body,), home=home, producer=producer)


def enqueue_many(
    op: str, bodies: Iterable[Mapping[str, Any]], *, home: str | None = None, producer: str | None = None
) -> bool:
    """Validate every body first, then append them all in one durable step.

    Raises ``InvalidOperation`` (nothing is appended) if any body is invalid;
    its ``record`` is the 1-based position of the first bad body.
    """
    encoded = [encode_body(validate(op, body, record=i), op, i) for i, body in enumerate(bodies, 1)]
    if not encoded:
        return True
    records = pack_records(op, encoded, producer)
    paths = resolve_cached(home)
    try:
        append_records(paths, records)
    except SpoolError as exc:
        from ..errorlog import record_error

        record_error(paths.error_log, "producer", str(exc), op=op, operations=len(encoded), errno=exc.errno)
        return False
    return True
