"""Where each operation lives: its tier database, its table, insert or upsert, and its SQL.

Every SQL identifier the consumer uses is built here, from these definitions
only; values are always bound parameters.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import ops
from .types import OpBase

__all__ = ["TIERS", "STATE_TIER", "OpSpec", "OPS", "spec_for", "TABLES_BY_TIER"]

TIERS: tuple[str, ...] = ("platform", "org", "sessions", "project")
# The consumer's own database: dead letters that belong to no tier (unknown
# op, undecodable envelope, damaged spool bytes) and their cursor.
STATE_TIER = "state"

_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class OpSpec:
    name: str
    type: type[OpBase]
    tier: str
    table: str
    key: tuple[str, ...] = ()  # natural key: upsert on it; empty: an insert-only event
    version: int = 1  # bumped when the Struct gains fields
    columns: tuple[str, ...] = field(init=False)
    sql: str = field(init=False)
    row: Callable[[Any], tuple[Any, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cols = tuple(f.name for f in msgspec.structs.fields(self.type))
        for ident in (self.table, *cols, *self.key):
            if not _IDENT.fullmatch(ident):
                raise ValueError(f"unsafe SQL identifier {ident!r} in {self.name}")
        if not set(self.key) <= set(cols):
            raise ValueError(f"{self.name}: key {self.key} is not among its fields")
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "sql", _statement(self.table, cols, self.key))
        object.__setattr__(self, "row", operator.attrgetter(*cols))

    @property
    def is_upsert(self) -> bool:
        return bool(self.key)


def _statement(table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in (*cols, "op_id"))
    marks = ", ".join("?" for _ in range(len(cols) + 1))
    head = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'
    if not key:
        # op_id is unique in event tables: a replayed operation is a no-op.
        return f"{head} ON CONFLICT(op_id) DO NOTHING"
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in (*cols, "op_id") if c not in key)
    conflict = ", ".join(f'"{c}"' for c in key)
    # Ids are time-ordered: an older operation (a replay) never overwrites a newer one.
    return f'{head} ON CONFLICT({conflict}) DO UPDATE SET {sets} WHERE excluded.op_id > "{table}".op_id'


_SPECS = (
    OpSpec("tool_event", ops.ToolEvent, "sessions", "tool_events"),
    OpSpec("activity_event", ops.ActivityEvent, "sessions", "activity_events"),
    OpSpec("git_event", ops.GitEvent, "sessions", "git_events"),
    OpSpec("routing_metric", ops.RoutingMetric, "sessions", "routing_metrics_events"),
    OpSpec("session_outcome", ops.SessionOutcome, "sessions", "session_outcome_events"),
    OpSpec("self_heal", ops.SelfHeal, "sessions", "self_heal_events"),
    OpSpec("recovery", ops.Recovery, "sessions", "recovery_events"),
    OpSpec("message", ops.Message, "sessions", "messages"),
    OpSpec("tool_analytics", ops.ToolAnalytics, "sessions", "tool_analytics"),
    OpSpec("token_economics", ops.TokenEconomics, "sessions", "token_economics", key=("message_id", "request_id")),
    OpSpec("decision", ops.Decision, "org", "decisions", key=("decision_id",)),
    OpSpec("skill_learning", ops.SkillLearning, "org", "skill_learnings", key=("skill", "pattern")),
    OpSpec("error_solution", ops.ErrorSolution, "org", "error_solutions", key=("error_signature",)),
    OpSpec("component", ops.Component, "platform", "components", key=("kind", "name")),
    OpSpec("task", ops.Task, "project", "tasks", key=("task_id",)),
)

OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}

TABLES_BY_TIER: dict[str, tuple[str, ...]] = {
    tier: tuple(s.table for s in _SPECS if s.tier == tier) for tier in TIERS
}

for _s in _SPECS:
    if _s.type.__struct_config__.tag != _s.name:
        raise AssertionError(f"{_s.name}: Struct tag {_s.type.__struct_config__.tag!r} differs")


def spec_for(op: str) -> OpSpec | None:
    return OPS.get(op)
