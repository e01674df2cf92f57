"""Wake the consumer when the spool changes: watchdog events, with a slow poll as the safety net."""

from __future__ import annotations

import os
import stat
import threading
import time
from typing import Any

__all__ = ["Waker"]


# A directory the kernel will not watch (inotify's per-user limits: 128 instances by default,
# and editors and containers use them) is polled this often instead, and watched again once
# the kernel allows it: a consumer that exited on the limit was restarted into it for ever.
# Each failed try doubles the wait (a recursive watch of a large tree is not free to retry).
UNWATCHED_POLL_S = 0.5
RETRY_WATCH_S = 60.0
RETRY_WATCH_MAX_S = 3600.0


class Waker:
    """Context manager around a watchdog observer that sets an ``Event`` on any spool change.

    Events can be missed or coalesced, so ``wait`` always returns after ``poll_interval`` as
    well; while a directory cannot be watched (``unwatched`` says which and why), after
    ``UNWATCHED_POLL_S``.
    """

    def __init__(self, path: str, poll_interval: float = 2.0, extra: list[tuple[str, bool]] | None = None) -> None:
        self.path = path
        self.poll_interval = poll_interval
        # (directory, recursive): sources besides the spool, watched where they are (watch_sources)
        self.extra = extra or []
        self.event = threading.Event()
        self._sources: list[_SourceWatch] = []  # what is watched for them, as found
        self._gone = threading.Event()  # a watched directory itself was deleted: watch anew
        self.unwatched: list[str] = []  # "directory: reason" for each the kernel would not watch
        self._observer: Any = None
        self._deadline: float | None = None  # an earlier wake-up someone asked for (wake_after)
        self._watch_again_at = 0.0
        self._retry_s = RETRY_WATCH_S

    def __enter__(self) -> Waker:
        _unpaired_moves()
        self._watch()
        return self

    def __exit__(self, *exc: object) -> None:
        self._unwatch()

    def _watch(self) -> None:
        """Start an observer over every directory the kernel will watch; note the others."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        event, gone = self.event, self._gone
        self._sources = _source_watches(self.extra)  # found before watched: a later change shows as a difference
        dirs = [(self.path, True), *((path, recursive) for path, recursive, _, _ in self._sources)]
        roots = {path for path, _ in dirs}
        stand_ins = _stand_ins(self._sources, [path for path, recursive in dirs if recursive])
        gone.clear()

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, ev: Any) -> None:
                if ev.event_type in _READS:
                    return
                if ev.event_type == "deleted" and ev.is_directory and ev.src_path in roots:
                    gone.set()  # its watch ended with it, and a new one may take its inode number
                elif stand_ins and _beside(ev, stand_ins):
                    return  # a change beside a missing source, in the directory watched for it
                event.set()

        observer = Observer()
        observer.daemon = True
        handler = _Handler()
        changes = _changes()
        unwatched = []
        for path, recursive in dirs:
            try:
                observer.schedule(handler, path, recursive=recursive, event_filter=changes)
            except OSError as exc:
                unwatched.append(f"{path}: {exc.strerror or exc}")
        try:
            observer.start()
        except (OSError, RuntimeError) as exc:  # the kernel reached only here (older watchdog), no thread left
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            unwatched = [f"{path}: {why}" for path, _ in dirs]
        self._observer, self.unwatched = observer, unwatched
        self._watch_again_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, RETRY_WATCH_MAX_S) if unwatched else RETRY_WATCH_S

    def _unwatch(self) -> None:
        if self._observer is not None:
            self._observer.stop()  # started or not: what its watches hold (inotify, threads) is released
            if self._observer.is_alive():
                self._observer.join(timeout=10)
            self._observer = None

    def wake(self) -> None:
        self.event.set()

    def watch_sources(self) -> bool:
        """Watch the sources where they are now; True if that changed what is watched.

        A watch follows the directory it was given: one deleted, or replaced by
        another at its path, is watched nowhere, and one that did not exist
        yet was never watched. Each is then watched anew (a missing one through
        its nearest existing parent, so its creation wakes the consumer), and
        the consumer is woken once for what changed meanwhile. A directory
        deleted and made again can take the same inode number, so its watch
        reporting the deletion counts as well as a new identity. Cheap when
        nothing moved: one ``stat`` per source directory.
        """
        if not self._gone.is_set() and _source_watches(self.extra) == self._sources:
            return False
        self._unwatch()
        self._watch()
        self.event.set()
        return True

    def wake_after(self, seconds: float) -> None:
        """Return from the next ``wait`` within ``seconds`` even if nothing changes."""
        at = time.monotonic() + seconds
        self._deadline = at if self._deadline is None else min(self._deadline, at)

    def wait(self) -> bool:
        """Block until woken, the poll interval or an asked-for wake-up passes; True if woken (or if
        unwatched directories were just watched again: what changed meanwhile went unseen)."""
        timeout = self.poll_interval
        if self.unwatched:
            if time.monotonic() >= self._watch_again_at:
                self._unwatch()
                self._watch()
                return True  # nothing was watched for a moment: look at everything once
            timeout = min(timeout, UNWATCHED_POLL_S)
        if self._deadline is not None:
            timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
        woken = self.event.wait(timeout)
        self.event.clear()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._deadline = None
        return woken


# An open or a close without writing changes nothing, and the consumer's own reads make them:
# on Linux each pass over the spool would wake the next, and an idle consumer with a live inbox
# spun at 60% of a core. They are never asked of the kernel, and ignored if a backend sends them.
_READS = frozenset({"opened", "closed_no_write"})


def _changes() -> list[type]:
    """The event classes that mean something was written, created, moved or deleted."""
    from watchdog import events as ev

    return [ev.FileModifiedEvent, ev.FileCreatedEvent, ev.FileMovedEvent, ev.FileDeletedEvent, ev.FileClosedEvent,
            ev.DirModifiedEvent, ev.DirCreatedEvent, ev.DirMovedEvent, ev.DirDeletedEvent]


# (directory, recursive, its device and inode, the entries in it that lead to missing sources,
# or None when it is watched for what it holds itself)
_SourceWatch = tuple[str, bool, tuple[int, int], "frozenset[str] | None"]


def _source_watches(dirs: list[tuple[str, bool]]) -> list[_SourceWatch]:
    """What to watch for ``dirs``: each that exists, as itself; each that does not, through its
    nearest existing parent, not recursively, for the one entry there that leads to it (its
    creation is a change there). Never raises: a directory that cannot be looked at is absent."""
    found: dict[str, tuple[bool, tuple[int, int], frozenset[str] | None]] = {}
    for path, recursive in dirs:
        path = os.path.abspath(path)
        toward: frozenset[str] | None = None  # itself, not a stand-in
        while True:
            identity = _dir_identity(path)
            if identity is not None:
                was = found.get(path)
                if was is not None:  # watched both ways: recursively, and for everything it holds
                    recursive = recursive or was[0]
                    toward = None if toward is None or was[2] is None else toward | was[2]
                found[path] = (recursive, identity, toward)
                break
            parent = os.path.dirname(path)
            if parent == path:
                break
            path, recursive, toward = parent, False, frozenset({os.path.basename(path)})
    return [(path, recursive, identity, toward) for path, (recursive, identity, toward) in found.items()]


def _stand_ins(sources: list[_SourceWatch], recursive_roots: list[str]) -> dict[str, frozenset[str]]:
    """Directories watched only for the entries that lead to missing sources, and those entries.
    One inside a tree watched recursively is watched for everything there."""
    def in_tree(path: str) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in recursive_roots)

    return {path: toward for path, _, _, toward in sources if toward is not None and not in_tree(path)}


def _beside(ev: Any, stand_ins: dict[str, frozenset[str]]) -> bool:
    """The event only touches stand-in directories: entries in them that lead to no missing source,
    or their own contents changing (a stand-in moved or deleted itself still counts)."""
    for path in (ev.src_path, getattr(ev, "dest_path", "")):
        if not path:
            continue
        if path in stand_ins:
            if ev.event_type != "modified":
                return False
            continue
        parent, name = os.path.split(path)
        toward = stand_ins.get(parent)
        if toward is None or name in toward:
            return False
    return True


def _dir_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # gone, unreadable, or a name the OS cannot take
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


# Where watchdog's inotify backend keeps the time it holds a move's first half: 7.x, then 4.x-6.x.
_MOVE_HOLDERS = (("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
                 ("watchdog.observers.inotify_buffer", "InotifyBuffer"))


def _unpaired_moves() -> None:
    """Deliver every event at once. watchdog's inotify backend holds the first half of a move for
    0.5 s to pair it with the second, and every event queued behind it waits too: a move out of
    the watched tree, or an unlucky interleaving of a rename's two halves (producers rename
    ``info`` every ``INFO_EVERY`` records), kept the consumer asleep for half a second while operations
    were acknowledged (lag spikes of 0.3-0.6 s at 1,000 ops/s). An event here only wakes the
    consumer, so nothing needs the pairing. The consumer is the only user of watchdog in its
    process."""
    import importlib

    for module, name in _MOVE_HOLDERS:
        try:
            holder = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue  # not this version's layout, or not inotify (macOS, BSD)
        holder.delay = 0.0
