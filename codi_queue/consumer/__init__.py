"""The single writer: drains the spool into the tier databases."""

from .loop import Consumer, ConsumerStats

__all__ = ["Consumer", "ConsumerStats"]
