"""Where each operation lives: its tier database, its table, insert or upsert, and its SQL.

Every SQL identifier the consumer uses is built here, from these definitions
only; values are always bound parameters.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

import msgspec

from . import ops
from .types import OpBase

__all__ = ["TIERS", "STATE_TIER", "ALL_TIERS", "REJECTED_OP", "OpSpec", "Binding", "OPS"]

TIERS: tuple[str, ...] = ("platform", "org", "sessions", "project")
# The consumer's own database: dead letters that belong to no tier (unknown
# op, undecodable envelope, damaged spool bytes) and their cursor.
STATE_TIER = "state"
ALL_TIERS: tuple[str, ...] = (*TIERS, STATE_TIER)

# Input that could not become an operation (a bad line of an imported file):
# it travels through the spool so the consumer can file it as a dead letter.
REJECTED_OP = "_rejected"

# Tables whose migrations attach triggers (the components full-text index).
_TRIGGER_TABLES = frozenset({"components"})

_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


class OpSpec:
    """One operation's home: tier, table, natural key (upsert) or none (insert-only event)."""

    __slots__ = ("name", "type", "tier", "table", "key", "version", "_columns", "_sql", "_row")

    def __init__(
        self, name: str, type: type[OpBase], tier: str, table: str, key: tuple[str, ...] = (), version: int = 1
    ) -> None:
        self.name = name
        self.type = type
        self.tier = tier
        self.table = table
        self.key = key
        self.version = version  # bumped when the Struct gains fields
        # Columns and SQL are built on first use: producers never need them,
        # and hook processes should not pay for fifteen statements at import.
        self._columns: tuple[str, ...] | None = None
        self._sql: str | None = None
        self._row: Callable[[Any], tuple[Any, ...]] | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        if self._columns is None:
            cols = tuple(f.name for f in msgspec.structs.fields(self.type))
            for ident in (self.table, *cols, *self.key):
                if not _IDENT.fullmatch(ident):
                    raise ValueError(f"unsafe SQL identifier {ident!r} in {self.name}")
            if not set(self.key) <= set(cols):
                raise ValueError(f"{self.name}: key {self.key} is not among its fields")
            self._columns = cols
        return self._columns

    @property
    def sql(self) -> str:
        if self._sql is None:
            self._sql = _statement(self.table, self.columns, self.key)
        return self._sql

    @property
    def row(self) -> Callable[[Any], tuple[Any, ...]]:
        if self._row is None:
            self._row = operator.attrgetter(*self.columns)
        return self._row

    @property
    def is_upsert(self) -> bool:
        return bool(self.key)

    @property
    def has_triggers(self) -> bool:
        """Whether writing a row writes others too (then total_changes overcounts)."""
        return self.table in _TRIGGER_TABLES

    def bind(self, table_columns: set[str]) -> Binding:
        """The statement and row getter for a table as it is: each field is written to every
        one of its names (``schemas.columns``) the table has."""
        from .columns import names_of

        targets: list[str] = []
        fields: list[str] = []
        lower = {c.lower(): c for c in table_columns}
        for column in self.columns:
            present = [lower[n.lower()] for n in names_of(self.table, column) if n.lower() in lower]
            if not present:
                raise ValueError(f"table {self.table} has no column for {self.name}.{column}")
            for name in present:
                targets.append(name)
                fields.append(column)
        if targets == list(self.columns):
            return Binding(self.sql, self.row)
        for ident in targets:
            if not _IDENT.fullmatch(ident.lower()):
                raise ValueError(f"unsafe SQL identifier {ident!r} in table {self.table}")
        return Binding(_statement(self.table, tuple(targets), self.key), operator.attrgetter(*fields))

    def __repr__(self) -> str:
        return f"OpSpec({self.name!r}, tier={self.tier!r}, table={self.table!r}, key={self.key!r})"


class Binding:
    """One operation's INSERT for one table as it stands, and the row values in its column order."""

    __slots__ = ("sql", "row")

    def __init__(self, sql: str, row: Callable[[Any], tuple[Any, ...]]) -> None:
        self.sql, self.row = sql, row


def _statement(table: str, cols: tuple[str, ...], key: tuple[str, ...]) -> str:
    names = ", ".join(f'"{c}"' for c in (*cols, "op_id"))
    marks = ", ".join("?" for _ in range(len(cols) + 1))
    head = f'INSERT INTO "{table}" ({names}) VALUES ({marks})'
    if not key:
        # op_id is unique in event tables: a replayed operation is a no-op.
        return f"{head} ON CONFLICT(op_id) DO NOTHING"
    sets = ", ".join(f'"{c}" = excluded."{c}"' for c in dict.fromkeys((*cols, "op_id")) if c not in key)
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
    # streams that reached only JSONL before (sessions migration 3)
    OpSpec("command_event", ops.CommandEvent, "sessions", "command_events"),
    OpSpec("routing_event", ops.RoutingEvent, "sessions", "routing_events"),
    OpSpec("coordinator_event", ops.CoordinatorEvent, "sessions", "coordinator_events"),
    OpSpec("expertise_routing_event", ops.ExpertiseRoutingEvent, "sessions", "expertise_routing_events"),
    OpSpec("autonomy_event", ops.AutonomyEvent, "sessions", "autonomy_events"),
    OpSpec("message", ops.Message, "sessions", "messages"),
    OpSpec("tool_analytics", ops.ToolAnalytics, "sessions", "tool_analytics"),
    OpSpec("token_economics", ops.TokenEconomics, "sessions", "token_economics", key=("message_id", "request_id")),
    OpSpec("decision", ops.Decision, "org", "decisions", key=("decision_id",)),
    OpSpec("skill_learning", ops.SkillLearning, "org", "skill_learnings", key=("skill", "pattern")),
    OpSpec("error_solution", ops.ErrorSolution, "org", "error_solutions", key=("error_signature",)),
    OpSpec("component", ops.Component, "platform", "components", key=("kind", "name")),
    OpSpec("task", ops.Task, "project", "tasks", key=("task_id",)),
    # session registry and skill adoption (sessions migration 2)
    OpSpec("session", ops.SessionRecord, "sessions", "session_registry", key=("session_id",)),
    OpSpec("lock", ops.Lock, "sessions", "locks", key=("resource",)),
    OpSpec("override", ops.Override, "sessions", "overrides", key=("scope", "key")),
    OpSpec("worktree_link", ops.WorktreeLink, "sessions", "worktree_links", key=("worktree_path",)),
    OpSpec("skill_suggestion", ops.SkillSuggestion, "sessions", "skill_suggestions", key=("session_id", "skill")),
    OpSpec("skill_invocation", ops.SkillInvocation, "sessions", "skill_invocations", key=("session_id", "skill")),
    # mirror of state.json session directories (project migration 2)
    OpSpec("project", ops.Project, "project", "projects", key=("project_id",)),
    OpSpec("session_state", ops.SessionState, "project", "sessions", key=("session_id",)),
    OpSpec("agent", ops.Agent, "project", "agents", key=("session_id", "agent_id")),
    OpSpec("agent_log", ops.AgentLog, "project", "agent_logs"),
)

OPS: dict[str, OpSpec] = {s.name: s for s in _SPECS}
