"""Ways into the spool: the Python API and the validation every entry point shares."""

from .api import append_records, enqueue, enqueue_many

__all__ = ["enqueue", "enqueue_many", "append_records"]
