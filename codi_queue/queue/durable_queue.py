"""persist-queue's file ``Queue``, made durable and cheap to import.

Two things differ from using ``persistqueue.Queue`` directly:

* ``import persistqueue`` runs the package ``__init__``, which imports the
  asyncio and sqlite3 backends we never use (tens of milliseconds on every
  hook call). We load only ``persistqueue.queue`` by giving the import system
  the package's spec without executing its ``__init__``, then step aside so a
  later plain ``import persistqueue`` still gets the real package.
* ``Queue`` never fsyncs on put and renames ``info`` without syncing it
  (persist-queue #180). ``DurableQueue._saveinfo`` writes the new ``info``
  and hands the caller the data, ``info`` and directory descriptors to fsync
  before it acknowledges (``pending_syncs``). ``_openchunk`` creates chunk
  files 0600, and every file is opened without following a symbolic link.
* Records are framed by a ``frame.FrameSerializer`` bound to the queue's
  ``info``, which carries the directory's running operation count
  (``info["ops"]``) that every frame header records.

Both overrides rely on persist-queue 1.1 internals; pyproject pins the minor
version, and ``tests/test_spool.py`` checks that persist-queue's own Queue still reads
what we write.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import importlib.util
import os
import struct
import sys
import threading
import zlib

TYPE_CHECKING = False  # typing costs milliseconds on every hook call; mypy reads this as True
if TYPE_CHECKING:
    from typing import IO, Any

from ..errors import CorruptRecord
from .. import fsutil
from ..fsutil import FILE_MODE, open_regular, write_all
from . import frame

__all__ = ["durable_queue_class", "open_queue", "CHUNK_RECORDS", "read_info", "checked_info", "recover_head", "NOFOLLOW",
           "POS_SHIFT", "ACKED_FILE", "chunk_files", "check_head", "publish_acked", "publish_written", "read_written", "acknowledge", "read_acked",
           "read_acked_ops", "read_acked_state", "cannot_read_now"]

POS_SHIFT = 40  # a position is chunk << 40 | byte offset (as in segment.py)
ACKED_FILE = "acked"  # the acknowledged position producers publish after their sync
_UNKNOWN_OPS = b"\xff" * 8  # an acknowledged position published without its operation count
# acked: the acknowledged (position, count), then publish_written's six numbers and their CRC-32
# (read outside the spool lock by a leader: a torn read must not pass for a line).
_WRITTEN = struct.Struct("<6q")
_WRITTEN_END = 16 + _WRITTEN.size + 8
_OFFSET_MASK = (1 << POS_SHIFT) - 1
# Records between rewrites of ``info`` (a hint readers scan past; see _saveinfo), and the record
# size from which it is rewritten after every record: readers scan at most 64 records under 64 KiB.
INFO_EVERY = 64
INFO_RECORD_BYTES = 64 * 1024
# Records per chunk file. The inbox is usually claimed long before a chunk
# fills; when the consumer is down for days this keeps the file count sane.
CHUNK_RECORDS = 1000

_durable: type | None = None
# Nothing under the home is ever opened through a symbolic link (a planted
# link would make us write into, or truncate, a file of the attacker's choice).
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


def _queue_module() -> Any:
    if "persistqueue" in sys.modules:  # the real package is loaded already: use it
        return importlib.import_module("persistqueue.queue")
    spec = importlib.util.find_spec("persistqueue")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("persist-queue is not installed")
    before = set(sys.modules)
    sys.modules["persistqueue"] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    # queue.py imports the pickle serializer only as its default argument. Our
    # copy gets a stand-in that refuses, so no Queue of ours can ever fall back
    # to pickle (and the hook path skips importing pickle).
    try:
        serializers = importlib.import_module("persistqueue.serializers")  # an empty package
        refusing = sys.modules["persistqueue.serializers.pickle"] = _refusing_serializer()
        setattr(serializers, "pickle", refusing)
        return _exec_deferring("persistqueue.queue")
    finally:
        # Keep this copy private: a later plain ``import persistqueue`` must
        # run the real __init__ from scratch, not find half a package.
        for name in set(sys.modules) - before:
            if name == "persistqueue" or name.startswith("persistqueue."):
                del sys.modules[name]


# What persistqueue.queue imports but a put never uses: ``logging`` for a debug line per
# Queue (dropped unless logging is configured), ``tempfile`` for a temporary file when no
# ``tempdir`` is given (we always give one), and ``typing`` for its annotations only.
# Together a third of a hook's start-up.
_DEFERRED = frozenset({"logging", "tempfile"})
_ANNOTATIONS_ONLY = "typing"


def _exec_deferring(name: str) -> Any:
    """Run module ``name`` (its parent package in sys.modules) with the imports in ``_DEFERRED``
    bound to stand-ins that import the real module on first use. Its own builtins carry the
    deferring ``__import__``: nothing in sys.modules changes for anyone else, and threads
    importing ``logging`` meanwhile get the real one."""
    import builtins

    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"{name} is not installed")
    module = importlib.util.module_from_spec(spec)
    real_import = builtins.__import__

    def deferring_import(mod: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level == 0 and mod not in sys.modules:
            if not fromlist and mod in _DEFERRED:
                return _Deferred(mod)
            if mod == _ANNOTATIONS_ONLY:
                return _AnnotationNames()
        return real_import(mod, globals, locals, fromlist, level)

    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": deferring_import}
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Deferred:
    """A module imported on first attribute use; ``getLogger`` answers with a ``_QuietLogger``."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if self._name == "logging" and attr == "getLogger":
            return _QuietLogger
        return getattr(importlib.import_module(self._name), attr)


