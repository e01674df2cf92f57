"""What the consumer watches besides the spool: legacy JSONL files, transcript trees, state dirs.

Each poll enqueues what is new in every configured source (through the
spool, like any producer) before the consumer drains; it runs on the
consumer's own thread, woken by the same watchdog observer. A source that
cannot be read is reported and retried next time, never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import apsw

from ..config import Config
from ..errors import CodiQueueError
from ..fsutil import exists, is_dir
from ..paths import Paths

__all__ = ["Tailers"]


class Tailers:
    def __init__(self, paths: Paths, config: Config, report: Callable[[str], None]) -> None:
        self.paths = paths
        self.config = config
        self._report = report
        # What the last poll reported: a problem that lasts (a FIFO in a transcript tree, a
        # file we may not read) is said once, not on every poll, and again if it comes back.
        self._said: set[str] = set()
        self._saying: set[str] = set()
        # Watched files whose table the platform's own tools already fill, and why they are not
        # read (None: read them), decided once per file (docs/compatibility.md).
        self._held: dict[str, str | None] = {}

    def report(self, message: str) -> None:
        if message not in self._said and message not in self._saying:
            self._report(message)
        self._saying.add(message)

    def __bool__(self) -> bool:
        return bool(self.config.jsonl or self.config.transcripts or self.config.state_dirs)

    def watch_dirs(self) -> list[tuple[str, bool]]:
        """(directory, recursive) pairs the waker should watch, whether they exist yet or not
        (``Waker.watch_sources`` watches a missing one through its parent)."""
        dirs: dict[str, bool] = {}
        for file in self.config.jsonl:
            dirs.setdefault(os.path.dirname(file), False)
        for root in (*self.config.transcripts, *self.config.state_dirs):
            dirs[root] = True
        return list(dirs.items())

    def poll(self) -> int:
        """Enqueue everything new; the number of operations enqueued."""
        total = 0
        for file, op in self.config.jsonl.items():
            total += self._guard(f"tailing {file}", lambda: self._jsonl(file, op))
        for root in self.config.transcripts:
            total += self._guard(f"watching transcripts in {root}", lambda: self._transcripts(root))
        for root in self.config.state_dirs:
            total += self._guard(f"mirroring state dirs in {root}", lambda: self._state(root))
        self._said, self._saying = self._saying, set()
        return total

    def _guard(self, what: str, fn: Callable[[], int]) -> int:
        try:
            return fn()
        except (OSError, ValueError, CodiQueueError, apsw.Error) as exc:  # apsw: a database read to decide
            self.report(f"{what}: {type(exc).__name__}: {exc}")
            return 0

    def _jsonl(self, file: str, op: str) -> int:
        if not exists(file):  # not yet written; a file we may not reach is reported (_guard)
            return 0
        since = self.config.jsonl_since.get(file)
        if since is None:
            if file not in self._held:
                self._held[file] = self._stored_by_the_platform(file, op)
            held = self._held[file]
            if held is not None:
                self.report(held)
                return 0
        from ..producers.jsonl import import_file

        result = import_file(self.paths, file, op, final=False, producer=f"tail:{file}", since=since or None)
        for note in result.notes:
            self.report(note)
        for err in result.rejected:
            self.report(f"{file}: line {err.record}: {err.reason} (filed as a dead letter)")
        return result.enqueued + len(result.rejected)

    def _stored_by_the_platform(self, file: str, op: str) -> str | None:
        from ..schemas.registry import OPS
        from ..timestamps import iso
        from .db import stored_by_others

        spec = OPS[op]
        held = stored_by_others(self.paths.database_file(spec.tier), spec.table)
        if held is None:
            return None
        since = f'{{ op = "{op}", since = "{iso(held.newest)}" }} to read only the lines dated after its newest ' \
            "row, or to " if held.newest is not None else ""
        return (f"not reading {file}: {held.describe()}. In [watch.jsonl], set it to {since}"
                f'{{ op = "{op}", all = true }} to read every line')

    def _transcripts(self, root: str) -> int:
        if not is_dir(root):
            return 0
        from ..producers.transcripts import import_transcripts

        result = import_transcripts(self.paths, root, final=False)
        for note in result.notes:
            self.report(note)
        return result.operations

    def _state(self, root: str) -> int:
        if not is_dir(root):
            return 0
        from ..producers.statedirs import mirror_state_dirs

        result = mirror_state_dirs(self.paths, root)
        for problem in result.problems:
            self.report(problem)
        return result.operations
