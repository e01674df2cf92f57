"""The team database: PostgreSQL tables generated from the same operation Structs as SQLite.

One PostgreSQL schema per tier (``platform``, ``org``, ``sessions``,
``project``), one table per operation table, named as in SQLite. Each row
carries the operation that wrote it (``op_id``), the machine it came from and
the push batch that brought it (what ``sync pull`` follows). Column types come
from the Struct fields, so a field added to a Struct is a column added here
(``ADD COLUMN IF NOT EXISTS``) with nothing restated by hand. Every identifier
is checked by the registry; values are always bound or copied.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from .registry import OPS, TIERS, OpSpec
from .types import type_members as _members

__all__ = [
    "SYNC_SCHEMA",
    "PgTable",
    "tables",
    "tables_of",
    "ddl",
    "fingerprint",
]

SYNC_SCHEMA = "codi_queue"  # the pushers' own bookkeeping: cursors, schema fingerprint

# Columns every team table has after the operation's own fields.
TRACE_COLUMNS: dict[str, str] = {
    "op_id": 'TEXT COLLATE "C"',  # "C": ids compare as bytes (UUIDv7 order = time order)
    "machine": "TEXT",
    "push_batch": "BIGINT",
}


def _pg_type(spec: OpSpec, name: str, info: Any) -> str:
    """The PostgreSQL type a field's values have after the Struct normalised them."""
    if name == "timestamp":
        return "BIGINT"  # unix seconds, whatever the producer sent (OpBase.__post_init__)
    if name in getattr(spec.type, "__json_fields__", ()):
        return "TEXT"  # JSON text, as in SQLite (free-form: may hold literals jsonb would refuse)
    kinds = {type(t).__name__ for t in _members(info)} - {"NoneType"}
    if kinds <= {"StrType", "LiteralType"}:
        return "TEXT"
    if kinds == {"IntType"}:
        return "BIGINT"
    if kinds == {"FloatType"}:
        return "DOUBLE PRECISION"
    if kinds == {"BoolType"}:
        return "BOOLEAN"
    raise ValueError(f"{spec.name}.{name}: no PostgreSQL type for {sorted(kinds)}")


