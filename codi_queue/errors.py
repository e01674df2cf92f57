"""One exception base, narrow subclasses that carry their data as attributes."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "CodiQueueError",
    "shown",
    "InvalidOperation",
    "SpoolError",
    "CorruptRecord",
    "ConsumerRunning",
    "HomeReplaced",
    "SchemaTooNew",
    "UnsafePath",
    "TierUnavailable",
    "unknown_operation",
    "did_you_mean",
]


class CodiQueueError(Exception):
    """Base of every error codi-queue raises on purpose."""


class InvalidOperation(CodiQueueError, ValueError):
    """An operation was refused at the boundary: which record, which field, why.

    ``record`` is the 1-based line or item number inside one invocation
    (``None`` for a single operation), ``field`` the body field at fault
    (``None`` when the fault is the record as a whole).
    """

    def __init__(
        self,
        reason: str,
        *,
        op: str | None = None,
        field: str | None = None,
        record: int | None = None,
    ) -> None:
        self.reason = reason
        self.op = op
        self.field = field
        self.record = record
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = []
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.op is not None:
            parts.append(f"op {shown(self.op)}")
        if self.field is not None:
            parts.append(f"field {self.field}")
        where = ", ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason


class SpoolError(CodiQueueError, OSError):
    """The spool could not be written or read (disk full, permissions, I/O)."""

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "spool error"


class CorruptRecord(CodiQueueError):
    """A stored frame failed its checksum or structure check."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class ConsumerRunning(CodiQueueError):
    """Another consumer already owns this home."""

    def __init__(self, pid: int | None, lock_path: str) -> None:
        self.pid = pid
        self.lock_path = lock_path
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a consumer is already running for this home ({who}, lock {lock_path})")


class SchemaTooNew(CodiQueueError):
    """A tier database was migrated by a newer codi-queue than this one."""

    def __init__(self, tier: str, path: str, found: int, supported: int) -> None:
        self.tier = tier
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"{tier} database {path} is at schema version {found}, newer than the "
            f"{supported} this codi-queue knows: upgrade codi-queue, or restore a backup"
        )


class UnsafePath(CodiQueueError):
    """A state path is owned by another user or writable by group or others."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"refusing {path}: {why}")


class HomeReplaced(CodiQueueError):
    """The home the consumer locked was deleted or replaced while it ran."""

    def __init__(self, home: str) -> None:
        self.home = home
        super().__init__(f"the home {home} was deleted or replaced while the consumer ran: stopping, so that "
                         "a consumer started now takes the new home's lock (the agent restarts one)")


class TierUnavailable(CodiQueueError):
    """Some tier databases could not be opened or adopted; their operations wait in the spool."""

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = dict(reasons)
        detail = "; ".join(f"{tier}: {why}" for tier, why in reasons.items())
        super().__init__(f"these tiers were not written, their operations wait in the spool: {detail}")


class SyncError(CodiQueueError):
    """The team database could not be reached or refused us; the message never holds a password."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def shown(name: object, limit: int = 80) -> str:
    """A name someone else sent, fit to print in a message: a 10 kB "operation" is cut."""
    text = str(name)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def did_you_mean(name: object, known: Iterable[object]) -> str:
    """' (did you mean `X`?)' when ``name`` is close to one of ``known``, else ''. Only on errors:
    difflib is imported here, never on the hook's or enqueue's successful path."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.75)
    return f" (did you mean `{close[0]}`?)" if close else ""


def unknown_operation(op: str, known: Iterable[object], record: int | None = None) -> InvalidOperation:
    """The one wording for an operation name nobody defined, wherever it is met."""
    names = sorted(str(k) for k in known)
    return InvalidOperation(
        f"unknown operation {shown(op)!r}{did_you_mean(op, names)}; `codi-queue ops` lists them: {', '.join(names)}",
        op=op, record=record,
    )
