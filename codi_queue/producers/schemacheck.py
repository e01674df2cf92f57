"""Validate operation bodies with the standard library, against the schema generated from the Structs.

``codi-queue enqueue`` is a new process per call, and importing msgspec alone
costs about four bare interpreter starts on this class of machine. This
check reads ``schemas/ops.schema.json`` (generated from the Structs, checked
for drift by a test) and reports errors phrased as msgspec would. The
consumer decodes every body with the Structs again, so the Structs remain the
authority; a property test holds the two to the same verdicts.
"""

from __future__ import annotations

import math
import os
import time

TYPE_CHECKING = False  # typing costs milliseconds on every enqueue; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

from .. import jsontext
from ..errors import InvalidOperation, did_you_mean, unknown_operation
from ..schemas.wire import MAX_OP_BYTES, TEXT_MAX
from ..timestamps import normalize_timestamp

__all__ = ["check", "load_schema", "decode_line"]

_schema: dict[str, Any] | None = None
_NAMES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "null",
          "object": "object", "array": "array"}


def load_schema() -> dict[str, Any]:
    global _schema
    if _schema is None:
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "schemas", "ops.schema.json")
        with open(path, "rb") as fp:
            _schema = jsontext.loads(fp.read())["ops"]
    return _schema


def decode_line(op: str, line: bytes, record: int) -> Any:
    """One JSON line under the value rules (``codi_queue.values``): bad text replaced, huge numbers kept as text."""
    from ..values import loads

    try:
        return loads(line)
    except (ValueError, RecursionError) as exc:
        raise InvalidOperation(f"not valid JSON: {exc}", op=op, record=record) from None


def _typename(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else type(value).__name__


def _matches(node: dict[str, Any], value: Any) -> bool:
    if "enum" in node:
        return isinstance(value, str)
    t = node.get("type")
    if t == "string":
        return isinstance(value, str)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    return True


def _name(node: dict[str, Any]) -> str:
    return "str" if "enum" in node else _NAMES.get(node.get("type", ""), "any")


def _error(node: dict[str, Any], value: Any) -> str | None:
    """msgspec's wording for why ``value`` does not fit ``node``, or None."""
    if "anyOf" in node:
        for alt in node["anyOf"]:
            if _matches(alt, value):
                return _error(alt, value)
        names = " | ".join(dict.fromkeys(_name(a) for a in node["anyOf"]))
        return f"Expected `{names}`, got `{_typename(value)}`"
    if not _matches(node, value):
        return f"Expected `{_name(node)}`, got `{_typename(value)}`"
    if "enum" in node and value not in node["enum"]:
        return f"Invalid enum value {value!r}"
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            return f"Expected `str` of length >= {node['minLength']}"
        if "maxLength" in node and len(value) > node["maxLength"]:
            return f"Expected `str` of length <= {node['maxLength']}"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        kind = "int" if node.get("type") == "integer" else "float"
        if isinstance(value, float) and not math.isfinite(value):
            return f"Expected `{kind}` that is finite"
        if "minimum" in node and value < node["minimum"]:
            return f"Expected `{kind}` >= {node['minimum']}"
        if "maximum" in node and value > node["maximum"]:
            return f"Expected `{kind}` <= {node['maximum']}"
        if "x-scale" in node and not node["x-scale"][0] <= value <= node["x-scale"][1]:
            low, high = node["x-scale"]
            return f"Expected a value in [{low}, {high}], got {value}"
    return None


def check(op: str, body: Any, record: int | None = None, now: float | None = None) -> dict[str, Any]:
    """The body, normalised as the Struct would (timestamp in seconds, JSON text), or ``InvalidOperation``."""
    spec = load_schema().get(op)
    if spec is None:
        raise unknown_operation(op, load_schema(), record)
    if not isinstance(body, dict):
        raise InvalidOperation(f"Expected `object`, got `{_typename(body)}`", op=op, record=record)
    if "op" in body and body["op"] != op:
        raise InvalidOperation(f"Invalid value {body['op']!r}", op=op, field="op", record=record)
    props = spec["properties"]
    for key in body:
        if key not in props and key != "op":
            raise InvalidOperation(f"Object contains unknown field `{key}`{did_you_mean(key, props)}", op=op,
                                   field=key, record=record)
    for key in spec["required"]:
        if key not in body:
            raise InvalidOperation(f"Object missing required field `{key}`", op=op, field=key, record=record)
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key == "op":
            continue
        why = _error(props[key], value)
        if why:
            raise InvalidOperation(why, op=op, field=key, record=record)
        out[key] = value
    try:
        ts = out.get("timestamp")
        out["timestamp"] = int(time.time() if now is None else now) if ts is None else normalize_timestamp(ts)
    except ValueError as exc:
        raise InvalidOperation(str(exc), op=op, field="timestamp", record=record) from None
    for key in spec["json_fields"]:
        value = out.get(key)
        if value is not None and not isinstance(value, str):
            text = jsontext.dumps(value, separators=(",", ":"), ensure_ascii=False)
            if len(text) > TEXT_MAX:
                raise InvalidOperation(f"JSON longer than {TEXT_MAX} characters", op=op, field=key, record=record)
            out[key] = text
    size = len(jsontext.dumps(out, ensure_ascii=False).encode("utf-8", "replace"))
    if size > MAX_OP_BYTES:
        raise InvalidOperation(
            f"operation is {size} bytes encoded, over the {MAX_OP_BYTES}-byte limit", op=op, record=record
        )
    return out
