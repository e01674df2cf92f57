"""What ``codi-queue status`` reports, read without disturbing the consumer."""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import TYPE_CHECKING, Any

import apsw
import msgspec

from ..errorlog import error_count, last_error
from ..errors import CodiQueueError
from ..paths import Paths
from ..queue.frame import KIND_JSON_RECORD
from ..queue.segment import SegmentReader, cannot_read_now
from ..queue.spool import Spool, lane_inbox
from ..schemas.envelope import RecordHead, RecordOps
from ..schemas.registry import OPS, STATE_TIER, TIERS
from .db import checked_cursor, open_readonly
from .lock import consumer_pid
from .metrics import read_metrics
from .wake import UNWATCHED_POLL_S

if TYPE_CHECKING:
    from ..config import SyncConfig

__all__ = ["collect", "prometheus_text", "render_human"]

_decode_head = msgspec.msgpack.Decoder(RecordHead).decode
_decode_json_head = msgspec.json.Decoder(RecordHead).decode


def _open(paths: Paths, tier: str, problems: dict[str, str]) -> Any:
    try:
        return open_readonly(paths.database_file(tier))
    except (apsw.Error, CodiQueueError, OSError) as exc:  # reported, not fatal: status must answer whatever one database is like
        problems[tier] = f"{type(exc).__name__}: {exc}"
        return None


def collect(paths: Paths, count_backlog: bool = True) -> dict[str, Any]:
    """Everything ``status`` reports. ``count_backlog`` walks the journal past the push cursor
    (proportional to the backlog): the consumer's own textfile writer leaves it out."""
    from ..config import ConfigError, load_config

    try:
        sync, config_error = load_config(paths).sync, None
    except ConfigError as exc:
        sync, config_error = None, str(exc)
    unreadable: dict[str, str] = {}
    conns = {t: _open(paths, t, unreadable) for t in (*TIERS, STATE_TIER)}
    try:
        out_of_reach: list[str] = []
        pending, oldest = _pending(paths, conns, out_of_reach)
        dead = owed = 0
        applied: dict[str, int] = {}
        for tier, conn in conns.items():
            try:
                if conn is None or not _has_table(conn, "cq_applied"):
                    continue
                dead += int(conn.execute("SELECT count(*) FROM cq_dead_letters").get)
                if _has_table(conn, "cq_summary_debt"):
                    owed += int(conn.execute("SELECT count(*) FROM cq_summary_debt").get)
                for table, n in conn.execute("SELECT tbl, n FROM cq_applied ORDER BY tbl"):
                    applied[table] = applied.get(table, 0) + int(n)
            except apsw.Error as exc:
                unreadable[tier] = f"{type(exc).__name__}: {exc}"
    finally:
        for conn in conns.values():
            if conn is not None:
                conn.close()
    pid = consumer_pid(paths)
    running = pid is not None
    metrics = read_metrics(paths.metrics) or {}
    live = running and metrics.get("pid") == pid
    spool = Spool(paths.spool, paths.archive)
    segments, archive_bytes = spool.archive_bytes()
    wal = 0
    for tier in (*TIERS, STATE_TIER):
        try:
            wal += os.path.getsize(paths.database(tier) + "-wal")
        except OSError:
            continue  # none, or a database that cannot be reached (named under tiers unavailable)
    return {
        "pending": pending,
        # queue directories that cannot be read now (a permission taken away): their operations
        # wait there, not counted in pending until they can be read
        "out_of_reach": out_of_reach,
        "lanes": spool.lanes(),  # the inboxes producers are writing (lane 0 is spool/inbox)
        "oldest_pending_age_s": None if oldest is None else round(max(0.0, time.time() - oldest), 3),
        "dead_letters": dead,
        # summary rows (days, sessions, tools) a batch could not update, until a later batch recomputes them
        "summaries_owed": owed,
        "consumer": {
            "running": running,
            "pid": pid if pid and pid > 0 else None,
            "started": metrics.get("started") if live else None,
            "last_batch_at": metrics.get("last_batch_at") if live else None,
        },
        "throughput_1m_ops_s": metrics.get("throughput_1m_ops_s", 0.0) if live else 0.0,
        "batches": metrics.get("batches", 0) if live else 0,
        "applied": applied,
        "wal_bytes": wal,
        "archive": {"segments": segments, "bytes": archive_bytes},
        "last_error": last_error(paths.error_log),
        "outside_vocabulary": metrics.get("outside_vocabulary") or {},  # since the last consumer start
        "tiers_unavailable": {**((metrics.get("unavailable_tiers") or {}) if live else {}), **unreadable},
        # directories the kernel will not watch for the running consumer (it polls them instead)
        "unwatched": (metrics.get("unwatched") or []) if live else [],
        # what producers could not enqueue or keep: a failed append, a hook payload refused, markers not kept
        "producer_errors": error_count(paths.error_log, ("producer", "hook", "git-hook")),
        # a config file the consumer refuses: it will not start until the file is fixed
        "config_error": config_error,
        "sync": _sync(paths, sync, count_backlog),
    }


