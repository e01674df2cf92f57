"""``install-hooks`` and ``install-git-hook``: put codi-queue's hooks where Claude Code and git call them."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .command import DRY_RUN, command, opt
from .exits import EXIT_FAILURE, EXIT_INVALID, EXIT_OK, say

if TYPE_CHECKING:
    import argparse

    from ..paths import Paths


@command(
    "install-hooks",
    help="merge codi-queue's hooks into a Claude settings file",
    description="Add codi-queue's hooks to a Claude Code settings file (async, so the agent never waits; "
                "SessionEnd synchronous), keeping every other tool's hooks; a backup is kept.",
    examples=["codi-queue install-hooks", "codi-queue install-hooks .claude/settings.json --dry-run"],
    options=[
        opt("settings", nargs="?", default=os.path.expanduser("~/.claude/settings.json")),
        opt("--dry-run", action="store_true", help="print the diff, change nothing"),
    ],
)
def install_hooks(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.install import command_line, install_claude_hooks

    # The home is resolved now and written into the hook: a hook process then
    # needs neither platformdirs nor the config file, and cannot drift elsewhere.
    try:
        diff, backup, theirs = install_claude_hooks(args.settings, command_line("hook", paths.home), args.dry_run)
    except (ValueError, OSError) as exc:
        say(str(exc))
        return EXIT_INVALID if isinstance(exc, ValueError) else EXIT_FAILURE
    if args.dry_run:
        sys.stdout.write(diff or "no change\n")
    elif not diff:
        print(f"{args.settings}: hooks already installed")
    else:
        print(f"{args.settings}: hooks installed" + (f" (backup: {backup})" if backup else ""))
    from ..schemas.registry import OPS

    _twice(paths, OPS["tool_event"].tier, theirs, "each tool call", "remove them from the settings")
    return EXIT_OK


def _twice(paths: Paths, tier: str, theirs: list[str], what: str, remedy: str) -> None:
    """Say so when the platform's own hooks, which write claude.db themselves, run beside ours while
    the tier they write lives in an adopted database: every event would be stored there twice."""
    if not theirs or not paths.configured_database(tier):
        return
    say(f"note: {len(theirs)} of the platform's own hooks also run, and write {what} into "
        f"{paths.database(tier)} themselves, where codi-queue's {tier} tier now writes it too: "
        f"{what} would be stored twice. Once codi-queue records them, {remedy}:")
    for hook in theirs:
        say(f"  {hook}")


@command(
    "install-git-hook",
    help="install post-commit/post-merge/pre-push hooks",
    description="Install git hooks that record commits, merges and pushes; an existing hook is chained, "
                "not replaced.",
    examples=["codi-queue install-git-hook ~/src/project"],
    options=[opt("repo", nargs="?", default="."), DRY_RUN],
)
def install_git_hook(args: argparse.Namespace, paths: Paths) -> int:
    from ..producers.install import command_line, install_git_hooks, platform_git_recorders
    from ..schemas.registry import OPS

    try:
        for line in install_git_hooks(args.repo, command_line("git-hook", paths.home), args.dry_run):
            print(line)
        theirs = platform_git_recorders(args.repo)
    except (ValueError, OSError) as exc:
        say(str(exc))
        return EXIT_INVALID if isinstance(exc, ValueError) else EXIT_FAILURE
    _twice(paths, OPS["git_event"].tier, theirs, "each commit", "remove their recording from these hooks")
    return EXIT_OK
