"""The README's command table and ``codi-queue --help`` name the same commands (as sqlite-utils checks)."""

from __future__ import annotations

import argparse
import re

from codi_queue.cli.command import build_parser as _parser

from .conftest import ROOT


def _parser_commands() -> set[str]:
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return set(sub.choices)


def _readme_commands() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Commands"):]
    table = table[: table.index("\n## ", 3)]
    return set(re.findall(r"^\| `codi-queue ([a-z][a-z-]*)", table, re.M))


def test_every_command_is_in_the_readme_and_every_readme_command_exists() -> None:
    assert _readme_commands() == _parser_commands()


def test_the_help_lists_every_command() -> None:
    text = _parser().format_help()
    missing = [c for c in _parser_commands() if c not in text]
    assert missing == []


def test_every_command_says_what_it_is_for_and_shows_an_example() -> None:
    from codi_queue.cli.command import COMMANDS

    _parser()
    assert {c.name for c in COMMANDS} == _parser_commands()
    for c in COMMANDS:
        assert c.help and c.examples, c.name
        assert all(e.startswith("codi-queue ") or "| codi-queue " in e for e in c.examples), c.name
        assert c.name in c.examples[0], c.name
