"""Connection setup as small named steps, migrations, and the one transaction idiom.

The order matters: the busy timeout is set before WAL is switched on (the
switch fails at once under concurrency otherwise), and writes take the lock
at ``BEGIN IMMEDIATE`` so contention shows there rather than mid-batch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import apsw

from ..errors import SchemaTooNew
from ..fsutil import FILE_MODE, ensure_private_dir, exists
from ..schemas.migrations import MIGRATIONS, latest_version

__all__ = [
    "open_tier",
    "checked_cursor",
    "open_readonly",
    "rows_not_ours",
    "StoredByOthers",
    "stored_by_others",
    "immediate",
    "migrate",
    "schema_version",
    "BUSY_TIMEOUT_MS",
]

BUSY_TIMEOUT_MS = 10_000


def set_busy_timeout(conn: apsw.Connection, ms: int = BUSY_TIMEOUT_MS) -> None:
    conn.set_busy_timeout(ms)


def enable_wal(conn: apsw.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").get
    if str(mode).lower() != "wal":
        raise apsw.Error(f"could not switch {conn.filename} to WAL (still {mode})")


def durable_commits(conn: apsw.Connection) -> None:
    # FULL syncs the WAL at every commit. NORMAL could lose the last commit on
    # power loss after its segment was archived: a lost row, not just a delay.
    conn.execute("PRAGMA synchronous = FULL")


def bounded_wal(conn: apsw.Connection) -> None:
    # Checkpoints stall the commit that triggers them; 4000 pages (16 MB) makes
    # them rare enough to stay out of the lag p99 (the WAL is still bounded:
    # see the consumer's TRUNCATE checkpoint past 32 MiB).
    conn.execute("PRAGMA wal_autocheckpoint = 4000")
    conn.execute("PRAGMA journal_size_limit = 67108864")


def schema_version(conn: apsw.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").get)


def migrate(conn: apsw.Connection, tier: str) -> int:
    """Apply the tier's pending migrations; refuse a database newer than this code.

    Migrations meet whatever is there (``adopt``): an existing table of the
    same name is adopted, never created over, dropped or rewritten.
    """
    target = latest_version(tier)
    with immediate(conn):
        current = schema_version(conn)
        if current > target:
            raise SchemaTooNew(tier, conn.filename, current, target)
        for version in range(current + 1, target + 1):
            for step in MIGRATIONS[tier][version - 1]:
                if isinstance(step, str):
                    for statement in split_statements(step):
                        adopt(conn, statement)
                else:
                    step(conn)
            conn.execute(f"PRAGMA user_version = {int(version)}")
    return target


_CREATE = re.compile(
    r"\s*CREATE\s+(?:UNIQUE\s+)?(?:VIRTUAL\s+)?(TABLE|INDEX|TRIGGER|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?",
    re.I,
)


def split_statements(sql: str) -> list[str]:
    """The complete statements of a migration script, in order (triggers keep their inner ``;``)."""
    out: list[str] = []
    buf = ""
    for piece in sql.split(";"):
        buf += piece + ";"
        if apsw.complete(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        out.append(buf.strip())
    return out


def adopt(conn: apsw.Connection, statement: str) -> None:
    """Run one migration statement so that it meets whatever the database already has.

    A ``CREATE TABLE`` whose table exists adopts it instead: the columns it
    lacks are added (a column any of whose names, ``schemas.columns``, the
    table already has is not), its unique constraints become unique indexes,
    and no row is touched. Any other ``CREATE`` whose name exists is skipped.
    """
    m = _CREATE.match(statement)
    if m is None:
        conn.execute(statement)
        return
    kind, name = m.group(1).upper(), m.group(2)
    if not _exists(conn, name):
        conn.execute(statement)
        return
    if kind == "TABLE" and "VIRTUAL" not in statement[: m.end()].upper():
        _adopt_table(conn, name, statement)


def _exists(conn: apsw.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ? COLLATE NOCASE", (name,)).fetchone() is not None


def _adopt_table(conn: apsw.Connection, table: str, statement: str) -> None:
    from ..schemas.columns import names_of

    scratch = apsw.Connection(":memory:")
    try:
        scratch.execute(statement)
        wanted = [(r[1], r[2], r[4]) for r in scratch.execute(f'PRAGMA table_info("{table}")')]
        uniques: list[tuple[str, ...]] = []
        for row in scratch.execute(f'PRAGMA index_list("{table}")').fetchall():
            if row[2] and row[3] == "u":  # unique, from a UNIQUE constraint
                uniques.append(tuple(str(r[2]) for r in scratch.execute(f'PRAGMA index_info("{row[1]}")')))
    finally:
        scratch.close()
    have = {r[1].lower() for r in conn.execute(f'PRAGMA table_info("{table}")')}
    for column, decl, default in wanted:
        if any(n.lower() in have for n in names_of(table, column)):
            continue
        extra = f" DEFAULT {default}" if default is not None else ""
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {decl}{extra}')
        have.add(column.lower())
    for unique in uniques:
        name = f"{table}_{'_'.join(unique)}_key"
        cols = ", ".join(f'"{c}"' for c in unique)
        conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS "{name}" ON "{table}" ({cols})')


def open_tier(path: str, tier: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> apsw.Connection:
    """A writer connection: created 0600, busy timeout, WAL, FULL sync, migrated."""
    ensure_private_dir(os.path.dirname(path))
    if not exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    conn = apsw.Connection(path)
    try:
        set_busy_timeout(conn, busy_timeout_ms)
        enable_wal(conn)
        durable_commits(conn)
        bounded_wal(conn)
        migrate(conn, tier)
    except BaseException:
        conn.close()
        raise
    return conn


def open_readonly(path: str) -> apsw.Connection | None:
    """A reader connection for status and tools, or None if the database does not exist yet.

    A WAL reader needs to create the ``-shm`` file, which a full disk refuses:
    then, when no WAL content is pending (so the main file is the whole
    database), the file is read as immutable, and ``status`` still answers
    exactly when the disk is full, which is when it is needed.
    """
    if not exists(path):
        return None
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    set_busy_timeout(conn)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").get
    except (apsw.IOError, apsw.CantOpenError, apsw.FullError):
        conn.close()
        try:
            pending_wal = os.path.getsize(path + "-wal") > 0
        except FileNotFoundError:
            pending_wal = False
        if pending_wal:
            raise
        from urllib.parse import quote

        conn = apsw.Connection(f"file:{quote(os.path.abspath(path))}?immutable=1",
                               flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    return conn


@contextmanager
def immediate(conn: apsw.Connection) -> Iterator[apsw.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error (or a signal's exit).

    Inside it, ``with conn:`` opens a savepoint: that is how one operation is
    undone without touching the rest of its batch.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if not conn.get_autocommit():
            conn.execute("ROLLBACK")
        raise


def scalar(conn: apsw.Connection, sql: str, bindings: Any = ()) -> Any:
    row = conn.execute(sql, bindings).fetchone()
    return None if row is None else row[0]


CURSOR_MAX = (1 << 63) - 1


def checked_cursor(value: object) -> int | None:
    """A stored cursor position, or None if it is not one (text, a negative or fractional number:
    only an outside write puts one there). Every reader of cq_cursor goes through this: one
    taken as it came had made ``run`` and ``status`` end in an internal error."""
    return value if type(value) is int and 0 <= value <= CURSOR_MAX else None


def rows_not_ours(conn: apsw.Connection, table: str) -> tuple[int, int | None, int | None]:
    """How many rows of ``table`` (a name from the schema definitions) codi-queue did not write (no
    operation id: the platform's own tools wrote them into a database we adopted), and the
    oldest and newest of their times as unix seconds (their tools stored seconds, milliseconds
    or ISO text alike); (0, None, None) when there are none or no such table."""
    columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
    if not columns:
        return 0, None, None
    where = "op_id IS NULL" if "op_id" in columns else "1"
    n = int(conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE {where}').get)
    if not n or "timestamp" not in columns:
        return n, None, None
    from ..timestamps import normalize_timestamp

    times: list[int] = []
    for kinds in ("'integer', 'real'", "'text'"):
        row = conn.execute(f'SELECT MIN(timestamp), MAX(timestamp) FROM "{table}" '
                           f"WHERE {where} AND typeof(timestamp) IN ({kinds})").fetchone()
        for value in row or ():
            try:
                times.append(normalize_timestamp(value))
            except ValueError:
                continue  # a value no clock wrote: it dates nothing
    return n, min(times, default=None), max(times, default=None)


class StoredByOthers(NamedTuple):
    """Rows of an operation's table that codi-queue did not write (see ``stored_by_others``)."""

    table: str
    database: str
    rows: int
    oldest: int | None
    newest: int | None

    def describe(self) -> str:
        from ..timestamps import iso

        span = f" from {iso(self.oldest)} to {iso(self.newest)}" if self.oldest is not None and \
            self.newest is not None else ""
        return (f"{self.table} in {self.database} already holds {self.rows} rows codi-queue did not write{span}: "
                "the platform's own tools may have stored these lines there already (its backfill, or hooks that "
                "write both the file and the table, which store each new line there too while they run), and "
                "enqueueing them would store them again")


def stored_by_others(database: str, table: str) -> StoredByOthers | None:
    """What the platform's own tools keep in ``table`` of ``database`` (an adopted claude.db), or
    None. Its backfill filled those tables from the legacy files, and its post-tool hook still
    writes each event to both the file and the table, with no operation id to tell a line
    already stored: a legacy file read into such a table would store it again."""
    conn = open_readonly(database)
    if conn is None:
        return None
    try:
        n, oldest, newest = rows_not_ours(conn, table)
    finally:
        conn.close()
    return StoredByOthers(table, database, n, oldest, newest) if n else None
