"""One batch: what a run of records routes to each tier, committed as one transaction per tier."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter

from ..schemas.envelope import Envelope
from ..schemas.registry import OPS, STATE_TIER
from .apply import DeadLetter, Item

__all__ = ["Batch"]

# Where each operation goes; an operation this code does not know is filed in the state database.
_TIER_OF = {name: spec.tier for name, spec in OPS.items()}
_OP = attrgetter("op")


class Batch:
    """Operations of one queue directory on their way to the tiers it is drained into.

    ``cursors`` are the directory's per-tier positions (shared with the
    consumer, moved when a tier commits); an operation goes to a tier only
    past that tier's cursor, so a re-read span is never applied twice.
    """

    __slots__ = ("seg", "cursors", "routed", "damaged", "size", "end")

    def __init__(self, seg: str, cursors: dict[str, int], tiers: tuple[str, ...], start: int) -> None:
        self.seg = seg
        self.cursors = cursors
        self.routed: dict[str, list[Item]] = {t: [] for t in tiers}
        self.damaged: list[DeadLetter] = []  # filed in the state database
        self.size = 0  # records' operations routed (at least one per record): what fills a batch
        self.end = start  # end position of the last record taken

    def wants(self, tier: str, end: int) -> bool:
        """Whether ``tier`` is drained here and has not yet committed the record ending at ``end``."""
        return tier in self.routed and end > self.cursors[tier]

    def take(self, end: int, ops: Sequence[Envelope], is_json: bool, damaged: list[DeadLetter]) -> None:
        """One record ending at ``end``: each operation to its tier if that tier wants the record,
        and the dead letters the record made. Runs once per operation drained: kept lean."""
        wanted = {t: items for t, items in self.routed.items() if end > self.cursors[t]}
        n = 0
        if wanted:
            tier_of, state = _TIER_OF.get, STATE_TIER
            names = set(map(_OP, ops))
            if len(names) == 1:  # the usual record: one operation's batch, routed whole, in C
                items = wanted.get(tier_of(names.pop(), state))
                if items is not None:
                    items.extend(map(Item, ops, repeat(end), repeat(is_json)))
                    n = len(ops)
            else:
                for env in ops:
                    items = wanted.get(tier_of(env.op, state))
                    if items is not None:
                        items.append(Item(env, end, is_json))
                        n += 1
        if damaged:
            self.damaged.extend(damaged)
        self.size += n or 1
        self.end = end

    def full(self, limit: int) -> bool:
        return self.size >= limit

    def __bool__(self) -> bool:
        return self.size > 0
