"""One batch: what a run of records routes to each tier, committed as one transaction per tier."""

from __future__ import annotations

from .apply import DeadLetter, Item

__all__ = ["Batch"]


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

    def wanting(self, end: int) -> frozenset[str]:
        """The tiers that want the record ending at ``end``."""
        return frozenset(t for t in self.routed if end > self.cursors[t])

    def take(self, end: int, items: list[tuple[str, Item]], damaged: list[DeadLetter]) -> None:
        """One record's operations (those ``wants`` accepted) and the dead letters it made."""
        for tier, item in items:
            self.routed[tier].append(item)
        self.damaged.extend(damaged)
        self.size += max(1, len(items))
        self.end = end

    def full(self, limit: int) -> bool:
        return self.size >= limit

    def __bool__(self) -> bool:
        return self.size > 0
