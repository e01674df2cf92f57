"""The Python producer API: ``enqueue`` and ``enqueue_many``.

Fire-and-forget for the caller, but never silent: an invalid operation is a
programming error and raises ``InvalidOperation``; an infrastructure fault
(spool unwritable, disk full) is recorded in the error log that ``status``
reports and the call returns False, so the hook that called it keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import SpoolError
from ..paths import resolve_cached
from .records import append_records
from .validate import encode_body, pack_records, validate

__all__ = ["enqueue", "enqueue_many", "append_records"]

Home = str | os.PathLike[str] | None


def enqueue(op: str, body: Mapping[str, Any], *, home: Home = None, producer: str | None = None) -> bool:
    """Validate one operation and append it durably; True once it is on disk."""
    return enqueue_many(op, (body,), home=home, producer=producer)


def enqueue_many(op: str, bodies: Iterable[Mapping[str, Any]], *, home: Home = None, producer: str | None = None) -> bool:
    """Validate every body first, then append them all in one durable step.

    Raises ``InvalidOperation`` (nothing is appended) if any body is invalid;
    its ``record`` is the 1-based position of the first bad body. ``home`` is
    a path (``str`` or ``pathlib.Path``); an argument of another type is a
    ``TypeError``.
    """
    where = _home(home)
    if producer is not None and not isinstance(producer, str):
        raise TypeError(f"producer must be a str or None, not {type(producer).__name__}")
    encoded = [encode_body(validate(op, body, record=i), op, i) for i, body in enumerate(bodies, 1)]
    if not encoded:
        return True
    records = pack_records(op, encoded, producer)
    paths = resolve_cached(where)
    try:
        append_records(paths, records)
    except SpoolError as exc:
        from ..errorlog import record_error

        record_error(paths.error_log, "producer", str(exc), op=op, operations=len(encoded), errno=exc.errno)
        return False
    return True


def _home(home: Home) -> str | None:
    """The home as text: a ``pathlib.Path`` had failed deep inside with an AttributeError."""
    if home is None or isinstance(home, str):
        return home
    if isinstance(home, os.PathLike):
        return os.fsdecode(os.fspath(home))  # bytes that are not UTF-8 become surrogates: refused as such
    raise TypeError(f"home must be a path (str or os.PathLike) or None, not {type(home).__name__}")