class _AnnotationNames:
    """``from typing import Any, Optional, ...`` for a module that uses them in annotations only:
    each name is a placeholder that takes any subscript. (Its annotations are never read.)"""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _AnnotationPlaceholder(attr)


class _AnnotationPlaceholder:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getitem__(self, _args: Any) -> _AnnotationPlaceholder:
        return self

    def __repr__(self) -> str:
        return f"typing.{self.name} (not loaded)"


class _QuietLogger:
    """A logger that imports ``logging`` only for a record that could go anywhere: while logging
    was never imported no handler or level can be set, and debug and info records are dropped by
    the default WARNING level, exactly as the real logger would drop them."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _real(self) -> Any:
        return importlib.import_module("logging").getLogger(self._name)

    def debug(self, *args: Any, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._real().debug(*args, **kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        if "logging" in sys.modules:
            self._real().info(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._real(), attr)


def _refusing_serializer() -> Any:
    import types

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise CorruptRecord("pickle is disabled in codi-queue: pass serializer=codi_queue.queue.frame.FrameSerializer()")

    mod = types.ModuleType("persistqueue.serializers.pickle", "codi-queue: pickle refused")
    mod.dump = mod.load = mod.dumps = mod.loads = refuse  # type: ignore[attr-defined]
    return mod


def durable_queue_class() -> type:
    """The ``DurableQueue`` class (built on first use so importing us stays cheap)."""
    global _durable
    if _durable is not None:
        return _durable
    base = _queue_module().Queue

    class DurableQueue(base):  # type: ignore[misc, valid-type]
        def _openchunk(self, number: int, mode: str = "rb") -> IO[bytes]:
            path = self._qfile(number)
            if mode == "rb":
                return os.fdopen(os.open(path, os.O_RDONLY | NOFOLLOW), "rb")
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | NOFOLLOW)
            except FileNotFoundError:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | NOFOLLOW, FILE_MODE)
                self._dir_dirty = True  # a new name in the directory: synced before the acknowledgement
            else:
                if not self._vouched(number):
                    self._dir_dirty = True
            return os.fdopen(fd, mode)

        def _vouched(self, number: int) -> bool:
            """Whether chunk ``number``'s name is known to be on disk: something in it (or past it)
            was acknowledged. Its creator syncs the directory before acknowledging, but a creator
            killed in between leaves a file whose name a power loss can take, with whatever is
            appended and acknowledged in it later. So an append into an existing chunk nothing was
            acknowledged in syncs the directory first, as for a new one; then every acknowledged
            position lies in a chunk whose name was synced (tests/reliability/test_crash_states.py)."""
            acked = read_acked(self.dir_fd())
            return acked is not None and acked >> POS_SHIFT >= number

        def _loadinfo(self) -> dict[str, Any]:
            try:
                dfd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
                try:
                    saved = read_info(self.path, dfd)
                    info = recover_head(saved, dfd)  # info is a hint: see recover_head
                    _check_acknowledged(info, dfd)
                finally:
                    os.close(dfd)
                self._saved_chunk: int | None = int(saved["head"][0])
                # What info on disk names: info is rewritten once it trails by
                # INFO_EVERY records, however many processes took turns appending.
                self._saved_size = int(saved["size"])
            except FileNotFoundError:
                info = {"chunksize": self.chunksize, "size": 0, "tail": [0, 0, 0], "head": [0, 0, 0], "ops": 0}
                self._dir_dirty = True  # info and the first chunk are new names
            self.serializer.info = info  # frames record the running operation count kept here
            return info

        def _saveinfo(self) -> None:
            # Data is written under the spool lock and synced after it is released
            # (pending_syncs). ``info`` is a hint (recover_head scans past it), so it
            # is rewritten only when it must name a new chunk, every INFO_EVERY
            # records, and after any record of INFO_RECORD_BYTES or more, to keep
            # readers' scans short (at most 4 MiB): a rename over it costs as much as
            # the data sync on ext4 here, and a small record far less.
            self.headf.flush()
            chunk = int(self.info["head"][0])
            unsaved = int(self.info["size"]) - getattr(self, "_saved_size", 0)
            if getattr(self, "_saved_chunk", None) == chunk and unsaved < INFO_EVERY and \
                    self.serializer.last_frame_bytes < INFO_RECORD_BYTES:
                return
            self._write_info()

        def _write_info(self) -> None:
            chunk = int(self.info["head"][0])
            info = os.path.join(self.path, "info")
            tmp = info + ".tmp"  # fixed name: only the holder of the spool lock writes here
            data = frame.encode_frame(frame.encode_meta(self.info), frame.KIND_META)
            fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                write_all(fd, data)
                os.replace(tmp, info)
            finally:
                os.close(fd)  # never synced: a hint that recovery checks (recover_head)
            self._saved_chunk, self._saved_size = chunk, int(self.info["size"])
            self._clear_tail_file()

        def dir_fd(self) -> int:
            if getattr(self, "_dir_fd", -1) < 0:
                self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
                st = os.fstat(self._dir_fd)
                self._dir_identity = (st.st_dev, st.st_ino)
            return int(self._dir_fd)

        def dir_identity(self) -> tuple[int, int]:
            """(device, inode) of the directory this queue holds open, taken when it was opened (the
            same object for as long as we hold it); (-1, -1), which names nothing, before that."""
            return getattr(self, "_dir_identity", (-1, -1))

        def acked_fd(self) -> int:
            """This directory's ``acked`` file, opened once per queue (created 0600, never through a link)."""
            if getattr(self, "_acked_fd", -1) < 0:
                self._acked_fd = os.open(ACKED_FILE, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE,
                                         dir_fd=self.dir_fd())
            return int(self._acked_fd)

        def head_state(self) -> tuple[int, ...]:
            """Where this queue's appends reached, for ``publish_written``: position, operation
            count, records in the head chunk, records in all, and what info on disk names."""
            hnum, hcnt, hoff = (int(x) for x in self.info["head"])
            saved = getattr(self, "_saved_chunk", None)
            return ((hnum << POS_SHIFT) | hoff, int(self.info.get("ops", 0)), hcnt, int(self.info["size"]),
                    getattr(self, "_saved_size", 0), -1 if saved is None else saved)

        def follow(self) -> bool:
            """Catch up with the appends other producers made since ours, from what they published
            (``publish_written``), instead of reopening; False when the head chunk is not exactly
            what they say (a rollover, a producer that did not publish): then reopen."""
            try:
                state = read_written(self.acked_fd())
                if state is None:
                    return False
                pos, ops, hcnt, size, saved_size, saved_chunk = state
                hnum = int(self.info["head"][0])
                if pos >> POS_SHIFT != hnum or os.fstat(self.headf.fileno()).st_size != pos & _OFFSET_MASK:
                    return False
            except (OSError, ValueError):  # an acked file that will not open or read, a closed chunk
                return False  # reopen: the open path checks and recovers the directory
            self.info["head"] = [hnum, hcnt, pos & _OFFSET_MASK]
            self.info["ops"], self.info["size"] = ops, size
            self._saved_chunk = None if saved_chunk < 0 else saved_chunk
            self._saved_size = saved_size
            self.serializer.info = self.info
            return True

        def outran_its_data(self) -> bool:
            """Whether ``info`` names a later chunk than the last completed append reached
            (``publish_written``) while that append's chunk still ends exactly where it left it:
            the records that moved ``info`` on never completed. An append that started the next
            chunk and then failed is cut back (its bytes gone, the chunk it made left empty), but
            the ``info`` it wrote at the new chunk stays; carrying on from there would skip the
            sequence numbers of the records cut off, a gap the consumer reports as operations
            lost when none was acknowledged. (A producer killed after such a rollover wrote its
            records, so that chunk no longer ends where the last completed append left it.)"""
            try:
                state = read_written(self.acked_fd())
                if state is None:
                    return False  # nothing completed here yet: nothing to tell info from
                chunk, offset = state[0] >> POS_SHIFT, state[0] & _OFFSET_MASK
                if int(self.info["head"][0]) <= chunk:
                    return False
                size = os.stat(f"q{chunk:05d}", dir_fd=self.dir_fd(), follow_symlinks=False).st_size
            except (OSError, KeyError, TypeError, ValueError):
                return False  # as before: the open path's other checks decide
            return size == offset

        def rewind(self, head: list[int], size: int, ops: int) -> None:
            """Write ``info`` back to a state its data holds: where an append that failed started
            (its bytes already cut off), or where the last completed append ended. Never flushes
            the head chunk, which may still buffer the failed append's bytes. Raises OSError."""
            self.info["head"], self.info["size"], self.info["ops"] = [int(x) for x in head], int(size), int(ops)
            self._write_info()

        def rewind_to_written(self) -> bool:
            """``rewind`` to what the last completed append published; False if that cannot be
            read or ``info`` cannot be written (then the caller moves the directory aside)."""
            try:
                state = read_written(self.acked_fd())
                if state is None:
                    return False
                pos, ops, hcnt, size = state[:4]
                self.rewind([pos >> POS_SHIFT, hcnt, pos & _OFFSET_MASK], size, ops)
            except (OSError, ValueError):
                return False
            return True

        def pending_syncs(self) -> tuple[int, int, int, bool]:
            """(data, directory, acked, whether the directory needs a sync): the caller syncs the
            directory when a file was created, then the data, closes all three, and acknowledges.

            One sync per acknowledgement: the data. ``info`` is only a hint of
            where the data ends (recover_head scans past it to the last record
            that continues the sequence), and the directory changes only when
            a chunk file (or the inbox's first info) is created. persist-queue
            fsyncs a full chunk itself before it starts the next one.
            """
            dirty = bool(getattr(self, "_dir_dirty", False))
            self._dir_dirty = False
            return os.dup(self.headf.fileno()), os.dup(self.dir_fd()), os.dup(self.acked_fd()), dirty

        def close(self, _os_close: Any = os.close) -> None:
            # os.close bound at definition: a queue collected at interpreter exit may be
            # closed after this module's globals were cleared (and would print a traceback).
            for name in ("_acked_fd", "_dir_fd"):
                fd = getattr(self, name, -1)
                if fd >= 0:
                    _os_close(fd)
                    setattr(self, name, -1)
            for fp in (getattr(self, "headf", None), getattr(self, "tailf", None)):
                if fp is not None and not fp.closed:
                    try:
                        fp.close()
                    except OSError:
                        # A buffered write that already failed (ENOSPC) fails again
                        # on close; the caller has that error, and the next opener
                        # truncates the chunk back to what info acknowledges.
                        pass

        def __del__(self) -> None:
            # The base __del__ assumes the constructor got as far as opening
            # the chunk files; it does not when info is corrupt.
            self.close()

    _durable = DurableQueue
    return DurableQueue


