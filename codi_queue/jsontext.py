"""JSON text for the hook and enqueue paths, from the standard library's own C codec.

``json.loads``/``json.dumps`` run in ``_json``'s C scanner and encoder; the
``json`` package around them imports ``re`` for its pure-Python fallbacks,
and ``re`` brings ``enum``, ``functools`` and ``collections``: 8 ms of the
10 ms a bare interpreter takes here, paid by every hook. These two functions
call the same C code with the same settings, so the results are the same
(``tests/test_jsontext.py`` compares them on hostile input). Where the C
codec is missing, or a text needs ``json``'s encoding detection (a BOM, UTF-16
or UTF-32), the ``json`` package does the work; its errors
(``json.JSONDecodeError``, a ValueError) are raised either way, imported only
when one is.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

try:
    import _json

    _C: Any = _json
except ImportError:  # an interpreter without the C codec: the json package throughout
    _C = None

if TYPE_CHECKING:
    from collections.abc import Callable
    from json import JSONDecodeError
    from typing import Any

__all__ = ["loads", "dumps"]

_WHITESPACE = " \t\n\r"  # what json's decoder skips around the value
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """The attributes ``_json.make_scanner`` reads, as ``json.JSONDecoder`` sets them by default."""

    __slots__ = ("strict", "object_hook", "object_pairs_hook", "parse_float", "parse_int", "parse_constant", "memo")

    def __init__(self, parse_float: Callable[[str], Any] | None, parse_constant: Callable[[str], Any] | None) -> None:
        self.strict = True
        self.object_hook = self.object_pairs_hook = None
        self.parse_float = parse_float or float
        self.parse_int = int
        self.parse_constant = parse_constant or _CONSTANTS.__getitem__
        self.memo: dict[str, str] = {}


_scanners: dict[tuple[Any, Any], Any] = {}


def _error(msg: str, text: str, pos: int) -> JSONDecodeError:
    from json import JSONDecodeError

    return JSONDecodeError(msg, text, pos)


def _skip(text: str, pos: int) -> int:
    """Past the whitespace at ``pos`` (in C: a hostile text may hold megabytes of it)."""
    if pos < len(text) and text[pos] in _WHITESPACE:
        rest = text[pos:]
        pos += len(rest) - len(rest.lstrip(_WHITESPACE))
    return pos


def loads(data: str | bytes | bytearray, *, parse_float: Callable[[str], Any] | None = None,
          parse_constant: Callable[[str], Any] | None = None) -> Any:
    """``json.loads(data, parse_float=..., parse_constant=...)``."""
    scan = _scanner(parse_float, parse_constant)
    if scan is None or isinstance(data, (bytes, bytearray)) and (
            data[:4].find(0) >= 0 or data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:3] == b"\xef\xbb\xbf"):
        import json  # its encoding detection, or no C codec here

        return json.loads(data, parse_float=parse_float, parse_constant=parse_constant)
    text = data.decode("utf-8", "surrogatepass") if isinstance(data, (bytes, bytearray)) else data
    if not isinstance(text, str):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(data).__name__}")
    if text.startswith("\ufeff"):
        raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    try:
        value, end = scan(text, _skip(text, 0))
    except StopIteration as err:
        raise _error("Expecting value", text, err.value) from None
    end = _skip(text, end)
    if end != len(text):
        raise _error("Extra data", text, end)
    return value


def _scanner(parse_float: Callable[[str], Any] | None, parse_constant: Callable[[str], Any] | None) -> Any:
    """The C scanner for these settings (made once), or None where there is none to use."""
    key = (parse_float, parse_constant)
    scan = _scanners.get(key, False)
    if scan is False:
        try:
            scan = _C.make_scanner(_Context(parse_float, parse_constant))
        except (AttributeError, TypeError):  # no C codec, or one that wants other settings
            scan = None
        _scanners[key] = scan
    return scan


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(value: Any, *, ensure_ascii: bool = True, separators: tuple[str, str] | None = None,
          default: Callable[[Any], Any] | None = None, allow_nan: bool = True) -> str:
    """``json.dumps(value, ensure_ascii=..., separators=..., default=..., allow_nan=...)``."""
    try:
        quote = _C.encode_basestring_ascii if ensure_ascii else _C.encode_basestring
        if isinstance(value, str):
            return str(quote(value))
        item_sep, key_sep = separators or (", ", ": ")
        # markers {} checks for cycles, as json does by default; no indent, keys unsorted, none skipped
        encode = _C.make_encoder({}, default or _not_serializable, quote, None, key_sep, item_sep, False, False,
                                 allow_nan)
    except (AttributeError, TypeError):  # no C codec, or one that takes other arguments
        import json

        return json.dumps(value, ensure_ascii=ensure_ascii, separators=separators, default=default,
                          allow_nan=allow_nan)
    return "".join(encode(value, 0))
