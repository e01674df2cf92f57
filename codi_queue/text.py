"""The one rule for text that is not valid Unicode, applied at every entry point.

Unpaired surrogates (what a truncated emoji becomes through a ``\\ud83d``
JSON escape, or an undecodable byte through ``surrogateescape``) and bytes
that are not UTF-8 are replaced with U+FFFD REPLACEMENT CHARACTER. The
operation is kept, never refused, and never stored as invalid UTF-8 (which
SQLite, msgspec and every reader downstream would choke on). Standard
library only: the hook path uses it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["clean_text", "clean_value", "decode_text", "REPLACEMENT"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every unpaired surrogate replaced by U+FFFD (the same object when valid)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(REPLACEMENT, text)
    return text


def decode_text(data: bytes) -> str:
    """UTF-8 bytes as text, each invalid byte sequence replaced by U+FFFD."""
    return clean_text(data.decode("utf-8", "replace"))


def clean_value(value: Any) -> Any:
    """A JSON-like value with every string (keys too) cleaned; the same object when nothing changes."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_value(v) for v in value]
    return value