def _sync(paths: Paths, sync: SyncConfig | None, count_backlog: bool = True) -> dict[str, Any] | None:
    """The team push: when it last succeeded, why it last failed, and the backlog per pushed tier,
    counted here from the journal (None: no [sync] and never pushed from this home)."""
    from ..errors import SyncError
    from .pushed import backlog, pushed_marks, read_progress

    progress = read_progress(paths)
    marks = progress.get("tiers")
    marks = marks if isinstance(marks, dict) else {}
    tiers = sync.push if sync is not None else tuple(sorted(marks))
    if not tiers and not progress:
        return None
    counts: dict[str, int | None] = {}
    for tier in tiers:
        if not count_backlog:
            counts[tier] = None
            continue
        try:
            counts[tier] = backlog(paths, tier, pushed_marks(marks.get(tier)))
        except (OSError, SyncError, apsw.Error):
            counts[tier] = None  # the journal moved under us or the mark is unreadable: not counted
    return {
        "last_push": progress.get("last_push"),
        "last_error": progress.get("last_error"),
        "backlog": counts,
        "pushed": {t: (marks.get(t) or {}).get("operations", 0) for t in tiers if isinstance(marks.get(t, {}), dict)},
    }


def render_human(report: dict[str, Any], home: str) -> str:
    consumer = report["consumer"]
    age = report["oldest_pending_age_s"]
    lines = [
        f"home             {home}",
        "consumer         " + (f"running, pid {consumer['pid']}" if consumer["running"] else "not running"),
        f"pending          {report['pending']}" + (f" (lag: oldest {age:.1f}s)" if age is not None else "")
        + (f"; {len(report['lanes'])} lanes in use" if len(report.get("lanes") or ()) > 1 else ""),
        f"throughput       {report['throughput_1m_ops_s']:.1f} ops/s over the last minute, "
        f"{report['batches']} batches since start",
        f"dead letters     {report['dead_letters']}",
        *([f"summaries owed   {report['summaries_owed']} rows, recomputed by the next batch or within a minute"]
          if report.get("summaries_owed") else []),
        f"producer errors  {report['producer_errors']}",
        f"wal              {report['wal_bytes']} bytes",
        f"archive          {report['archive']['segments']} segments, {report['archive']['bytes']} bytes",
    ]
    lines += [f"out of reach     {what}: its operations wait there, not counted above"
              for what in report.get("out_of_reach") or ()]
    lines += [f"applied          {t}: {n}" for t, n in sorted(report["applied"].items())]
    lines += [f"tier unavailable {t}: {why}" for t, why in sorted(report["tiers_unavailable"].items())]
    lines += [f"not watched      {what} (polled every {UNWATCHED_POLL_S} s)" for what in report.get("unwatched") or ()]
    lines += [f"kept as given    {k}: {n} values outside our vocabulary or scale"
              for k, n in sorted(report["outside_vocabulary"].items())]
    sync = report.get("sync")
    if sync:
        ago = f"{max(0.0, time.time() - sync['last_push']):.0f}s ago" if sync["last_push"] else "never"
        backlog = ", ".join(f"{t} {n}" for t, n in sync["backlog"].items() if n is not None) or "not counted"
        lines.append(f"team sync        last push {ago}; backlog {backlog}"
                     + (f"; last error: {sync['last_error']}" if sync["last_error"] else ""))
    if report.get("config_error"):
        lines.append(f"config refused   {report['config_error']} (the consumer will not start until it is fixed)")
    err = report["last_error"]
    lines.append("last error       " + (f"{err['message']}{_ago(err.get('ts'))}" if err else "none"))
    return "\n".join(lines)


