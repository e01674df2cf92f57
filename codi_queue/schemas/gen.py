"""Generate ``ops.schema.json``: the JSON Schema of every operation, from the Structs.

The fast CLI check (``producers.fastcheck``) reads this file so that
``codi-queue enqueue`` can validate without importing msgspec. It is derived,
never edited: ``python -m codi_queue.schemas.gen`` rewrites it, and a test
fails when it no longer matches the Structs.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec

from .registry import OPS

__all__ = ["SCHEMA_FILE", "build", "main"]

SCHEMA_FILE = os.path.join(os.path.dirname(__file__), "ops.schema.json")


def build() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for name, spec in sorted(OPS.items()):
        schema = msgspec.json.schema(spec.type)
        node = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        props = {k: v for k, v in node["properties"].items() if k != "op"}
        json_fields = list(getattr(spec.type, "__json_fields__", ()))
        ops[name] = {
            "version": spec.version,
            "properties": props,
            "required": [r for r in node.get("required", []) if r != "op"],
            "json_fields": json_fields,
        }
    return {"generated_by": "python -m codi_queue.schemas.gen", "ops": ops}


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


def main() -> int:
    with open(SCHEMA_FILE, "w", encoding="utf-8") as fp:
        fp.write(render())
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
