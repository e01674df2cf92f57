"""Claude Code transcripts → ``message`` and ``token_economics`` operations.

A transcript is JSONL under ``projects/<project>/<session>.jsonl`` (subagent
transcripts under ``<session>/subagents/agent-<id>.jsonl``). Each user,
assistant or system line with text becomes one ``message``. Each assistant
line with ``usage`` becomes a ``token_economics`` upsert keyed on
``message.id`` + ``requestId``: one response is split over several lines
that repeat its usage (growing as output streams), so the key counts it once
and, because derived ids sort by time and line, the last line's figures win.

Ids derive from the transcript line, so watching, re-importing and restarting
never count anything twice. Standard library only, except for the spool.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Collection, Iterator
from typing import Any

from ..errors import SpoolError
from ..ids import derived_op_id
from ..schemas.types import normalize_timestamp
from ..schemas.wire import COUNT_MAX
from ..timestamps import SECONDS_BELOW
from ..values import loads
from .records import Op, fit_name
from .sources import Line, SourceFile

__all__ = ["operations_for_line", "transcript_files", "import_transcripts", "TranscriptResult"]

_CONTENT_MAX = 200_000  # characters of one message kept (the column allows 1 Mi; bytes matter too)
_RESULT_MAX = 2_000
_ROLES = ("user", "assistant", "system")



def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "tool_use":
            args = json.dumps(block.get("input", {}), ensure_ascii=False)[:500]
            parts.append(f"[tool_use {block.get('name', '?')}] {args}")
        elif kind == "tool_result":
            parts.append("[tool_result] " + _text(block.get("content"))[:_RESULT_MAX])
        elif kind == "image":
            parts.append("[image]")
    return "\n".join(p for p in parts if p.strip())


def _timestamp(value: Any) -> tuple[int, float]:
    """(unix seconds, fractional seconds for id ordering)."""
    if isinstance(value, str):
        from datetime import datetime, timezone

        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            exact = parsed.timestamp()
            if 0 <= exact < SECONDS_BELOW:  # else normalize_timestamp says why (year 1, year 9999)
                return int(exact), exact
    seconds = normalize_timestamp(value)
    return seconds, float(seconds)


def operations_for_line(obj: Any, line_no: int, source: str) -> list[Op]:
    if not isinstance(obj, dict) or obj.get("type") not in _ROLES:
        return []
    session = fit_name(obj.get("sessionId"))
    if session is None:
        return []
    ts, exact = _timestamp(obj.get("timestamp"))  # ValueError: the caller counts the line as unreadable
    msg: dict[str, Any] = obj["message"] if isinstance(obj.get("message"), dict) else {}
    role = msg.get("role") if msg.get("role") in _ROLES else obj["type"]
    uuid, model, request = fit_name(obj.get("uuid")), fit_name(msg.get("model")), fit_name(obj.get("requestId"))
    ops: list[Op] = []
    content = _text(msg.get("content") if msg else obj.get("content"))
    if content.strip():
        body = {"timestamp": ts, "session_id": session, "role": role, "content": content[:_CONTENT_MAX]}
        body.update({k: v for k, v in (("uuid", uuid), ("model", model), ("request_id", request)) if v})
        ops.append(("message", body, derived_op_id(exact, line_no, source, uuid or "", "message")))
    usage = msg.get("usage")
    message_id = fit_name(msg.get("id"))
    if obj["type"] == "assistant" and isinstance(usage, dict) and message_id and request:
        tokens = {
            k: int(usage[k])
            for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            if isinstance(usage.get(k), int) and not isinstance(usage[k], bool) and 0 <= usage[k] <= COUNT_MAX
        }
        body = {"timestamp": ts, "message_id": message_id, "request_id": request, "session_id": session, **tokens}
        if model:
            body["model"] = model
        ops.append(("token_economics", body, derived_op_id(exact, line_no, source, uuid or "", "usage")))
    return ops


def transcript_files(root: str, skip: Collection[str] = (), notes: list[str] | None = None) -> Iterator[str]:
    """Every ``*.jsonl`` below ``root`` (subagent files included), never following links out of it,
    nor entering the directories ``skip`` names (real paths). A directory that cannot be listed
    is said in ``notes`` (``os.walk`` passes over it silently)."""
    real_root = os.path.realpath(root)
    if any(real_root == d or real_root.startswith(d + os.sep) for d in skip):
        return

    def unlisted(exc: OSError) -> None:
        if notes is not None and not isinstance(exc, FileNotFoundError):  # gone since its parent was read
            notes.append(f"{exc.filename}: not read ({exc.strerror or exc}); passed over")

    for dirpath, dirnames, filenames in os.walk(real_root, onerror=unlisted, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip)
        for name in sorted(filenames):
            if name.endswith(".jsonl"):
                path = os.path.join(dirpath, name)
                # The walk enters no linked directory, so only a linked file can lead out.
                if not os.path.islink(path) or os.path.realpath(path).startswith(real_root + os.sep):
                    yield path


class TranscriptResult:
    __slots__ = ("files", "lines", "operations", "skipped", "notes")

    def __init__(self) -> None:
        self.files = self.lines = self.operations = self.skipped = 0
        self.notes: list[str] = []


# The watching consumer's memory of each transcript as it last read it to its end: (device,
# inode, size, modification time). A tree holds thousands of finished transcripts, and
# opening each on every poll cost an idle consumer 12% of a core for 2,000 of them.
_read_as: dict[str, dict[str, tuple[int, int, int, int]]] = {}


def import_transcripts(paths: Any, root: str, *, final: bool = True, batch_lines: int = 2000) -> TranscriptResult:
    """Enqueue what is new in every transcript below ``root``. The watcher (``final`` False)
    passes over a file unchanged since it last read it; an explicit import reads them all."""
    from .records import producer_name

    result = TranscriptResult()
    who = producer_name("transcripts")
    known = {} if final else _read_as.get(os.path.realpath(root), {})
    read_as: dict[str, tuple[int, int, int, int]] = {}
    # A root that holds codi-queue's own directories (transcripts = ["~"]): its error log is
    # JSON lines, and nothing of ours is a transcript.
    own = {os.path.realpath(d) for d in (paths.home, paths.logs, paths.state)}
    for path in transcript_files(root, own, result.notes):
        try:
            _import_one(paths, path, final, batch_lines, who, known, read_as, result)
        except SpoolError:
            raise  # ours to fix (a full disk): nothing more is read until it is
        except OSError as exc:
            # This file's trouble (a link loop, one we may not read, an I/O error) is said,
            # and the files after it are still read: one such file had stopped the whole tree.
            result.notes.append(f"{path}: not read ({exc.strerror or exc}); passed over")
    if not final:
        _read_as[os.path.realpath(root)] = read_as
    return result


def _import_one(paths: Any, path: str, final: bool, batch_lines: int, who: str,
                known: dict[str, tuple[int, int, int, int]], read_as: dict[str, tuple[int, int, int, int]],
                result: TranscriptResult) -> None:
    """What is new in one transcript into the spool (``import_transcripts``, file by file)."""
    from .records import append_ops

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return  # gone since the walk
    if not stat.S_ISREG(st.st_mode):  # a FIFO would hold the import (the consumer's too) for ever
        result.notes.append(f"{path}: not a regular file; passed over")
        return
    seen_as = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if known.get(path) == seen_as:
        read_as[path] = seen_as
        return
    source = SourceFile(path, paths.state)
    result.files += 1
    ops: list[Op] = []
    last: Line | None = None
    for line in source.lines(final=final):
        if line.cut:  # never held whole: counted and said, and the lines after it still read
            result.skipped += 1
            result.notes.append(f"{source.path}: line {line.number}: {line.too_long()}; passed over")
            last = line
            result.lines += 1
            continue
        try:
            obj = loads(line.raw)
        except (ValueError, RecursionError):
            if not line.complete:
                break  # a last line still being written: read again once its newline comes
            result.skipped += 1  # a damaged line: counted, and the lines after it still read
            obj = None
        try:
            ops += operations_for_line(obj, line.number, source.path)
        except ValueError:  # a timestamp no clock has: counted, not silently dropped
            result.skipped += 1
        last = line
        result.lines += 1
        if len(ops) >= batch_lines:
            append_ops(paths, ops, who)
            source.commit(last.end, last.number)
            result.operations += len(ops)
            ops = []
    if ops:
        append_ops(paths, ops, who)
        result.operations += len(ops)
    if last is not None:
        source.commit(last.end, last.number)
    result.notes += source.notes
    read_as[path] = seen_as  # all it held when looked at is in the spool (or waits for its newline)
