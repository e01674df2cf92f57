"""``sync push|pull|status|migrate``: the team's PostgreSQL (docs/team.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .command import command, count_in, opt
from .exits import EXIT_OK

if TYPE_CHECKING:
    import argparse

    from ..paths import Paths

HELP = "the team's PostgreSQL: push this machine's journal, pull shared tiers (docs/team.md)"


@command(
    "sync",
    help=HELP,
    description=HELP + """

The [sync] table of the config file says where (url), as whom (machine) and
which tiers go out (push) and come in (pull); the password comes from
PGPASSWORD or ~/.pgpass and is never printed. Exit 0 when done, 1 when the team
database cannot be reached or refuses (one line says why), 2 on usage errors.""",
    examples=[
        "codi-queue sync migrate          create or update the team tables",
        "codi-queue sync push             send what was applied here and not yet sent",
        "codi-queue sync pull             bring other machines' org knowledge here",
        "codi-queue sync status --json    per tier: pushed up to where, backlog, last error",
    ],
    options=[
        opt("action", choices=["push", "pull", "status", "migrate"]),
        opt("--json", action="store_true", help="print the summary as JSON"),
        opt("--batch", type=count_in(1, 10_000_000), default=20_000, metavar="N",
            help="push: operations per PostgreSQL transaction (default 20000)"),
    ],
)
def sync(args: argparse.Namespace, paths: Paths) -> int:
    from ..sync.reports import ACTIONS, require_sync

    report = ACTIONS[args.action](paths, require_sync(paths), max(1, args.batch))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(report.pop("summary"))
    return EXIT_OK
