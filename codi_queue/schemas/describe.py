"""What a user can learn about each operation, generated from the Structs (``codi-queue ops``).

Nothing here is restated by hand: types, limits, defaults and vocabularies
come from the Struct fields, aliases from the legacy table the importer uses,
other column names from ``columns.py``. So this cannot go stale.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .columns import COLUMN_NAMES
from .legacy import LEGACY_FIELDS
from .registry import OPS, OpSpec
from .types import type_members as _members

__all__ = ["describe_op", "describe_ops"]

_KIND = {"StrType": "text", "IntType": "integer", "FloatType": "number", "BoolType": "boolean",
         "LiteralType": "text", "DictType": "object", "ListType": "array"}


def _extra(info: Any) -> dict[str, Any]:
    """The extra JSON schema (vocabulary, scale) of a field's type, wherever the union holds it."""
    if isinstance(info, msgspec.inspect.Metadata):
        return {**(info.extra_json_schema or {}), **_extra(info.type)}
    if isinstance(info, msgspec.inspect.UnionType):
        found: dict[str, Any] = {}
        for t in info.types:
            found.update(_extra(t))
        return found
    return {}


def _field(spec: OpSpec, field: Any, aliases: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    members = [m for m in _members(field.type) if type(m).__name__ != "NoneType"]
    kinds = {_KIND.get(type(m).__name__, type(m).__name__) for m in members}
    json_fields = getattr(spec.type, "__json_fields__", ())
    kind = ("timestamp (unix s, ms or ISO 8601)" if field.name == "timestamp"
            else "json (object, array or text)" if field.name in json_fields else " or ".join(sorted(kinds)))
    limits: dict[str, Any] = {}
    for m in members:
        for attr in ("min_length", "max_length", "ge", "le", "gt", "lt"):
            value = getattr(m, attr, None)
            if value is not None and field.name != "timestamp":
                limits[attr] = value
        if isinstance(m, msgspec.inspect.LiteralType):
            limits["one_of"] = list(m.values)
    extra = _extra(field.type)
    if "enum" in extra:
        limits["one_of"] = list(extra["enum"])
    if "x-scale" in extra:
        limits["scale"] = list(extra["x-scale"])
    default: Any = field.default if field.default is not msgspec.NODEFAULT else None
    if field.name == "timestamp":
        default = "now (the enqueue time)"  # OpBase.__post_init__
    return {
        "name": field.name,
        "type": kind,
        "required": bool(field.required),
        "default": default if not field.required else None,
        "nullable": any(type(m).__name__ == "NoneType" for m in _members(field.type)),
        "limits": limits,
        "aliases": [a for a in aliases.get(field.name, ()) if a != field.name],
        "column_names": list(COLUMN_NAMES.get(spec.table, {}).get(field.name, ())),
        "private": field.name in getattr(spec.type, "__private_fields__", ()),
    }


def describe_op(name: str) -> dict[str, Any]:
    spec = OPS[name]
    aliases = {f.name: f.aliases for f in LEGACY_FIELDS.get(name, ())}
    info: Any = msgspec.inspect.type_info(spec.type)
    return {
        "op": name,
        "tier": spec.tier,
        "table": spec.table,
        "write": f"upsert on {' + '.join(spec.key)}" if spec.key else "insert (a replayed op_id is skipped)",
        "version": spec.version,
        "fields": [_field(spec, f, aliases) for f in info.fields],
    }


def describe_ops() -> list[dict[str, Any]]:
    return [describe_op(name) for name in OPS]
