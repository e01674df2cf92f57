"""The legacy JSONL bridge: ``codi-queue import FILE --op OP``, and the consumer's tailer.

Each good line becomes one operation whose id is derived from the file and
the line, so importing a file twice, or a tailer re-reading after a crash,
applies nothing twice. A line that is not JSON or does not validate is not
dropped: it travels through the spool as a ``_rejected`` operation and lands
in the dead-letter store with its line number and reason.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import InvalidOperation
from ..ids import derived_op_id
from ..paths import Paths
from ..schemas.envelope import Envelope, Record, Rejected
from ..schemas.legacy import from_legacy
from ..schemas.registry import OPS, REJECTED_OP
from ..values import clean_text, loads
from .records import append_records
from .sources import Line, SourceFile
from .validate import encode_body, invalid_from_msgspec, pack_records, spec_or_raise

__all__ = ["ImportResult", "import_file", "BATCH_LINES"]

BATCH_LINES = 5000
_encode = msgspec.msgpack.Encoder().encode
_decode_line = msgspec.json.Decoder().decode


@dataclass
class ImportResult:
    lines: int = 0
    enqueued: int = 0
    rejected: list[InvalidOperation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    before_since: int = 0  # lines dated at or before ``since``, not enqueued


def _convert(op: str, line: Line, columns: tuple[str, ...]) -> tuple[Any, int]:
    """The line as an operation, and the time its id carries: the line's own timestamp, or 0 for
    a line that has none. Its ``timestamp`` is then the time of reading, which differs at every
    reading, and an id derived from it made each re-read (a lost offset, the tailer killed between
    its append and its offset, a replay) store the line again."""
    if line.cut:
        raise InvalidOperation(line.too_long(), op=op, record=line.number)
    try:
        obj = _decode_line(line.raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # Invalid UTF-8, a lone surrogate escape, a number too large for a
        # double: the value rules (codi_queue.values) keep the line if they can.
        try:
            obj = loads(line.raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidOperation(f"not valid JSON: {exc}", op=op, record=line.number) from None
    if not isinstance(obj, dict):
        raise InvalidOperation(f"expected a JSON object, got {type(obj).__name__}", op=op, record=line.number)
    body = from_legacy(op, obj, columns)
    try:
        item = msgspec.convert(body, OPS[op].type, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_from_msgspec(exc, op, line.number) from None
    except RecursionError:
        raise InvalidOperation("nested too deeply", op=op, record=line.number) from None
    own = item.timestamp if body.get("timestamp") is not None else 0
    return item, own if isinstance(own, int) else 0  # whole seconds once the Struct normalised it


def import_file(
    paths: Paths,
    path: str,
    op: str,
    *,
    final: bool = True,
    producer: str | None = None,
    progress: Callable[[int], None] | None = None,
    since: int | None = None,
) -> ImportResult:
    """Enqueue every new line of ``path`` as ``op``; lines already imported are skipped.

    ``final`` treats a last line without a newline as complete (a one-off
    import: it becomes an operation or a rejection like any other); the
    tailer passes False and waits for the newline. ``since`` (unix seconds):
    a valid line dated at or before it is counted, not enqueued (the
    platform's own tools stored it already); a line with no date of its own
    is enqueued.
    """
    spec = spec_or_raise(op)
    source = SourceFile(path, paths.state)
    result = ImportResult()
    who = clean_text(producer or f"import:{source.path}")  # a file name as text: the text rule
    batch: list[Line] = []
    for line in source.lines(final=final):
        batch.append(line)
        if len(batch) >= BATCH_LINES:
            _flush(paths, source, op, spec.columns, batch, who, result, since)
            if progress:
                progress(source.offset)
            batch = []
    if batch:
        _flush(paths, source, op, spec.columns, batch, who, result, since)
    if progress:
        progress(source.offset)
    result.notes = source.notes
    return result


def _flush(
    paths: Paths,
    source: SourceFile,
    op: str,
    columns: tuple[str, ...],
    batch: list[Line],
    who: str,
    result: ImportResult,
    since: int | None = None,
) -> None:
    bodies: list[bytes] = []
    ids: list[str] = []
    rejected: list[Envelope] = []
    last = batch[-1]
    for line in batch:
        try:
            item, stamp = _convert(op, line, columns)
            if since is not None and 0 < stamp <= since:
                result.before_since += 1
                continue
            bodies.append(encode_body(item, op, line.number))
            ids.append(derived_op_id(stamp, line.number, source.path, line.raw))
        except InvalidOperation as err:
            # Every line, the last one too (with or without its newline), ends
            # as an operation or as a rejection with its number: never skipped.
            result.rejected.append(err)
            why = f"field {err.field}: {err.reason}" if err.field else err.reason
            body = Rejected(op, clean_text(source.path), line.number, why, line.raw.decode("utf-8", "replace"),
                            line.size if line.cut else 0)
            rid = derived_op_id(0, line.number, source.path, line.raw, b"rejected")
            rejected.append(Envelope(rid, REJECTED_OP, 1, time.time(), who, msgspec.Raw(_encode(body))))
    records = pack_records(op, bodies, who, ids=ids) if bodies else []
    if rejected:
        records.append(_encode(Record(len(rejected), rejected[0].ts, rejected)))
    if records:
        append_records(paths, records)
    result.lines += len(batch)
    result.enqueued += len(bodies)
    source.commit(last.end, last.number)


def progress_bar(label: str, total: int) -> Callable[[int], None] | None:
    """A one-line progress bar on stderr when it is a terminal; None otherwise."""
    if not sys.stderr.isatty() or total <= 0:
        return None

    def update(done: int) -> None:
        frac = min(1.0, done / total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{label} [{bar:<30}] {frac:6.1%} {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return update