def _ago(ts: Any) -> str:
    """When an error was recorded: the last error stays the last one after its cause is gone."""
    if type(ts) not in (int, float) or not 0 <= ts <= time.time() + 60:
        return ""  # a time the error log does not hold as its writer does: nothing to say
    seconds = max(0, int(time.time() - ts))
    age = f"{seconds}s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"
    return f" ({age} ago, {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))})"


TEXTFILE_START = b"# HELP codi_queue_"  # how every file ``prometheus_text`` makes begins


def write_textfile(path: str, text: str, paths: Paths) -> None:
    """Atomically replace a Prometheus textfile (the collector must never read half of one).

    Through a fresh private temporary name (never a fixed one another user
    could plant a link at), 0644 whatever the umask: the collector runs as
    another user. The path is the user's to name, so what it names is looked
    at first: a link is followed to the file it names (a link to nothing is
    refused); nothing in codi-queue's own directories; no existing file but
    one this function wrote (``--prometheus`` pointed at a database had
    replaced it with the metrics). OSError otherwise, saying why.
    """
    from ..fsutil import NOFOLLOW, write_atomic

    target = os.path.realpath(path)
    own = paths.holding(target)
    if own is not None:
        raise OSError(errno.EINVAL, f"lies in codi-queue's own {own}: not written there", path)
    for tier, (db, _) in paths.databases().items():  # an adopted database lies outside the home
        if target in {os.path.realpath(db + suffix) for suffix in ("", "-wal", "-shm", "-journal")}:
            raise OSError(errno.EINVAL, f"is the {tier} database's: not written there", path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OSError(errno.ENOENT, "a link to nothing: not written through", path) from None
    else:
        if stat.S_ISREG(st.st_mode):  # anything else: write_atomic says what it is, and leaves it
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
            try:
                first = os.read(fd, len(TEXTFILE_START))
            finally:
                os.close(fd)
            if first and first != TEXTFILE_START:
                raise OSError(errno.EEXIST, "exists and is not a Prometheus file codi-queue wrote: left as it is "
                                            "(name another file, or remove it)", path)
    write_atomic(target, text.encode("utf-8"), mode=0o644)


def prometheus_text(report: dict[str, Any]) -> str:
    """The report in the Prometheus text exposition format (for node_exporter's textfile collector)."""
    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
        out = [f"# HELP codi_queue_{name} {help_text}", f"# TYPE codi_queue_{name} {kind}"]
        out += [f"codi_queue_{name}{labels} {value}" for labels, value in samples]
        return out

    age = report["oldest_pending_age_s"]
    lines = (
        metric("pending_operations", "gauge", "Operations acknowledged but not yet applied.", [("", report["pending"])])
        + metric("oldest_pending_age_seconds", "gauge", "Age of the oldest pending operation.", [("", age or 0)])
        + metric("dead_letters", "gauge", "Operations in the dead-letter store.", [("", report["dead_letters"])])
        + metric("consumer_up", "gauge", "1 if the consumer holds its lock.", [("", int(report["consumer"]["running"]))])
        + metric("config_refused", "gauge", "1 if the config file is refused (the consumer will not start).",
                 [("", int(bool(report.get("config_error"))))])
        + metric("out_of_reach_directories", "gauge",
                 "Queue directories that cannot be read now (their operations wait, not counted as pending).",
                 [("", len(report.get("out_of_reach") or ()))])
        + metric("unwatched_directories", "gauge", "Directories the kernel will not watch for the consumer (polled).",
                 [("", len(report.get("unwatched") or ()))])
        + metric("throughput_ops_per_second", "gauge", "Operations applied per second over the last minute.",
                 [("", report["throughput_1m_ops_s"])])
        + metric("wal_bytes", "gauge", "Total size of the databases' write-ahead logs.", [("", report["wal_bytes"])])
        + metric("archive_bytes", "gauge", "Size of the archived journal.", [("", report["archive"]["bytes"])])
        + metric("producer_errors", "counter", "Faults and refused payloads recorded by producers and hooks.",
                 [("", report["producer_errors"])])
        + metric("applied_rows", "counter", "Rows written per table.",
                 [(f'{{table="{t}"}}', n) for t, n in sorted(report["applied"].items())])
    )
    return "\n".join(lines) + "\n"


def _has_table(conn: Any, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _cursors(conns: dict[str, Any], seg: str) -> dict[str, int]:
    """Each tier's applied position in this queue directory (0: nothing applied there yet)."""
    cursors: dict[str, int] = {}
    for tier, conn in conns.items():
        cursors[tier] = 0
        try:
            if conn is not None and _has_table(conn, "cq_cursor"):
                row = conn.execute("SELECT pos FROM cq_cursor WHERE segment = ?", (seg,)).fetchone()
                if row:
                    cursors[tier] = checked_cursor(row[0]) or 0
        except apsw.Error:
            continue  # reported under tiers_unavailable
    return cursors


def _pending(paths: Paths, conns: dict[str, Any], out_of_reach: list[str]) -> tuple[int, float | None]:
    """Operations acknowledged but not applied, and the enqueue time of the oldest.

    Past every tier's cursor a record counts whole (its head says how many); between the
    lowest cursor and the highest, only its operations whose tier has not applied it: a tier
    the consumer cannot write (a newer schema, a FIFO in its place) holds its operations
    in the spool while the others go on, and they are pending, not done.
    """
    count = 0
    oldest: float | None = None
    now = time.time()
    spool = Spool(paths.spool, paths.archive)
    for lane in spool.lanes():  # an inbox whose id cannot be read is listed by no pass below
        try:
            os.scandir(lane_inbox(spool.root, lane)).close()
        except OSError as exc:
            if cannot_read_now(exc):
                out_of_reach.append(_out_of_reach(lane_inbox(spool.root, lane), exc))
    for qd in spool.queue_dirs():
        cursors = _cursors(conns, qd.id)
        low, high = min(cursors.values(), default=0), max(cursors.values(), default=0)
        try:
            reader = SegmentReader(qd.path, live=qd.live, trust_info=True)  # all that info names
        except OSError as exc:
            if cannot_read_now(exc):
                out_of_reach.append(_out_of_reach(qd.path, exc))
            continue  # else claimed, archived or quarantined while we looked
        with reader:
            try:
                for entry in reader.entries(low):
                    if entry.payload is None:
                        continue
                    json = entry.kind == KIND_JSON_RECORD
                    try:
                        head = (_decode_json_head if json else _decode_head)(entry.payload)
                        n = head.n if entry.end > high else _unapplied(entry.payload, json, entry.end, cursors)
                    except (msgspec.DecodeError, RecursionError):
                        continue  # damaged records are the consumer's to report
                    count += n
                    # Each lane's inbox is in order; lanes are not. A time no producer writes (NaN, before
                    # 1970, ahead of now: a record written by hand) dates nothing: it made the lag read 0.
                    if n and 0 <= head.ts <= now and (oldest is None or head.ts < oldest):
                        oldest = head.ts
            except OSError as exc:
                if not cannot_read_now(exc):
                    raise
                out_of_reach.append(_out_of_reach(qd.path, exc))
    return count, oldest


def _out_of_reach(path: str, exc: OSError) -> str:
    name = f" ({exc.filename})" if isinstance(exc.filename, str) and exc.filename != path else ""
    return f"{path}: {exc.strerror or exc}{name}"


_TIER_OF = {name: spec.tier for name, spec in OPS.items()}
_decode_names = msgspec.msgpack.Decoder(RecordOps).decode
_decode_json_names = msgspec.json.Decoder(RecordOps).decode


def _unapplied(payload: bytes, json: bool, end: int, cursors: dict[str, int]) -> int:
    """How many of this record's operations a tier still owes (unknown ones go to the state tier)."""
    ops = (_decode_json_names if json else _decode_names)(payload).ops
    return sum(1 for op in ops if end > cursors.get(_TIER_OF.get(op.op, STATE_TIER), 0))
