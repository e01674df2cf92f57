from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codi_queue.paths import Paths, resolve
from tests.pgserver import PgServer

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One real server for the session; each test gets its own database (``team``)."""
    server = PgServer()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def team(pg: PgServer) -> str:
    """The URL of a fresh, empty team database."""
    pg.start_if_stopped()
    return pg.url(pg.create_database(f"team{os.getpid()}_{next(_names)}"))


def configure(home: Path, url: str, machine: str, **extra: Any) -> Paths:
    """A home whose config.toml has a [sync] table."""
    import json

    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = ["[sync]", f"url = {json.dumps(url)}", f"machine = {json.dumps(machine)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    paths = resolve(str(home))
    fd = os.open(paths.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fp:
        fp.write("\n".join(lines) + "\n")
    return paths


def team_rows(url: str, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]
