"""``codi-queue backup`` and ``restore``: consistent online snapshots of every tier database.

A snapshot is taken with SQLite's backup API in a single step, under one read
transaction, so it is consistent while the consumer keeps writing (WAL lets
both proceed). Each copy is integrity-checked. ``restore`` needs the consumer
stopped (it takes its lock), checks the snapshot first, keeps the current
files aside, and then re-sends what the archive holds from shortly before the
snapshot, so the restored databases catch up (op ids make the overlap
harmless).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import apsw
import msgspec

from ..consumer.db import set_busy_timeout
from ..consumer.lock import ConsumerLock
from ..schemas.registry import ALL_TIERS
from ..errors import CodiQueueError
from ..fsutil import FILE_MODE, ensure_private_dir, exists, fsync_dir, is_dir, lexists, read_file, write_atomic
from ..paths import DATABASE_SIDECARS, Paths, sqlite_path

__all__ = ["BackupResult", "backup", "restore", "copy_database", "integrity", "CATCH_UP_MARGIN_S"]

CATCH_UP_MARGIN_S = 3600.0  # operations enqueued this long before a snapshot may have been applied after it
MANIFEST = "manifest.json"


class SnapshotError(CodiQueueError):
    pass


class SnapshotTier(msgspec.Struct):
    """One database in a snapshot, as ``manifest.json`` lists it."""

    file: str  # a name inside the snapshot directory
    user_version: int | None = None
    integrity: str | None = None
    bytes: int | None = None


class Manifest(msgspec.Struct):
    """``manifest.json``: what ``backup`` writes and ``restore`` reads, checked whole before anything is touched."""

    created: float  # unix seconds: the catch-up re-sends the archive from shortly before it
    tiers: dict[str, SnapshotTier]
    home: str | None = None


@dataclass
class BackupResult:
    directory: str
    tiers: dict[str, SnapshotTier] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def integrity(path: str) -> str:
    """``"ok"``, or what is wrong (a file too damaged to check says so too)."""
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        set_busy_timeout(conn)
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    except apsw.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    return "ok" if rows == ["ok"] else "; ".join(str(r) for r in rows[:5])


def copy_database(src_path: str, dest_path: str) -> int:
    """Copy with the backup API in one step (one consistent read); the destination's user_version."""
    if exists(dest_path):
        raise FileExistsError(dest_path)
    os.close(os.open(dest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    src = apsw.Connection(src_path, flags=apsw.SQLITE_OPEN_READONLY)
    dest = apsw.Connection(dest_path)
    try:
        set_busy_timeout(src)
        src.execute("SELECT count(*) FROM sqlite_master").get  # the source's own error, not the backup API's "not an error"
        with dest.backup("main", src, "main") as step:
            step.step(-1)
        dest.execute("PRAGMA journal_mode = DELETE")  # a snapshot is one self-contained file
        return int(dest.execute("PRAGMA user_version").get)
    finally:
        dest.close()
        src.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, apsw.Error) else str(exc)


def unique_path(base: str) -> str:
    """``base``, or ``base.2``, ``base.3``…: the first name nothing stands at (two runs in one second)."""
    path, n = base, 1
    while lexists(path) or lexists(path + "-wal"):
        n += 1
        path = f"{base}.{n}"
    return path


def backup(paths: Paths, into: str | None = None) -> BackupResult:
    if into is not None:
        paths.output_dir(into, "backup --into")
    if into is not None and lexists(into) and (not is_dir(into) or os.listdir(into)):
        raise SnapshotError(f"{into} already exists and is not an empty directory: back up into a new one")
    if not any(lexists(paths.database(t)) for t in ALL_TIERS):
        raise SnapshotError(f"no database in {paths.home} yet (nothing has been applied there): nothing to back up")
    directory = into or unique_path(os.path.join(paths.home, "backups", time.strftime("%Y%m%d-%H%M%S")))
    ensure_private_dir(directory, under=None if into else paths.home)
    result = BackupResult(directory)
    for tier in ALL_TIERS:
        # One tier that cannot be copied (not a database, a FIFO in its place) is said and
        # left out; the others are still backed up: a backup is wanted most when something broke.
        dest = ""
        try:
            src = paths.database_file(tier)
            if not exists(src):
                continue
            dest = unique_path(os.path.join(directory, os.path.basename(src)))  # two tiers may share a name
            version = copy_database(src, dest)
        except (apsw.Error, CodiQueueError, OSError) as exc:
            result.problems.append(f"{tier}: not backed up: {_why(exc)}")
            if dest and lexists(dest):
                os.unlink(dest)
            continue
        check = integrity(dest)
        if check != "ok":
            result.problems.append(f"{tier}: the copy failed its integrity check: {check}")
        result.tiers[tier] = SnapshotTier(os.path.basename(dest), version, check, os.path.getsize(dest))
    manifest = Manifest(time.time(), result.tiers, paths.home)
    write_atomic(os.path.join(directory, MANIFEST), msgspec.json.format(msgspec.json.encode(manifest), indent=2))
    return result


def read_manifest(snapshot: str) -> Manifest:
    """The snapshot's manifest, or ``SnapshotError`` saying which field is wrong and why: a
    snapshot may come from anywhere, and a file named outside it would be put in as a tier."""
    where = os.path.join(snapshot, MANIFEST)
    try:
        manifest = msgspec.json.decode(read_file(where, limit=1 << 20), type=Manifest)
    except (OSError, msgspec.DecodeError) as exc:
        why = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        raise SnapshotError(f"{snapshot} is not a codi-queue snapshot ({MANIFEST}: {why})") from None
    if not math.isfinite(manifest.created):
        raise SnapshotError(f"{where}: `created` must be a time in unix seconds, not {manifest.created}")
    for tier, entry in manifest.tiers.items():
        if tier not in ALL_TIERS:
            raise SnapshotError(f"{where}: unknown tier {tier!r} (a snapshot holds {', '.join(ALL_TIERS)})")
        name = entry.file
        if name in ("", os.curdir, os.pardir) or os.path.basename(name) != name or "\0" in name:
            raise SnapshotError(f"{where}: tiers.{tier}.file {name!r} is not a file name inside the snapshot")
    return manifest


def _snapshot_files_are_plain(snapshot: str, name: str) -> None:
    """A tier's file in a snapshot, and any -wal, -shm or -journal beside it, must be regular
    files there: SQLite would wait for ever on a FIFO, and a link would restore whatever it
    points at."""
    import stat

    for path in (os.path.join(snapshot, name), *(os.path.join(snapshot, name + s) for s in DATABASE_SIDECARS)):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if path == os.path.join(snapshot, name):
                raise SnapshotError(f"{path}: the snapshot's manifest names it, but it is not there") from None
            continue
        if not stat.S_ISREG(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise SnapshotError(f"{path}: {what}; a snapshot holds plain files only")


def restore(paths: Paths, snapshot: str, tiers: tuple[str, ...] | None = None) -> tuple[dict[str, str], float]:
    """Put a snapshot back; (tier → where the replaced file went, the snapshot's time)."""
    manifest = read_manifest(sqlite_path(snapshot, "restore"))
    if not manifest.tiers:
        raise SnapshotError(f"{snapshot} holds no database: nothing to restore")
    missing = [t for t in tiers or () if t not in manifest.tiers]
    if missing:
        raise SnapshotError(f"{snapshot} holds no {', '.join(missing)} database (it holds: "
                            f"{', '.join(manifest.tiers) or 'none'})")
    chosen = [t for t in manifest.tiers if tiers is None or t in tiers]
    for tier in chosen:  # refuse before touching anything
        _snapshot_files_are_plain(snapshot, manifest.tiers[tier].file)
        check = integrity(os.path.join(snapshot, manifest.tiers[tier].file))
        if check != "ok":
            raise SnapshotError(f"snapshot {tier} database fails its integrity check: {check}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved: dict[str, str] = {}
    with ConsumerLock(paths):
        ensure_private_dir(paths.db_dir, under=paths.home)
        for tier in chosen:
            # An adopted database outside the home may be the user's link (claude.db on another
            # volume): the file it names is restored, and the link stays, as SQLite opens it. Under
            # the home a link is refused before this (database_file), so realpath changes nothing.
            live = os.path.realpath(paths.database_file(tier))
            staged = unique_path(f"{live}.restoring-{stamp}")
            copy_database(os.path.join(snapshot, manifest.tiers[tier].file), staged)
            if exists(live):
                aside = unique_path(f"{live}.before-restore-{stamp}")  # never over a file an earlier restore kept
                for suffix in ("", "-wal", "-shm"):
                    if exists(live + suffix):
                        os.replace(live + suffix, aside + suffix)
                moved[tier] = aside
            os.replace(staged, live)
        for folder in {os.path.dirname(os.path.realpath(paths.database_file(t))) for t in chosen}:  # adopted too
            fsync_dir(folder)
    return moved, manifest.created
