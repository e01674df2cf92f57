"""codi-queue: producers append to a durable spool; one consumer writes SQLite.

Importing this package is cheap on purpose (hooks import it on every call):
names load on first use.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

__version__ = "0.1.0"

__all__ = [
    "enqueue",
    "enqueue_many",
    "CodiQueueError",
    "InvalidOperation",
    "SpoolError",
    "CorruptRecord",
    "ConsumerRunning",
    "SchemaTooNew",
    "UnsafePath",
    "__version__",
]

if TYPE_CHECKING:
    from typing import Any

    from .errors import (
        CodiQueueError,
        ConsumerRunning,
        CorruptRecord,
        InvalidOperation,
        SchemaTooNew,
        SpoolError,
        UnsafePath,
    )
    from .producers.api import enqueue, enqueue_many

_LAZY = {
    "enqueue": "codi_queue.producers.api",
    "enqueue_many": "codi_queue.producers.api",
    "CodiQueueError": "codi_queue.errors",
    "InvalidOperation": "codi_queue.errors",
    "SpoolError": "codi_queue.errors",
    "CorruptRecord": "codi_queue.errors",
    "ConsumerRunning": "codi_queue.errors",
    "SchemaTooNew": "codi_queue.errors",
    "UnsafePath": "codi_queue.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codi_queue' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
