"""Security: private state, unsafe directories refused, no pickle, no escaping watched directories."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.errors import UnsafePath
from codi_queue.paths import Paths
from codi_queue.producers.api import enqueue
from codi_queue.producers.statedirs import mirror_state_dirs
from codi_queue.producers.transcripts import transcript_files
from codi_queue.schemas.registry import OPS

from ..conftest import ROOT, run_cli

FIXTURES = ROOT / "tests" / "fixtures" / "transcripts"


@pytest.mark.parametrize("which", ["spool", "db_dir", "state"])
def test_consumer_refuses_a_group_or_world_writable_state_directory(home: Path, paths: Paths, which: str) -> None:
    enqueue("tool_event", {"tool_name": "x", "success": True}, home=str(home))
    Consumer(paths).run(once=True)
    os.chmod(getattr(paths, which), 0o777)
    with pytest.raises(UnsafePath, match="writable by group or others"):
        Consumer(paths).run(once=True)
    res = run_cli(home, "run", "--once")
    assert res.returncode == 1 and "refusing" in res.stderr and "writable by group or others" in res.stderr


def test_consumer_refuses_a_directory_owned_by_another_user(home: Path, paths: Paths) -> None:
    if os.getuid() != 0:
        pytest.skip("changing a directory's owner needs root")  # the project's machines run as root
    Consumer(paths).run(once=True)
    os.chown(paths.db_dir, 12345, 12345)
    with pytest.raises(UnsafePath, match="owned by uid 12345"):
        Consumer(paths).run(once=True)


def test_sql_identifiers_come_only_from_the_schemas() -> None:
    import re

    for spec in OPS.values():
        idents = set(re.findall(r'"([^"]+)"', spec.sql))
        assert idents <= {spec.table, "op_id", *spec.columns}, spec.name


def test_transcript_links_out_of_the_tree_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(FIXTURES / "short.jsonl", outside / "secret.jsonl")
    root = tmp_path / "projects" / "p"
    root.mkdir(parents=True)
    shutil.copy(FIXTURES / "short.jsonl", root / "ok.jsonl")
    (root / "escape.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "dir-escape").symlink_to(outside, target_is_directory=True)
    (root / ".." / "p" / "dotdot.jsonl").symlink_to("../../outside/secret.jsonl")
    found = [os.path.basename(p) for p in transcript_files(str(tmp_path / "projects"))]
    assert found == ["ok.jsonl"]


def test_state_json_links_are_reported_not_read(tmp_path: Path, paths: Paths) -> None:
    root = tmp_path / "sessions"
    (root / "s1").mkdir(parents=True)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"session": {"id": "leaked"}}))
    (root / "s1" / "state.json").symlink_to(secret)
    (root / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    old = time.time() - 5
    os.utime(secret, (old, old))
    result = mirror_state_dirs(paths, str(root), rescan=True)
    assert result.operations == 0 and any("symbolic link" in p for p in result.problems)


def test_the_installed_package_never_imports_pickle_on_its_own() -> None:
    sources = (ROOT / "codi_queue").rglob("*.py")
    offenders = [str(p) for p in sources if "import pickle" in p.read_text() or "from pickle" in p.read_text()]
    assert offenders == []
