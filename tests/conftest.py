from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest

from codi_queue.paths import Paths, resolve

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    return h


@pytest.fixture
def paths(home: Path) -> Paths:
    return resolve(str(home))


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CODI_QUEUE_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(home: Path, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real command in a real process, with a hard timeout."""
    return subprocess.run(
        [sys.executable, "-m", "codi_queue", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=timeout,
    )


def query(paths: Paths, tier: str, sql: str, bindings: Any = ()) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(paths.database(tier), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    try:
        return [tuple(r) for r in conn.execute(sql, bindings)]
    finally:
        conn.close()


def named_rows(paths: Paths, tier: str, sql: str, bindings: Any = ()) -> list[dict[str, Any]]:
    """Rows as {column: value}: tests read a field by its name, never by its place in a tuple."""
    conn = apsw.Connection(paths.database(tier), flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(10_000)
    try:
        cursor = conn.cursor()
        # The description is only there while the statement runs: read it per row.
        cursor.row_trace = lambda cur, row: dict(zip((d[0] for d in cur.get_description()), row))
        return list(cursor.execute(sql, bindings))
    finally:
        conn.close()


def count_when_ready(paths: Paths, tier: str, sql: str) -> int | None:
    """A count from a database a running consumer may still be creating; None until it can answer."""
    if not os.path.exists(paths.database(tier)):
        return None
    try:
        return int(query(paths, tier, sql)[0][0])
    except apsw.SQLError:
        return None  # not migrated yet


def modules_loaded(home: Path, code: str, watch: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of ``watch`` it imported (what a hot path must not)."""
    probe = (f"{code}\nimport sys\n_loaded = sorted(m for m in {watch!r} if m in sys.modules)\n"
             "import json\nprint(json.dumps(_loaded))\n")  # listed before json is imported to print it
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=cli_env(home), timeout=60)
    assert res.returncode == 0, res.stderr
    loaded: list[str] = json.loads(res.stdout.strip().splitlines()[-1])
    return loaded


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test with ``what`` at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        threading.Event().wait(interval)


def tool_event_lines(n: int, tag: str, width: int = 250) -> str:
    """``n`` JSON lines of ``tool_event`` bodies, each about ``width`` bytes, tagged for counting."""
    pad = "x" * max(0, width - 90)
    return "".join(
        json.dumps({"tool_name": "Bash", "success": True, "tool_use_id": f"{tag}-{i}", "error_message": pad}) + "\n"
        for i in range(n)
    )