def open_queue(path: str, chunksize: int = CHUNK_RECORDS) -> Any:
    """A ``DurableQueue`` on ``path`` with its own frame serializer."""
    return durable_queue_class()(path, chunksize=chunksize, tempdir=path, serializer=frame.FrameSerializer())


def read_info(path: str, dir_fd: int | None = None) -> dict[str, Any]:
    """The decoded, checked ``info`` of a queue directory; raises OSError or CorruptRecord."""
    fd = os.open("info" if dir_fd is not None else os.path.join(path, "info"), os.O_RDONLY | NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as fp:
        return checked_info(frame.load(fp))


_U64 = (1 << 64) - 1


def _count(info: dict[str, Any], key: str, low: int, high: int) -> int:
    value = info[key]
    if type(value) is not int or not low <= value <= high:  # bool is an int to isinstance
        raise CorruptRecord(f"queue info's {key} is {repr(value)[:40]}, not a whole number from {low} to {high}")
    return value


def checked_info(info: Any) -> dict[str, Any]:
    """``info`` if every value is of the shape and range persist-queue and our readers assume.

    Its checksum only says the bytes are as written; the values are checked here, once, for
    every reader (producers opening the inbox, the consumer, status, rebuild): a head of the
    wrong length or a negative offset raised later in one of them, as an append that fails for
    ever or a live read that silently returns nothing."""
    if not isinstance(info, dict):
        raise CorruptRecord("queue info is not an object")
    missing = {"head", "tail", "size", "chunksize"} - info.keys()
    if missing:
        raise CorruptRecord(f"queue info lacks {', '.join(sorted(missing))}")
    chunksize = _count(info, "chunksize", 1, 1 << 31)
    _count(info, "size", 0, _U64)
    if "ops" in info:
        _count(info, "ops", 0, _U64)  # every frame header carries it as a u64
    for key in ("head", "tail"):
        where = info[key]
        if not isinstance(where, list) or len(where) != 3:
            raise CorruptRecord(f"queue info's {key} is {repr(where)[:40]}, not [chunk, records, offset]")
        for value, high in zip(where, (_U64 >> POS_SHIFT, chunksize, _OFFSET_MASK)):
            if type(value) is not int or not 0 <= value <= high:
                raise CorruptRecord(f"queue info's {key} is {repr(where)[:60]}, out of range")
    if info["tail"][0] > info["head"][0]:
        raise CorruptRecord(f"queue info's tail {info['tail']} lies past its head {info['head']}")
    return info


def chunk_files(dir_fd: int) -> int:
    """How many chunk files a queue directory holds. Chunks are numbered from 0 and never
    deleted here, so a head or an acknowledged position naming a chunk past this count is damage."""
    return sum(1 for name in os.listdir(dir_fd) if name.startswith("q") and name[1:].isdigit())


def check_head(info: dict[str, Any], dir_fd: int) -> None:
    """CorruptRecord when ``info``'s head names a chunk past every chunk file."""
    hnum = int(info["head"][0])
    if not 0 <= hnum <= chunk_files(dir_fd):
        raise CorruptRecord(f"info's head names chunk {hnum}, past every chunk file")


def _check_acknowledged(info: dict[str, Any], dir_fd: int) -> None:
    """CorruptRecord if producers acknowledged more than the data holds (damage took records),
    or info names a chunk past every chunk file (appending there would leave millions of
    absent chunks before it): raised before persist-queue would cut or extend the directory."""
    check_head(info, dir_fd)
    acked = read_acked(dir_fd)
    hnum, _, hoff = (int(x) for x in info["head"])
    if acked is not None and acked > (hnum << POS_SHIFT) | hoff:
        raise CorruptRecord("the data ends before what its producers acknowledged")


def recover_head(info: dict[str, Any], dir_fd: int) -> dict[str, Any]:
    """``info`` moved forward over every acknowledged record it may not name yet.

    Producers fsync only their data (one sync per acknowledgement); ``info``
    is renamed into place but not synced, so after a power loss it may name
    an older head. The records past it are still on disk and checksummed,
    and each frame carries the directory's operation count before it: the
    run of intact frames continuing ``info["ops"]`` is what was written after
    that head (as a WAL recovers to its last valid record). What follows the
    run is an append nobody acknowledged, and the next opener cuts it off.
    """
    ops = info.get("ops")
    chunksize = info.get("chunksize")
    if not isinstance(ops, int) or isinstance(ops, bool) or not isinstance(chunksize, int) or chunksize < 1:
        return info  # version-1 directories carry no sequence: their info is synced as before
    hnum, hcnt, hoff = (int(x) for x in info["head"])
    size = int(info["size"])
    moved = False
    while True:
        try:
            fd = os.open(f"q{hnum:05d}", os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=dir_fd)
        except FileNotFoundError:
            break
        rolled = False
        try:
            for end, nops in frame.continuing(fd, hoff, ops):
                hoff, ops, hcnt, size, moved = end, ops + nops, hcnt + 1, size + 1, True
                if hcnt == chunksize:  # persist-queue starts the next chunk file here
                    hnum, hcnt, hoff, rolled = hnum + 1, 0, 0, True
                    break
        finally:
            os.close(fd)
        if not rolled:
            break
    if not moved:
        return info
    return {**info, "head": [hnum, hcnt, hoff], "size": size, "ops": ops}


def publish_acked(dir_fd: int, pos: int, ops: int | None = None) -> None:
    """Raise the directory's acknowledged position to ``pos`` (and its operation count to ``ops``).

    A hint, written after the sync that made those bytes durable and never
    synced itself: the consumer reads the live inbox only up to it, so
    "acknowledged" and "readable" are the same line, and it never has to sync
    what a producer already synced. Lost in a power cut, it only makes the
    consumer wait and then sync the head itself. The operation count lets a
    reader say how many acknowledged operations damage took from the tail.
    """
    fd = os.open(ACKED_FILE, os.O_RDWR | os.O_CREAT | NOFOLLOW, FILE_MODE, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # concurrent producers: the hint only moves forward
        _raise_acked(fd, pos, ops)
    finally:
        os.close(fd)


def _raise_acked(fd: int, pos: int, ops: int | None) -> None:
    current = os.pread(fd, 8, 0)
    if len(current) < 8 or int.from_bytes(current, "little") < pos:
        os.pwrite(fd, pos.to_bytes(8, "little") + (ops.to_bytes(8, "little") if ops is not None else b""), 0)


def publish_written(acked_fd: int, state: tuple[int, ...]) -> None:
    """Record, under the spool lock, where every completed append has reached (``head_state``:
    position, operation count, then what the next producer needs to carry on from there).

    Kept in ``acked`` after the acknowledged pair (bytes 16-64). A later sync of
    the head chunk makes the position durable for every producer below it
    (``acknowledge``), and the next producer to take the lock catches up from
    it instead of reopening the queue (``follow``). Only an append that
    succeeded writes it, so a failed append cut back is never named here.
    """
    head = os.pread(acked_fd, 16, 0)
    if len(head) < 16:  # none yet (position 0), or one without a count (written before counts)
        os.pwrite(acked_fd, head[:8].ljust(8, b"\0") + (_UNKNOWN_OPS if head else bytes(8)), 0)
    body = _WRITTEN.pack(*state)
    os.pwrite(acked_fd, body + zlib.crc32(body).to_bytes(8, "little"), 16)


def read_written(acked_fd: int) -> tuple[int, ...] | None:
    """What the last completed append published (``publish_written``), or None."""
    return _written(os.pread(acked_fd, _WRITTEN_END, 0))


def _written(data: bytes) -> tuple[int, ...] | None:
    body = data[16:_WRITTEN_END - 8]
    if len(data) != _WRITTEN_END or zlib.crc32(body).to_bytes(8, "little") != data[_WRITTEN_END - 8:]:
        return None
    return tuple(_WRITTEN.unpack(body))


# Held only around acked's two short flocked steps, never across the sync (see spool._THREADS).
_ACKED_THREADS = threading.Lock()


def _fresh_thread_lock() -> None:
    global _ACKED_THREADS
    _ACKED_THREADS = threading.Lock()


os.register_at_fork(after_in_child=_fresh_thread_lock)


def acknowledge(data_fd: int, acked_fd: int, pos: int, ops: int) -> bool:
    """Make this append durable, sharing the sync with concurrent producers; returns whether we synced.

    Group commit, with no lock held across the sync. Under ``acked``'s lock, an
    append whose position another producer's sync already covered returns at
    once. Otherwise this producer reads how far completed appends have written
    (``publish_written``), syncs the head chunk itself, and then raises the
    acknowledged line, under the lock again, to everything its sync covered.
    Producers that arrive together each call the sync, and the kernel lets
    them share one flush (a journal commit, a log force); a lock held across
    it made every one of them wait on whichever held it, and on 2 cores with
    16 producers that holder waited for a core after its sync: storm p99
    17-18 ms against 6-7 ms (docs/benchmarks.md, session 9).

    Bytes in a later chunk are not in this file, so a line that has moved on
    to another chunk acknowledges only this append (earlier chunks were
    synced whole when persist-queue started the next one).
    """
    with _ACKED_THREADS:  # threads of one process share acked's open file description: flock alone would not exclude them
        fcntl.flock(acked_fd, fcntl.LOCK_EX)
        try:
            data = os.pread(acked_fd, _WRITTEN_END, 0)
        finally:
            fcntl.flock(acked_fd, fcntl.LOCK_UN)
    state = _written(data)
    acked = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    # Covered: a sync reached these bytes and acknowledged them. An acknowledged line never
    # passes the written one; one that does is damage, and we sync ourselves.
    if state is not None and pos <= acked <= state[0]:
        return False
    line, line_ops = pos, ops
    if state is not None and state[0] > pos and state[0] >> POS_SHIFT == pos >> POS_SHIFT:
        line, line_ops = state[0], state[1]  # completed before our sync starts, so it covers them
    fsutil.sync_data(data_fd)  # the one sync an acknowledgement needs (recover_head)
    with _ACKED_THREADS:
        fcntl.flock(acked_fd, fcntl.LOCK_EX)
        try:
            _raise_acked(acked_fd, line, line_ops)  # only ever forward: a later sync may have raised it further
        finally:
            fcntl.flock(acked_fd, fcntl.LOCK_UN)
    return True


# Errors that say nothing of the bytes, only that they cannot be read now: a permission taken
# away, descriptors or memory run out. Never damage (its operations would be counted lost and
# passed over for good): they are raised, and the directory is read again once they pass.
_NOT_NOW = frozenset({errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def cannot_read_now(exc: BaseException) -> bool:
    """Whether ``exc`` leaves the bytes as they were, only out of reach for now."""
    return isinstance(exc, OSError) and exc.errno in _NOT_NOW


def _acked_bytes(dir_fd: int) -> bytes:
    try:
        fd = os.open(ACKED_FILE, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if cannot_read_now(exc):
            raise  # not "nothing acknowledged": the acknowledged records would wait unsaid
        return b""
    try:
        return os.pread(fd, 16, 0)
    finally:
        os.close(fd)


def read_acked(dir_fd: int) -> int | None:
    """The acknowledged position a producer published in this directory, or None."""
    return read_acked_state(dir_fd)[0]


def read_acked_ops(dir_fd: int) -> int | None:
    """The operation count published with the acknowledged position, or None."""
    return read_acked_state(dir_fd)[1]


def read_acked_state(dir_fd: int) -> tuple[int | None, int | None]:
    """The acknowledged position and its operation count, read together: they are published
    in one write, and read apart a producer could move them in between."""
    data = _acked_bytes(dir_fd)
    pos = int.from_bytes(data[:8], "little") if len(data) >= 8 else None
    ops = int.from_bytes(data[8:], "little") if len(data) == 16 and data[8:] != _UNKNOWN_OPS else None
    return pos, ops
