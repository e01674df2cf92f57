"""The hook path's JSON codec gives what the json package gives: values, text and errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codi_queue import jsontext

from .conftest import modules_loaded


def _outcome(call: Any, *args: Any, **kw: Any) -> tuple[str, str]:
    try:
        return "ok", repr(call(*args, **kw))
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError) as exc:
        return type(exc).__name__, str(exc)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} refused")


LOAD_OPTIONS: list[dict[str, Any]] = [{}, {"parse_float": str}, {"parse_constant": _refuse}]

TEXTS = [
    '{"a": 1}', ' [1, 2.5, -0, 1e400, "x\\ud800"] ', '"\\u00e9"', "NaN", "[Infinity, -Infinity]", "", "  ",
    '{"a":1} x', '{"a":', "\ufeff{}", "1 2", "[1,]", '{"a":1,"a":2}', "123456789012345678901234567890",
    '"\x01"', "true", "null \n", "[" * 100_000, '"\\ud83d\\ude00"', "{'a': 1}", "\t\r\n[]\t\r\n",
    " " * 3_000_000 + "[1]" + "\n" * 3_000_000, " \x0b[1]", "[1]\x0c", "\u3000[1]", "[1]\u00a0",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("options", LOAD_OPTIONS)
def test_loads_gives_what_json_gives(text: str, options: dict[str, Any]) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass"), bytearray(text.encode("utf-8", "surrogatepass"))):
        assert _outcome(jsontext.loads, data, **options) == _outcome(json.loads, data, **options)


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbf{}", '{"a": "\u00e9"}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"),
    "[1]".encode("utf-32-be"), b"\xff\xfe", b"{\x00", b"\xc3\x28", b'"\xed\xa0\x80"', b"\x00",
])
def test_bytes_in_other_encodings_and_invalid_utf8_are_read_as_json_reads_them(data: bytes) -> None:
    assert _outcome(jsontext.loads, data) == _outcome(json.loads, data)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_any_bytes_load_as_json_loads_them(data: bytes) -> None:
    assert _outcome(jsontext.loads, data) == _outcome(json.loads, data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_value_round_trips_as_json_writes_it(value: Any) -> None:
    for options in ({}, {"ensure_ascii": False}, {"separators": (",", ":")}, {"allow_nan": False}):
        text = _outcome(jsontext.dumps, value, **options)
        assert text == _outcome(json.dumps, value, **options)
        if text[0] == "ok":
            dumped = jsontext.dumps(value, **options)
            assert _outcome(jsontext.loads, dumped) == _outcome(json.loads, dumped)


@pytest.mark.parametrize("value", [
    object(), {(1, 2): 3}, {1: "a", None: "b", 2.5: "c", True: "d"}, [math.nan, math.inf], "\ud800", b"bytes",
])
@pytest.mark.parametrize("options", [{}, {"default": str}, {"ensure_ascii": False, "default": repr},
                                     {"allow_nan": False}])
def test_dumps_gives_what_json_gives(value: Any, options: dict[str, Any]) -> None:
    assert _outcome(jsontext.dumps, value, **options) == _outcome(json.dumps, value, **options)


def test_a_cycle_is_refused_as_json_refuses_it() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert _outcome(jsontext.dumps, loop) == _outcome(json.dumps, loop) == ("ValueError", "Circular reference detected")


def test_a_decode_error_is_json_s_own(tmp_path: Any) -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        jsontext.loads('{"a": 1} trailing')
    assert (caught.value.msg, caught.value.pos) == ("Extra data", 9)


def test_loading_and_dumping_import_neither_json_nor_re(tmp_path: Any) -> None:
    code = ("from codi_queue import jsontext\n"
            "assert jsontext.loads(jsontext.dumps({'a': [1, 2.5, 'é']}, ensure_ascii=False)) == {'a': [1, 2.5, 'é']}\n"
            "import sys\nloaded = sorted(m for m in ('json', 're') if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    assert modules_loaded(tmp_path, code, ()) == []


@pytest.mark.parametrize("codec", [None, "other"])
def test_without_a_usable_c_codec_json_does_the_work(monkeypatch: pytest.MonkeyPatch, codec: Any) -> None:
    class Other:  # a C codec whose functions take other arguments than this Python's
        def make_scanner(self) -> None: ...
        def make_encoder(self) -> None: ...
        encode_basestring = staticmethod(json.encoder.encode_basestring)
        encode_basestring_ascii = staticmethod(json.encoder.encode_basestring_ascii)

    monkeypatch.setattr(jsontext, "_C", None if codec is None else Other())
    monkeypatch.setattr(jsontext, "_scanners", {})
    for text in TEXTS[:12]:
        assert _outcome(jsontext.loads, text) == _outcome(json.loads, text)
    for value in ({"a": [1, 2.5, "é"]}, "é", [math.nan], object()):
        for options in ({}, {"ensure_ascii": False, "separators": (",", ":")}, {"allow_nan": False}):
            assert _outcome(jsontext.dumps, value, **options) == _outcome(json.dumps, value, **options)
