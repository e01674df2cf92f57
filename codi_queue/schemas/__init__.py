"""The one source of truth: operation Structs, their tables and tiers, and the migrations."""

from .envelope import Envelope, Record, RecordHead, new_op_id
from .ops import OPERATION_TYPES, Operation
from .registry import OPS, STATE_TIER, TIERS, OpSpec, spec_for

__all__ = [
    "Envelope",
    "Record",
    "RecordHead",
    "new_op_id",
    "Operation",
    "OPERATION_TYPES",
    "OPS",
    "OpSpec",
    "TIERS",
    "STATE_TIER",
    "spec_for",
]
