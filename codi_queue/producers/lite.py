"""The standard-library producer path: JSON records for processes that must start fast.

Hooks run on every tool call, and on this class of machine importing msgspec
alone costs about as much as three bare interpreter starts. This path builds
the same envelope and record as ``validate.pack_records`` but as JSON, with
only the standard library; the consumer decodes it into the same Structs and
validates every body then (a body that does not validate becomes a dead
letter with the reason, visible in ``status``).

Use it only where the caller cannot act on a validation error anyway (hooks,
tailers); everything else goes through the validating API.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..ids import new_op_id
from ..paths import Paths
from ..queue.frame import JsonRecord

__all__ = ["json_records", "append_ops", "append_records", "producer_name", "OP_VERSION"]

OP_VERSION = 1  # every operation's schema version today; see schemas.registry
_MAX_RECORD = 32 * 1024 * 1024


def producer_name(kind: str) -> str:
    return f"{kind}@{os.uname().nodename}:{os.getpid()}"


def json_records(ops: Iterable[tuple[str, dict[str, Any], str | None]], producer: str) -> list[JsonRecord]:
    """Records for (op, body, op id or None for a fresh one), each under the record size limit."""
    now = time.time()
    records: list[JsonRecord] = []
    envs: list[str] = []
    size = 0
    for op, body, op_id in ops:
        env = json.dumps(
            [op_id or new_op_id(), op, OP_VERSION, now, producer, body],
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        if envs and size + len(env) > _MAX_RECORD:
            records.append(_record(envs, now))
            envs, size = [], 0
        envs.append(env)
        size += len(env)
    if envs:
        records.append(_record(envs, now))
    return records


def _record(envs: list[str], now: float) -> JsonRecord:
    text = f"[{len(envs)},{now!r},[{','.join(envs)}]]"
    try:
        return JsonRecord(text.encode("utf-8"))
    except UnicodeEncodeError:
        # Unpaired surrogates (a truncated emoji escape, an undecodable argv
        # byte): replaced with U+FFFD, the rule at every entry point.
        from ..values import clean_text

        return JsonRecord(clean_text(text).encode("utf-8"))


_spools: dict[str, Any] = {}


def append_records(paths: Paths, records: Sequence[bytes]) -> None:
    """Durably append encoded records (MessagePack or ``JsonRecord``); raises ``SpoolError``."""
    spool = _spools.get(paths.spool)
    if spool is None:
        from ..queue.spool import Spool

        spool = _spools[paths.spool] = Spool(paths.spool, paths.archive)
    spool.append(records)


def append_ops(paths: Paths, ops: Sequence[tuple[str, dict[str, Any], str | None]], producer: str) -> None:
    """Durably append the operations; raises ``SpoolError``."""
    if ops:
        append_records(paths, json_records(ops, producer))
