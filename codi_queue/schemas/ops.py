"""One msgspec Struct per operation type: the tagged union every producer and the consumer share.

An operation's fields are its table's columns (minus ``id`` and the
consumer's ``op_id``), so the body a producer sends uses the column names.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from .types import Count, JsonText, LongText, Money, Name, OpBase, Real, Text, Unit, scale, vocabulary

__all__ = [
    "ToolEvent",
    "ActivityEvent",
    "GitEvent",
    "RoutingMetric",
    "SessionOutcome",
    "SelfHeal",
    "Recovery",
    "CommandEvent",
    "RoutingEvent",
    "CoordinatorEvent",
    "ExpertiseRoutingEvent",
    "AutonomyEvent",
    "Message",
    "ToolAnalytics",
    "TokenEconomics",
    "Decision",
    "SkillLearning",
    "ErrorSolution",
    "Component",
    "Task",
    "SessionRecord",
    "Lock",
    "Override",
    "WorktreeLink",
    "SkillSuggestion",
    "SkillInvocation",
    "Project",
    "SessionState",
    "Agent",
    "AgentLog",
]

# -- tier 3: sessions (events are inserts) ----------------------------------------------

Quality = Annotated[float, scale(1.0, 5.0)]
Complexity = Annotated[float, scale(0.0, 1.0)]
ExitCode = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31)]


class ToolEvent(OpBase, tag="tool_event"):
    tool_name: Name
    success: bool
    duration_ms: Count | None = None
    error_message: Text | None = None
    context: JsonText = None
    session_id: Name | None = None
    tool_use_id: Name | None = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class ActivityEvent(OpBase, tag="activity_event"):
    event_type: Name
    data: JsonText = None
    session_id: Name | None = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("data",)


class GitEvent(OpBase, tag="git_event"):
    event_type: Annotated[str, vocabulary("commit", "push", "pr", "branch", "merge")]
    repo: Text | None = None
    branch: Text | None = None
    commit_hash: Name | None = None
    message: Text | None = None
    files_changed: Count | None = None
    additions: Count | None = None
    deletions: Count | None = None
    author: Text | None = None
    context: JsonText = None  # what a line carried that has no column (added in sessions migration 3)

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class RoutingMetric(OpBase, tag="routing_metric"):
    query_id: Name | None = None
    predicted_model: Name | None = None
    actual_model: Name | None = None
    dq_score: Real | None = None
    complexity: Complexity | None = None
    accuracy: bool | None = None
    cost_saved: Real | None = None
    reasoning: Text | None = None
    query_text: Text | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)
    __private_fields__: ClassVar[tuple[str, ...]] = ("query_text",)  # the user's prompt


class SessionOutcome(OpBase, tag="session_outcome"):
    session_id: Name | None = None
    outcome: Annotated[str, vocabulary("success", "partial", "failure", "abandoned")] | None = None
    quality: Quality | None = None
    complexity: Complexity | None = None
    intent: Text | None = None
    model: Name | None = None
    messages_count: Count | None = None
    duration_minutes: Count | None = None
    cost_usd: Money | None = None
    success: bool | None = None
    summary: Text | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class SelfHeal(OpBase, tag="self_heal"):
    error_pattern: Text
    success: bool
    fix_applied: Text | None = None
    execution_time_ms: Count | None = None
    error_message: Text | None = None
    context: JsonText = None
    severity: Annotated[str, vocabulary("low", "medium", "high", "critical")] | None = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class Recovery(OpBase, tag="recovery"):
    error_type: Name
    success: bool
    recovery_strategy: Text | None = None
    attempts: Count = 1
    time_to_recover_ms: Count | None = None
    error_details: Text | None = None
    recovery_method: Name | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class CommandEvent(OpBase, tag="command_event"):
    command: Name
    args: JsonText = None
    success: bool | None = None
    execution_time_ms: Count | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("args", "context")


class RoutingEvent(OpBase, tag="routing_event"):
    query_hash: Name | None = None
    complexity: Real | None = None
    dq_score: Real | None = None
    chosen_model: Name | None = None
    reasoning: Text | None = None
    feedback: Text | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class CoordinatorEvent(OpBase, tag="coordinator_event"):
    action: Annotated[str, vocabulary("spawn", "complete", "fail", "lock", "unlock", "timeout")]
    agent_id: Name | None = None
    strategy: Text | None = None
    file_path: Text | None = None
    result: Text | None = None
    duration_ms: Count | None = None
    exit_code: ExitCode | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class ExpertiseRoutingEvent(OpBase, tag="expertise_routing_event"):
    domain: Name
    expertise_level: Annotated[float, scale(0.0, 1.0)] | None = None
    query_complexity: Real | None = None
    chosen_model: Name | None = None
    reasoning: Text | None = None
    query_hash: Name | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class AutonomyEvent(OpBase, tag="autonomy_event"):
    event_type: Annotated[str, vocabulary("permission_prompt", "permission_granted", "permission_denied")]
    session_id: Name | None = None
    tool_name: Name | None = None
    context: JsonText = None

    __json_fields__: ClassVar[tuple[str, ...]] = ("context",)


class Message(OpBase, tag="message"):
    session_id: Name
    role: Literal["user", "assistant", "system"]
    content: LongText
    uuid: Name | None = None
    model: Name | None = None
    request_id: Name | None = None

    __private_fields__: ClassVar[tuple[str, ...]] = ("content",)  # what was said


class ToolAnalytics(OpBase, tag="tool_analytics"):
    tool_name: Name
    session_id: Name | None = None
    calls: Count = 1
    failures: Count = 0
    total_duration_ms: Count | None = None


class TokenEconomics(OpBase, tag="token_economics"):
    # Keyed on (message_id, request_id): a response split over several
    # transcript lines is counted once however often it is enqueued.
    message_id: Name
    request_id: Name
    session_id: Name | None = None
    model: Name | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cost_usd: Money | None = None


# -- tier 2: org (keyed entities are upserts) --------------------------------------------


class Decision(OpBase, tag="decision"):
    decision_id: Name
    title: Text
    decision: Text
    context: Text | None = None
    rationale: Text | None = None
    status: Literal["proposed", "accepted", "superseded", "rejected"] = "accepted"
    tags: Text | None = None


class SkillLearning(OpBase, tag="skill_learning"):
    skill: Name
    pattern: Text
    learning: Text
    confidence: Unit | None = None
    source: Text | None = None
    occurrences: Count = 1


class ErrorSolution(OpBase, tag="error_solution"):
    error_signature: Text
    solution: Text
    error_type: Name | None = None
    success_count: Count = 0
    failure_count: Count = 0
    context: Text | None = None


# -- tier 1: platform --------------------------------------------------------------------


class Component(OpBase, tag="component"):
    kind: Name
    name: Name
    path: Text | None = None
    description: Text | None = None
    tags: Text | None = None
    language: Name | None = None


# -- tier 4: project ---------------------------------------------------------------------

Priority = Annotated[int, msgspec.Meta(ge=0, le=4)]  # 0 = most urgent


class Task(OpBase, tag="task"):
    task_id: Name
    title: Text
    status: Literal["pending", "in_progress", "blocked", "done", "cancelled"] = "pending"
    priority: Priority | None = None
    project: Name | None = None
    assignee: Name | None = None
    description: Text | None = None


# -- tier 3: session registry and skill adoption (migration 2) ------------------------------

SessionStatus = Literal["active", "idle", "ended"]


class SessionRecord(OpBase, tag="session"):
    session_id: Name
    status: SessionStatus = "active"
    project: Text | None = None
    cwd: Text | None = None
    branch: Text | None = None
    worktree: Text | None = None
    model: Name | None = None
    host: Name | None = None
    pid: Count | None = None
    started_at: Count | None = None
    ended_at: Count | None = None


class Lock(OpBase, tag="lock"):
    resource: Text
    session_id: Name
    released: bool = False
    expires_at: Count | None = None
    reason: Text | None = None


class Override(OpBase, tag="override"):
    scope: Name
    key: Name
    value: Text
    session_id: Name | None = None
    reason: Text | None = None
    expires_at: Count | None = None


class WorktreeLink(OpBase, tag="worktree_link"):
    worktree_path: Text
    repo: Text
    branch: Text | None = None
    session_id: Name | None = None


class SkillSuggestion(OpBase, tag="skill_suggestion"):
    session_id: Name
    skill: Name
    source: Name | None = None
    confidence: Unit | None = None


class SkillInvocation(OpBase, tag="skill_invocation"):
    session_id: Name
    skill: Name
    success: bool | None = None
    invocations: Count = 1


# -- tier 4: one-way mirror of session directories' state.json (migration 2) -----------------


class Project(OpBase, tag="project"):
    project_id: Name
    name: Text | None = None
    path: Text | None = None


class SessionState(OpBase, tag="session_state"):
    session_id: Name
    project_id: Name | None = None
    status: Name | None = None
    title: Text | None = None
    model: Name | None = None
    started_at: Count | None = None
    updated_at: Count | None = None
    cost_usd: Money | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    state_path: Text | None = None


class Agent(OpBase, tag="agent"):
    session_id: Name
    agent_id: Name
    name: Text | None = None
    role: Text | None = None
    status: Name | None = None
    model: Name | None = None
    cost_usd: Money | None = None
    input_tokens: Count | None = None
    output_tokens: Count | None = None


class AgentLog(OpBase, tag="agent_log"):
    session_id: Name
    agent_id: Name
    message: Text
    level: Name | None = None
