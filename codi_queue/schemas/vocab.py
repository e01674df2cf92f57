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

import operator
from collections.abc import Iterable
from typing import Any

import msgspec

from .registry import OPS

__all__ = ["outside", "count_outside", "has_rules"]

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
    for field, rule in _rules_for(op).items():
        value = getattr(item, field, None)
        if not _outside(rule, (value,)):
            continue
        enum, low, high = rule
        if enum is not None:
            out.append((field, f"Invalid enum value {value!r} (known: {', '.join(map(str, enum))})"))
        else:
            out.append((field, f"Expected a value in [{low}, {high}], got {value}"))
    return out


def count_outside(op: str, items: list[Any]) -> dict[str, int]:
    """How many of ``items`` (Structs of ``op``) hold a value outside each field's vocabulary or
    scale: what the consumer reports in ``status``, one pass per field over a whole batch."""
    counts: dict[str, int] = {}
    for field, rule in _rules_for(op).items():
        n = len(_outside(rule, map(operator.attrgetter(field), items)))
        if n:
            counts[field] = n
    return counts


def _outside(rule: tuple[list[Any] | None, float | None, float | None], values: Iterable[Any]) -> list[Any]:
    enum, low, high = rule
    if enum is not None:
        return [v for v in values if v is not None and v not in enum]
    if low is None:
        return []
    return [v for v in values if isinstance(v, (int, float)) and not low <= v <= (high if high is not None else v)]
