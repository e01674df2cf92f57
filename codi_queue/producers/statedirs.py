"""A one-way mirror of session directories whose ``state.json`` files are the source of truth.

Each ``<root>/<session dir>/state.json`` is mirrored into the project tier's
``projects``, ``sessions``, ``agents`` and ``agent_logs`` tables. The files
win: the tables are rebuilt by a full rescan (``codi-queue mirror-state DIR``)
and stay eventually consistent while the consumer watches. Writes are
debounced: a file is mirrored when its content changed and it has been quiet
for ``settle_s``. A malformed file is reported, never fatal.

Accepted shape (unknown keys ignored; every field optional but the ids)::

    {"project": {"id", "name", "path"},
     "session": {"id", "status", "title", "model", "started_at", "updated_at",
                 "cost_usd", "input_tokens", "output_tokens"},
     "agents": [{"id", "name", "role", "status", "model", "cost_usd",
                 "input_tokens", "output_tokens",
                 "logs": [{"ts", "level", "message"}]}]}

``session.id`` defaults to the directory name, ``project.id`` to the project
path or name. Timestamps may be unix seconds, milliseconds or ISO 8601.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from ..fsutil import open_regular
from ..ids import derived_op_id
from ..schemas.types import normalize_timestamp
from ..values import clean_text, loads
from .records import Op
from .sources import LINE_MAX

__all__ = ["MirrorResult", "operations_for_state", "mirror_state_dirs"]

_seen: dict[str, str] = {}  # state.json path → content hash last mirrored (this process)
# and the file as it was then (device, inode, size, modification time): an unchanged one is not read again
_seen_as: dict[str, tuple[int, int, int, int]] = {}


class MirrorResult:
    __slots__ = ("files", "operations", "problems")

    def __init__(self) -> None:
        self.files = self.operations = 0
        self.problems: list[str] = []


def _ts(value: Any) -> int | None:
    try:
        return normalize_timestamp(value) if value is not None else None
    except ValueError:
        return None


def _num(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return kind(value)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def operations_for_state(state: Any, session_dir: str, state_path: str) -> list[Op]:
    if not isinstance(state, dict):
        raise ValueError("state.json must hold a JSON object")
    now = int(time.time())
    project = _obj(state.get("project"))
    session = _obj(state.get("session"))
    session_id = clean_text(str(session.get("id") or os.path.basename(os.path.normpath(session_dir))))
    project_id = project.get("id") or project.get("path") or project.get("name")
    ops: list[Op] = []
    if project_id:
        ops.append(("project", _clean({"timestamp": now, "project_id": str(project_id),
                                        "name": project.get("name"), "path": project.get("path")}), None))
    ops.append(("session_state", _clean({
        "timestamp": now,
        "session_id": session_id,
        "project_id": str(project_id) if project_id else None,
        "status": session.get("status"),
        "title": session.get("title"),
        "model": session.get("model"),
        "started_at": _ts(session.get("started_at")),
        "updated_at": _ts(session.get("updated_at")),
        "cost_usd": _num(session.get("cost_usd"), float),
        "input_tokens": _num(session.get("input_tokens"), int),
        "output_tokens": _num(session.get("output_tokens"), int),
        "state_path": clean_text(state_path),  # a file name that is not UTF-8: the text rule
    }), None))
    agents: list[Any] = state["agents"] if isinstance(state.get("agents"), list) else []
    for agent in agents:
        if not isinstance(agent, dict) or not agent.get("id"):
            continue
        agent_id = str(agent["id"])
        ops.append(("agent", _clean({
            "timestamp": now,
            "session_id": session_id,
            "agent_id": agent_id,
            "name": agent.get("name"),
            "role": agent.get("role"),
            "status": agent.get("status"),
            "model": agent.get("model"),
            "cost_usd": _num(agent.get("cost_usd"), float),
            "input_tokens": _num(agent.get("input_tokens"), int),
            "output_tokens": _num(agent.get("output_tokens"), int),
        }), None))
        logs: list[Any] = agent["logs"] if isinstance(agent.get("logs"), list) else []
        for n, entry in enumerate(logs):
            if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
                continue
            own = _ts(entry.get("ts") or entry.get("timestamp"))
            ts = own or now
            raw = json.dumps(entry, sort_keys=True)
            # A log line keeps its id across rescans, so it is stored once: the id carries the
            # entry's own time, never the time of this rescan (0 for an entry without one).
            op_id = derived_op_id(own or 0, n, session_id, agent_id, raw)
            ops.append(("agent_log", _clean({"timestamp": ts, "session_id": session_id, "agent_id": agent_id,
                                              "message": entry["message"][:60_000], "level": entry.get("level")}), op_id))
    return ops


def mirror_state_dirs(paths: Any, root: str, *, rescan: bool = False, settle_s: float = 0.2) -> MirrorResult:
    """Mirror every changed ``state.json`` one level below ``root``; ``rescan`` mirrors them all."""
    from .records import append_ops, producer_name

    result = MirrorResult()
    real_root = os.path.realpath(root)
    ops: list[Op] = []
    mirrored: dict[str, tuple[str, tuple[int, int, int, int]]] = {}  # remembered once in the spool
    now = time.time()
    for entry in sorted(os.scandir(real_root), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            continue
        path = os.path.join(entry.path, "state.json")
        try:
            st = os.stat(path, follow_symlinks=False)
            if not rescan and now - st.st_mtime < settle_s:
                continue  # still being written: the next poll takes it
            seen_as = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if not rescan and _seen_as.get(path) == seen_as:
                continue
            # Never through a link: a watched directory must not read files outside itself.
            with os.fdopen(open_regular(path, os.O_RDONLY | os.O_CLOEXEC), "rb") as fp:  # nor a FIFO
                data = fp.read(LINE_MAX + 1)  # never more: a huge file must not take the consumer's memory
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.problems.append(f"{path}: not read ({exc.strerror}; a symbolic link or not a regular file)")
            continue
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        mirrored[path] = (digest, seen_as)  # a malformed one too: reported once per version of the file
        if not rescan and _seen.get(path) == digest:
            continue
        if len(data) > LINE_MAX:
            result.problems.append(f"{path}: larger than the {LINE_MAX:,} bytes a state.json may have; not mirrored")
            continue
        try:
            ops += operations_for_state(loads(data), entry.path, path)
        except (ValueError, RecursionError) as exc:
            result.problems.append(f"{path}: malformed state.json, not mirrored: {exc}")
            continue
        result.files += 1
    if ops:
        append_ops(paths, ops, producer_name("statedirs"))  # SpoolError: nothing remembered, read again next time
        result.operations = len(ops)
    for path, (digest, seen_as) in mirrored.items():
        _seen[path], _seen_as[path] = digest, seen_as
    return result
