"""The documented exit statuses and the one way a command says what went wrong (README: Exit status).

Standard library only: the per-event commands (``hook``, ``enqueue``) use it
without argparse or msgspec.
"""

from __future__ import annotations

import sys
TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True

if TYPE_CHECKING:
    from ..errors import InvalidOperation

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_INVALID", "EXIT_PARTIAL", "EXIT_INTERRUPTED", "say", "where",
           "partial"]

EXIT_OK = 0
EXIT_FAILURE = 1  # infrastructure or runtime failure: nothing (more) was done
EXIT_INVALID = 2  # invalid input or usage: nothing was enqueued
EXIT_PARTIAL = 3  # some records were refused (each named on stderr), the others were enqueued
EXIT_INTERRUPTED = 130  # Ctrl-C


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    sys.stderr.write(f"codi-queue: {message}\n")


def where(exc: InvalidOperation) -> str:
    """``line N: field F: reason``: which record, which field, why."""
    line = f"line {exc.record}: " if exc.record is not None else ""
    return line + (f"field {exc.field}: " if exc.field else "") + exc.reason


def partial(refused: int, done: int) -> int:
    """0 when nothing was refused; 3 when some input was refused and the rest went in; 2 when all of it was."""
    if not refused:
        return EXIT_OK
    return EXIT_PARTIAL if done else EXIT_INVALID
