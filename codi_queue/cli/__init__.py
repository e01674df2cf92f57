"""The ``codi-queue`` command: parse, call the library, turn its errors into exit statuses.

One module per group of commands (``events``, ``imports``, ``install``,
``consumer``, ``info``, ``recovery``, ``upkeep``, ``sync``), each command's
options, help and handler together (``command.py``); exit statuses and the
error line in ``exits.py``. Library errors become exit statuses here, at the
edge, and nowhere else. ``hook``, ``git-hook`` and ``enqueue`` skip argparse
entirely: they run on every event and must start fast.
"""

from __future__ import annotations

import os
import sys

from .exits import EXIT_FAILURE, EXIT_INTERRUPTED, say

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The edge: library errors become one line on stderr and a documented exit status, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _escape_what_stdout_cannot_show()
    try:
        fast = _fast_path(argv)
        if fast is not None:
            return fast
        from .command import build_parser

        args = build_parser().parse_args(argv)
        import signal

        # A file-size limit must surface as EFBIG (one line, exit 1), not as the
        # default SIGXFSZ that kills the process mid-write.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from ..paths import resolve

        paths = resolve(getattr(args, "home", None))
        if getattr(args, "check_home", True):
            paths.check_safe()  # a home another user can write to is never read or written
        return int(args.handler(args, paths))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (status | head): nothing more to say, and
        # nothing to flush into the closed pipe at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the edge: one line, an exit status, the details in the log
        return _fail(exc, argv)


def _escape_what_stdout_cannot_show() -> None:
    """What we print holds the user's text (paths, names, reasons). Where stdout's encoding
    cannot show a character (a Latin-1 locale, PYTHONIOENCODING=ascii) it is escaped, as Python
    escapes it on stderr, instead of ending the command in an internal error."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="backslashreplace")


def _fail(exc: BaseException, argv: list[str]) -> int:
    from ..errors import CodiQueueError

    if isinstance(exc, CodiQueueError):
        say(str(exc))
        return EXIT_FAILURE
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        say(f"{exc.strerror or exc}{where}")
        return EXIT_FAILURE
    if type(exc).__module__.split(".")[0] == "apsw":  # the database said no: locked, full, corrupt, read-only
        say(f"database error: {type(exc).__name__}: {exc}")
        return EXIT_FAILURE
    # Not an error we raise on purpose: still one line here, the traceback in the error log.
    import traceback

    detail = "".join(traceback.format_exception(exc))
    try:
        from ..errorlog import record_error
        from ..paths import resolve

        logged = record_error(resolve(_split_home(argv)[0]).error_log, "cli", f"{type(exc).__name__}: {exc}",
                              argv=argv, traceback=detail)
    except Exception:  # noqa: BLE001 - the home itself may be what failed; the line below still goes out
        logged = False
    say(f"internal error: {type(exc).__name__}: {exc}" + (" (traceback in the error log)" if logged else ""))
    return EXIT_FAILURE


def _split_home(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--home DIR`` (or ``--home=DIR``) and every other argument, in order."""
    home: str | None = None
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--home":
            home = next(it, None)
        elif arg.startswith("--home="):
            home = arg[7:]
        else:
            rest.append(arg)
    return home, rest


def _fast_path(argv: list[str]) -> int | None:
    """The per-event commands, parsed by hand; None when argparse should handle the arguments."""
    home, rest = _split_home(argv)
    if rest == ["hook"]:
        from .events import run_hook

        return run_hook(home)
    if len(rest) >= 2 and rest[0] == "git-hook" and not rest[1].startswith("-"):
        from .events import run_git_hook

        return run_git_hook(home, rest[1], rest[2:])
    if rest and rest[0] == "enqueue":
        from .events import fast_enqueue

        return fast_enqueue(home, rest[1:])
    return None
