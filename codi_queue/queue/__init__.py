"""The durable spool: checksummed frames in persist-queue directories, inbox and segments."""

from .segment import Entry, SegmentReader
from .spool import Spool

__all__ = ["Spool", "SegmentReader", "Entry"]