class PgTable:
    """One operation's table in the team database."""

    __slots__ = ("spec", "schema", "name", "fields", "types", "not_null", "private")

    def __init__(self, spec: OpSpec) -> None:
        self.spec = spec
        self.schema = spec.tier
        self.name = spec.table
        self.fields: tuple[str, ...] = spec.columns  # identifiers checked by the registry
        info: Any = msgspec.inspect.type_info(spec.type)
        by_name = {f.name: f for f in info.fields}
        self.types = {**{n: _pg_type(spec, n, by_name[n].type) for n in self.fields}, **TRACE_COLUMNS}
        # Text a developer may not want to leave the machine (``[sync] share_private``).
        self.private: tuple[str, ...] = tuple(getattr(spec.type, "__private_fields__", ()))
        self.not_null = {
            n for n in self.fields
            if n == "timestamp" or by_name[n].required and n not in self.private
        } | set(TRACE_COLUMNS)

    @property
    def qualified(self) -> str:
        return f'"{self.schema}"."{self.name}"'

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns a push writes, in COPY order."""
        return (*self.fields, *TRACE_COLUMNS)

    def create(self) -> list[str]:
        cols = [f'"{n}" {self.types[n]}' + (" NOT NULL" if n in self.not_null else "") for n in self.columns]
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.qualified} (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            + ", ".join(cols) + ", pushed_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        ]
        # A field a later Struct version added: nullable, as old rows lack it.
        statements += [f'ALTER TABLE {self.qualified} ADD COLUMN IF NOT EXISTS "{n}" {self.types[n]}'
                       for n in self.fields]
        if self.spec.key:
            keys = ", ".join(f'"{k}"' for k in self.spec.key)
            statements.append(f'CREATE UNIQUE INDEX IF NOT EXISTS "{self.name}_key" ON {self.qualified} ({keys})')
            statements.append(f'CREATE INDEX IF NOT EXISTS "{self.name}_op_id" ON {self.qualified} (op_id)')
        else:
            statements.append(f'CREATE UNIQUE INDEX IF NOT EXISTS "{self.name}_op_id" ON {self.qualified} (op_id)')
        statements.append(
            f'CREATE INDEX IF NOT EXISTS "{self.name}_pull" ON {self.qualified} (machine, push_batch)'
        )
        return statements

    @property
    def stage(self) -> str:
        return f'"cq_stage_{self.schema}_{self.name}"'

    def create_stage(self) -> str:
        """A session-private table each batch is copied into before it meets the real one."""
        cols = ", ".join(f'"{n}" {self.types[n]}' for n in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({cols}) ON COMMIT DELETE ROWS"

    def copy_stage(self, leave_out: tuple[str, ...] = ()) -> str:
        """COPY into the stage; columns left out arrive as NULL (private text not shared)."""
        names = ", ".join(f'"{n}"' for n in self.columns if n not in leave_out)
        return f"COPY {self.stage} ({names}) FROM STDIN"

    def merge(self) -> str:
        """Stage → table. Events: a known op_id is skipped. Upserts: the newer operation wins,
        on every machine (ids are time-ordered), and a batch holding one key twice keeps its newest."""
        names = ", ".join(f'"{n}"' for n in self.columns)
        if not self.spec.key:
            return (f"INSERT INTO {self.qualified} ({names}) SELECT {names} FROM {self.stage} "
                    "ON CONFLICT (op_id) DO NOTHING")
        keys = ", ".join(f'"{k}"' for k in self.spec.key)
        sets = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in self.columns if n not in self.spec.key)
        return (f"INSERT INTO {self.qualified} AS t ({names}) "
                f"SELECT DISTINCT ON ({keys}) {names} FROM {self.stage} ORDER BY {keys}, op_id DESC "
                f"ON CONFLICT ({keys}) DO UPDATE SET {sets}, pushed_at = now() WHERE EXCLUDED.op_id > t.op_id")

    def select_pushed(self) -> str:
        """Rows one machine pushed in a range of its batches (``sync pull``)."""
        names = ", ".join(f'"{n}"' for n in self.columns)
        return (f"SELECT {names} FROM {self.qualified} WHERE machine = %s AND push_batch > %s "
                "AND push_batch <= %s ORDER BY push_batch, op_id")


_TABLES: dict[str, PgTable] = {}


def tables() -> dict[str, PgTable]:
    """Operation name → its team table (built on first use)."""
    if not _TABLES:
        for name, spec in OPS.items():
            _TABLES[name] = PgTable(spec)
    return _TABLES


def tables_of(tier: str) -> list[PgTable]:
    return [t for t in tables().values() if t.schema == tier]


def ddl() -> list[str]:
    """Every statement that brings a team database to this code's schema (each is idempotent)."""
    statements = [f'CREATE SCHEMA IF NOT EXISTS "{tier}"' for tier in TIERS]
    statements += [
        f'CREATE SCHEMA IF NOT EXISTS "{SYNC_SCHEMA}"',
        # Per machine and tier: how far its journal is pushed, and how many batches
        # (rows carry their batch number; pullers follow each machine's batches).
        f'CREATE TABLE IF NOT EXISTS "{SYNC_SCHEMA}".push_cursors ('
        "machine TEXT NOT NULL, tier TEXT NOT NULL, segment TEXT NOT NULL DEFAULT '', "
        "pos BIGINT NOT NULL DEFAULT 0, batch BIGINT NOT NULL DEFAULT 0, "
        "operations BIGINT NOT NULL DEFAULT 0, pushed_at TIMESTAMPTZ, PRIMARY KEY (machine, tier))",
        # Which home pushes under this machine name: a second home under the same name
        # would read its journal from the first one's position, so it is refused.
        f'ALTER TABLE "{SYNC_SCHEMA}".push_cursors ADD COLUMN IF NOT EXISTS home_id TEXT',
        # The journal's lanes 1.. (lane 0 is push_cursors' own segment and pos): each lane
        # is written in order, lanes are not, so each is pushed from its own place.
        f'CREATE TABLE IF NOT EXISTS "{SYNC_SCHEMA}".push_lanes ('
        "machine TEXT NOT NULL, tier TEXT NOT NULL, lane INTEGER NOT NULL, segment TEXT NOT NULL DEFAULT '', "
        "pos BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (machine, tier, lane))",
        f'CREATE TABLE IF NOT EXISTS "{SYNC_SCHEMA}".schema_fingerprint ('
        "singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), fingerprint TEXT NOT NULL, "
        "migrated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    ]
    for table in tables().values():
        statements += table.create()
    return statements


def fingerprint() -> str:
    """Names this code's schema: a database that already has it needs no DDL on each push."""
    return hashlib.sha256("\n".join(ddl()).encode()).hexdigest()[:16]
