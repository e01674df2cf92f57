"""The rules for values that do not fit, one per class, applied at every entry point.

* **Text** that is not valid Unicode: unpaired surrogates (what a truncated
  emoji becomes through a ``\\ud83d`` JSON escape, or an undecodable byte
  through ``surrogateescape``) and bytes that are not UTF-8 are replaced
  with U+FFFD REPLACEMENT CHARACTER. The operation is kept, never refused,
  and never stored as invalid UTF-8 (which SQLite, msgspec and every reader
  downstream would choke on).
* **Numbers** that do not fit a finite double (``1e400``, a 400-digit
  integer where a float is expected, NaN, Infinity): inside free-form JSON
  (``context``, ``data``, hook payloads) they are kept as their literal text,
  a JSON string, so nothing a tool sent is lost and the stored JSON stays
  valid; in a typed field they are invalid and refused at enqueue, naming
  the field. NaN and Infinity literals are not JSON and are refused.

Standard library only: the hook path uses it.
"""

from __future__ import annotations

import math

from . import jsontext

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from typing import Any

__all__ = ["clean_text", "clean_value", "decode_text", "loads", "REPLACEMENT"]

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with every unpaired surrogate replaced by U+FFFD (the same object when valid)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Only unpaired surrogates fail to encode: each one becomes U+FFFD.
        return "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def decode_text(data: bytes) -> str:
    """UTF-8 bytes as text, each invalid byte sequence replaced by U+FFFD."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace")


def clean_value(value: Any) -> Any:
    """A JSON-like value with every string (keys too) cleaned and every non-finite float
    replaced by its literal text; the same object when nothing changes."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _literal(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value


def _literal(value: float) -> str:
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _number(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text  # too large for a double: keep what was written


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """JSON under these rules: invalid UTF-8 replaced, numbers too large for a double kept
    as their literal text, NaN/Infinity refused (ValueError), and every string cleaned. A
    byte-order mark before the text (a file saved by a Windows editor, files joined with cat)
    marks the encoding and is not content: it is skipped, where json refuses the line."""
    text = decode_text(data) if isinstance(data, (bytes, bytearray)) else data
    if text.startswith("\ufeff"):
        text = text[1:]
    value = jsontext.loads(text, parse_float=_number, parse_constant=_no_constant)
    return clean_value(value) if _needs_cleaning(text) else value


def _needs_cleaning(text: str) -> bool:
    # Only an escape can put a surrogate into a decoded string; a raw one in
    # ``text`` (from surrogateescape) would be one too.
    return "\\ud" in text or "\\uD" in text or not text.isascii() and clean_text(text) is not text
