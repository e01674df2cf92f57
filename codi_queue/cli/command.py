"""How a command is declared: its options, help (with an example) and handler in one place.

As sqlite-utils does with click, each command module puts a ``@command(...)``
above its handler; the options every command shares are defined once here.
The parser is built only when a command needs it: the per-event commands
(``hook``, ``git-hook``, ``enqueue``) never import argparse.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    import argparse
    from collections.abc import Callable, Sequence

    from ..paths import Paths

__all__ = ["Command", "Option", "opt", "command", "COMMANDS", "build_parser", "JSON", "DRY_RUN", "tier_option",
           "since_option", "seconds", "count_in", "Handler"]

Handler: TypeAlias = "Callable[[argparse.Namespace, Paths], int]"

# The modules that declare commands, in the order ``--help`` lists them.
GROUPS = ("events", "imports", "install", "consumer", "info", "recovery", "upkeep", "sync")


class Option:
    __slots__ = ("flags", "kwargs")

    def __init__(self, flags: tuple[str, ...], kwargs: dict[str, Any]) -> None:
        self.flags = flags
        self.kwargs = kwargs


def opt(*flags: str, **kwargs: Any) -> Option:
    """One ``add_argument`` call, declared beside the handler that reads it."""
    return Option(flags, kwargs)


class Command:
    # Plain slots, no dataclass: the per-event commands import this module, and
    # dataclasses pulls in inspect (milliseconds on every hook call).
    __slots__ = ("name", "help", "examples", "options", "handler", "description", "defaults")

    def __init__(self, name: str, help: str, examples: tuple[str, ...], options: tuple[Option, ...],
                 handler: Handler, description: str | None, defaults: dict[str, Any]) -> None:
        self.name = name
        self.help = help
        self.examples = examples
        self.options = options
        self.handler = handler
        self.description = description
        self.defaults = defaults

    def epilog(self) -> str:
        return ("examples:\n" if len(self.examples) > 1 else "example:\n") + "".join(
            f"  {e}\n" for e in self.examples)


COMMANDS: list[Command] = []


def command(
    name: str,
    *,
    help: str,
    examples: Sequence[str],
    options: Sequence[Option] = (),
    description: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> Callable[[Handler], Handler]:
    """Register the decorated function as ``codi-queue NAME``."""

    def register(handler: Handler) -> Handler:
        COMMANDS.append(Command(name, help, tuple(examples), tuple(options), handler, description,
                                dict(defaults or {})))
        return handler

    return register


# -- options several commands share -------------------------------------------------------------

JSON = opt("--json", action="store_true", help="print JSON instead of text")
DRY_RUN = opt("--dry-run", action="store_true", help="say what would change, change nothing")
HOME_HELP = "state directory (default: $CODI_QUEUE_HOME, else the platform's user data directory)"


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above zero (``inf`` overflowed a wait, NaN
    and negatives were taken silently)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number of seconds above 0")
    return value


def count_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {low} to {high}")
        return value

    return parse


def tier_option(help: str) -> Option:
    """``--tier``, repeatable, with the databases the schema registry defines."""
    from ..schemas.registry import ALL_TIERS

    return opt("--tier", action="append", choices=list(ALL_TIERS), help=help)


def since_option(help: str = "only at or after this time (unix seconds or ISO 8601)") -> Option:
    return opt("--since", help=help)


def build_parser() -> argparse.ArgumentParser:
    import argparse
    import importlib  # here, not above: the per-event commands import this module too
    import textwrap

    from .. import __version__

    for group in GROUPS:
        importlib.import_module(f"{__package__}.{group}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
    parser = argparse.ArgumentParser(
        prog="codi-queue", description="Durable write-ahead queue in front of SQLite.", parents=[common],
        epilog="exit status: 0 done, 1 failure (nothing more was done), 2 invalid input or usage, "
               "3 some records refused (the others enqueued)",
    )
    parser.add_argument("--version", action="version", version=f"codi-queue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
        # Raw, so the examples keep their lines; the description's paragraphs are wrapped here.
        description = "\n\n".join(textwrap.fill(" ".join(par.split()), 79)
                                   for par in (cmd.description or cmd.help).split("\n\n"))
        p = sub.add_parser(cmd.name, parents=[common], help=cmd.help, description=description,
                           epilog=cmd.epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        for option in cmd.options:
            p.add_argument(*option.flags, **option.kwargs)
        p.set_defaults(handler=cmd.handler, **cmd.defaults)
    return parser
