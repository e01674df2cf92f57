"""The words and scales our own producers must use, kept apart from what is stored.

A field typed ``Annotated[str, vocabulary(...)]`` or ``Annotated[float,
scale(...)]`` accepts any text or number in the Struct (the platform's own
files use other words and scales, and the user's data wins), while the API
and CLI refuse what is outside (``codi-queue enqueue`` through the generated
schema's ``enum``/``minimum``/``maximum``, ``enqueue()`` through ``outside``
here). The consumer counts what it stores outside them, for ``status``.
Derived from the Structs' own JSON Schema: nothing is restated.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .registry import OPS

__all__ = ["outside", "has_rules"]

_rules: dict[str, dict[str, tuple[list[Any] | None, float | None, float | None]]] = {}


def _rules_for(op: str) -> dict[str, tuple[list[Any] | None, float | None, float | None]]:
    found = _rules.get(op)
    if found is None:
        schema = msgspec.json.schema(OPS[op].type)
        node = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        found = {}
        for field, prop in node["properties"].items():
            for alt in prop.get("anyOf", [prop]):
                if alt.get("x-vocabulary"):
                    found[field] = (alt["enum"], None, None)
                elif "x-scale" in alt:
                    found[field] = (None, *alt["x-scale"])
        _rules[op] = found
    return found


def has_rules(op: str) -> bool:
    """Whether ``op`` has fields held to a vocabulary or scale at all (most events have none)."""
    return bool(_rules_for(op))


def outside(op: str, item: Any) -> list[tuple[str, str]]:
    """(field, why) for each value of ``item`` (a Struct of ``op``) outside our vocabularies and scales."""
    out: list[tuple[str, str]] = []
    for field, (enum, low, high) in _rules_for(op).items():
        value = getattr(item, field, None)
        if value is None:
            continue
        if enum is not None and value not in enum:
            out.append((field, f"Invalid enum value {value!r} (known: {', '.join(map(str, enum))})"))
        elif low is not None and isinstance(value, (int, float)) and not low <= value <= (high if high is not None else value):
            out.append((field, f"Expected a value in [{low}, {high}], got {value}"))
    return out
