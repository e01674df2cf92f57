"""Timestamps as producers send them (unix seconds, unix milliseconds, ISO 8601) → unix seconds.

Standard library only: the Structs and the fast CLI check share it.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # typing costs milliseconds on every enqueue; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, TypeGuard

__all__ = ["normalize_timestamp", "SECONDS_BELOW", "is_seconds", "iso"]

# The accepted range is [1970, year 5138) in seconds. Numbers at or past its
# end are read as milliseconds (1e11 ms is 1973); ISO 8601 is never reread as
# milliseconds, so a normalised value normalises to itself (the consumer
# normalises again) and every entry point agrees on what it accepts.
_MS_FROM = 100_000_000_000  # 1e11: as seconds that is year 5138, as milliseconds 1973
SECONDS_BELOW = _MS_FROM  # an int in [0, SECONDS_BELOW) is unix seconds and normalises to itself
_RANGE = "between 1970 and the year 5138"


def is_seconds(value: object) -> TypeGuard[int | float]:
    """Whether a number read back from a file or a database (a marker's time, a last push) is a
    time we could have written: unix seconds from 1970 to the year 5138, so not NaN, infinite,
    text or a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < SECONDS_BELOW


def normalize_timestamp(value: Any) -> int:
    """Unix seconds from unix seconds, unix milliseconds or ISO 8601; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected unix seconds, unix milliseconds or ISO 8601, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if text.replace(".", "", 1).isdigit() and len(text) <= 32:
            value = float(text)
        else:
            return _parse_iso(text)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("timestamp must be finite")
        if value < 0:
            raise ValueError(f"timestamp {value} is before 1970")
        if value >= _MS_FROM * 1000:  # also keeps huge integers away from float division
            raise ValueError(f"timestamp {str(value)[:24]} is neither unix seconds nor milliseconds {_RANGE}")
        if value >= _MS_FROM:
            value = value / 1000
        return int(value)
    raise ValueError(f"expected unix seconds, unix milliseconds or ISO 8601, got {type(value).__name__}")


def _parse_iso(text: str) -> int:
    from datetime import datetime, timezone  # only string timestamps pay for datetime

    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = int(parsed.timestamp())
    except (ValueError, OverflowError):
        raise ValueError(f"{text[:40]!r} is not unix seconds, unix milliseconds or ISO 8601") from None
    if not 0 <= seconds < _MS_FROM:
        raise ValueError(f"{text[:40]!r} is not {_RANGE}")
    return seconds


def iso(seconds: int) -> str:
    """Unix seconds as ISO 8601 in UTC, as a user may type it back (``import --since``)."""
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
