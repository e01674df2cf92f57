"""The one configuration file: what the consumer watches besides the spool.

``config.toml`` in the config directory (``codi-queue paths`` shows where)::

    [watch]
    transcripts = ["~/.claude/projects"]     # Claude Code transcript trees
    state_dirs = ["~/.codi/sessions"]        # session directories holding state.json

    [watch.jsonl]                            # legacy JSONL file = operation
    "~/.claude/data/routing-metrics.jsonl" = "routing_metric"
    "~/.claude/data/git-activity.jsonl" = "auto"   # known file names map themselves
    "~/.claude/data/tool-usage.jsonl" = { op = "auto", since = "2026-01-28T05:00:00Z" }

    [archive]                                # retention of applied segments (the replay journal)
    max_age_days = 30                        # 0 = keep forever
    max_bytes = 2147483648                   # 2 GiB; 0 = no size limit

    [observability]
    prometheus_textfile = "/var/lib/node_exporter/textfile/codi_queue.prom"

    [databases]                              # where each tier's database lives (default HOME/db/<tier>.db)
    sessions = "~/.claude/data/claude.db"    # adopt the platform's own database; relative = under the home (no "..")

    [sync]                                   # the team's PostgreSQL (docs/team.md)
    url = "postgresql://alice@db.team.example/codi"   # password: PGPASSWORD or ~/.pgpass
    machine = "alice-laptop"                 # default: the host name
    push = ["platform", "org", "sessions", "project"]   # default: every tier
    pull = ["org"]                           # default: the org tier (shared knowledge)
    share_private = false                    # message text and prompts stay here (default)

``home = "..."`` at the top level is read by path resolution (``paths.py``)
from the file in the platform's config directory.

A missing file means nothing extra is watched. A file that is not valid TOML,
names an unknown operation or has a value of the wrong type is refused with
the key and the reason.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import CodiQueueError, UnsafePath, shown, unknown_operation
from .fsutil import read_private_file
from .paths import TIER_NAMES, Paths, database_path

__all__ = ["Config", "ConfigError", "SyncConfig", "load_config", "redact_url"]


class ConfigError(CodiQueueError):
    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        super().__init__(f"{path}: {key + ': ' if key else ''}{reason}")


ARCHIVE_MAX_AGE_DAYS = 30
ARCHIVE_MAX_BYTES = 2 * 1024**3


class SyncConfig:
    """``[sync]``: where this machine's journal goes and what comes back."""

    __slots__ = ("url", "machine", "push", "pull", "share_private")

    def __init__(self, url: str, machine: str, push: tuple[str, ...], pull: tuple[str, ...],
                 share_private: bool = False) -> None:
        self.url = url  # may hold a password: shown and logged only through redact_url
        self.machine = machine
        self.push = push
        self.pull = pull
        self.share_private = share_private

    def as_dict(self) -> dict[str, Any]:
        return {"url": redact_url(self.url), "machine": self.machine, "push": list(self.push),
                "pull": list(self.pull), "share_private": self.share_private}


def redact_url(url: str) -> str:
    """A database URL fit to print: any password replaced by ``***``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            if ":" in user:
                user = user.split(":", 1)[0] + ":***"
            netloc = f"{user}@{host}"
        # password, and libpq's sslpassword (a client key's passphrase): any parameter holding one
        query = [(k, "***" if "password" in k.lower() else v) for k, v in parse_qsl(parts.query, True)]
        return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))
    except ValueError:
        return "(a URL that cannot be parsed)"


class Config:
    __slots__ = ("path", "exists", "jsonl", "jsonl_since", "transcripts", "state_dirs", "archive_max_age_days",
                 "archive_max_bytes", "prometheus_textfile", "databases", "sync")

    def __init__(self, path: str, exists: bool) -> None:
        self.path = path
        self.exists = exists
        self.jsonl: dict[str, str] = {}
        # file → lines dated at or before this are not enqueued (0: every line), when given
        self.jsonl_since: dict[str, int] = {}
        self.transcripts: list[str] = []
        self.state_dirs: list[str] = []
        self.archive_max_age_days: float = ARCHIVE_MAX_AGE_DAYS
        self.archive_max_bytes: int = ARCHIVE_MAX_BYTES
        self.prometheus_textfile: str | None = None
        self.databases: dict[str, tuple[str, str]] = {}  # tier → (file, where it came from)
        self.sync: SyncConfig | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "databases": {t: {"path": p, "from": src} for t, (p, src) in self.databases.items()},
            "file_exists": self.exists,
            "watch": {"jsonl": dict(self.jsonl), "jsonl_since": dict(self.jsonl_since),
                      "transcripts": list(self.transcripts), "state_dirs": list(self.state_dirs)},
            "archive": {"max_age_days": self.archive_max_age_days, "max_bytes": self.archive_max_bytes},
            "observability": {"prometheus_textfile": self.prometheus_textfile},
            "sync": self.sync.as_dict() if self.sync else None,
        }


def _path(path: str, key: str, value: Any) -> str:
    """One path the file names, absolute. Empty would mean the working directory, which
    differs for every hook and service; a NUL byte names no file at all."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise ConfigError(path, key, "expected a path")
    return os.path.abspath(os.path.expanduser(os.path.expandvars(value)))


def _str_list(path: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ConfigError(path, key, "expected a list of paths")
    return [_path(path, f"{key}[{i}]", v) for i, v in enumerate(value)]


def load_config(paths: Paths) -> Config:
    import tomllib

    from .schemas.legacy import op_for_file
    from .schemas.registry import OPS

    path = paths.config
    try:
        config_bytes = read_private_file(path, paths.home)
    except FileNotFoundError:
        config = Config(path, exists=False)
        config.databases = {t: paths.databases()[t] for t in TIER_NAMES}
        return config
    except UnsafePath as exc:
        raise ConfigError(path, None, f"refusing it: {exc.why}") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read it: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(config_bytes.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    config = Config(path, exists=True)
    config.databases = {t: paths.databases()[t] for t in TIER_NAMES}
    unknown_top = set(data) - {"home", "watch", "archive", "observability", "databases", "sync"}
    if unknown_top:
        raise ConfigError(path, None, f"unknown keys {sorted(unknown_top)} "
                                      "(known: home, databases, watch, archive, observability, sync)")
    if "sync" in data:
        config.sync = _sync(path, data["sync"])
    databases = data.get("databases", {})
    if not isinstance(databases, dict):
        raise ConfigError(path, "databases", "expected a table of tier = path")
    for tier, value in databases.items():
        if tier not in TIER_NAMES:
            raise ConfigError(path, f"databases.{tier}", f"unknown tier (known: {', '.join(TIER_NAMES)})")
        try:
            database_path(value, paths.home)
        except ValueError as exc:
            raise ConfigError(path, f"databases.{tier}", str(exc)) from None
    _one_file_per_tier(path, paths, set(databases))
    archive = data.get("archive", {})
    if not isinstance(archive, dict) or set(archive) - {"max_age_days", "max_bytes"}:
        raise ConfigError(path, "archive", "expected a table with max_age_days and/or max_bytes")
    for key, attr in (("max_age_days", "archive_max_age_days"), ("max_bytes", "archive_max_bytes")):
        if key in archive:
            value = archive[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(path, f"archive.{key}", "expected a finite number >= 0 (0 = no limit)")
            setattr(config, attr, value if key == "max_age_days" else int(value))
    obs = data.get("observability", {})
    if not isinstance(obs, dict) or set(obs) - {"prometheus_textfile"}:
        raise ConfigError(path, "observability", "expected a table with prometheus_textfile")
    if "prometheus_textfile" in obs:
        textfile = _path(path, "observability.prometheus_textfile", obs["prometheus_textfile"])
        own = paths.holding(textfile)
        if own is not None:  # a file written there would land among the spool's or the databases' own
            raise ConfigError(path, "observability.prometheus_textfile", f"{textfile} lies in codi-queue's own {own}")
        config.prometheus_textfile = textfile
    watch = data.get("watch", {})
    if not isinstance(watch, dict):
        raise ConfigError(path, "watch", "expected a table")
    unknown = set(watch) - {"jsonl", "transcripts", "state_dirs"}
    if unknown:
        raise ConfigError(path, "watch", f"unknown keys {sorted(unknown)} (known: jsonl, transcripts, state_dirs)")
    config.transcripts = _str_list(path, "watch.transcripts", watch.get("transcripts", []))
    config.state_dirs = _str_list(path, "watch.state_dirs", watch.get("state_dirs", []))
    for key, roots in (("watch.transcripts", config.transcripts), ("watch.state_dirs", config.state_dirs)):
        for i, root in enumerate(roots):
            _outside_home(path, f"{key}[{i}]", root, paths)
    jsonl = watch.get("jsonl", {})
    if not isinstance(jsonl, dict):
        raise ConfigError(path, "watch.jsonl", "expected a table of path = operation")
    for file, value in jsonl.items():
        key = f"watch.jsonl.{file!r}"
        op, since = _jsonl_value(path, key, value)
        if op == "auto":
            op = op_for_file(file) or ""
            if not op:
                raise ConfigError(path, key, "'auto' works only for the known legacy file names")
        if op not in OPS:
            raise ConfigError(path, key, unknown_operation(op, OPS).reason)
        source = _outside_home(path, key, _path(path, key, file), paths)
        config.jsonl[source] = op
        if since is not None:
            config.jsonl_since[source] = since
    return config


def _jsonl_value(path: str, key: str, value: Any) -> tuple[str, int | None]:
    """A watched file's operation, and where its lines start: ``"op"``, or ``{ op = "op", since =
    WHEN }`` (lines dated after WHEN) or ``{ op = "op", all = true }`` (every line), for a file
    whose table the platform's own tools already fill (docs/compatibility.md)."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, dict):
        raise ConfigError(path, key, "expected an operation name, or a table with op and since or all")
    unknown = set(value) - {"op", "since", "all"}
    if unknown:
        raise ConfigError(path, key, f"unknown keys {sorted(unknown)} (known: op, since, all)")
    op = value.get("op")
    if not isinstance(op, str):
        raise ConfigError(path, f"{key}.op", "expected an operation name")
    every = value.get("all", False)
    if not isinstance(every, bool):
        raise ConfigError(path, f"{key}.all", "expected true or false")
    if "since" in value:
        if every:
            raise ConfigError(path, key, "since and all = true contradict each other")
        import datetime

        from .timestamps import normalize_timestamp

        when = value["since"]
        if isinstance(when, (datetime.date, datetime.time)):  # a bare TOML date or date-time
            when = when.isoformat()
        try:
            return op, normalize_timestamp(when)
        except ValueError as exc:
            raise ConfigError(path, f"{key}.since", shown(str(exc), 200)) from None
    return op, 0 if every else None


def _outside_home(path: str, key: str, source: str, paths: Paths) -> str:
    """``source`` unless it lies in the home, or the logs or state directories (apart from the
    home by default): the consumer's own files (its log is JSON lines) would be fed back into
    it, each line it reads making the lines it writes next (2,667 log lines in 8 s, every one a
    tool_event row)."""
    own = paths.holding(source)
    if own is not None:
        raise ConfigError(path, key, f"{source} lies in codi-queue's own {own}: its files are never a source")
    return source


def _one_file_per_tier(path: str, paths: Paths, configured: set[str]) -> None:
    """Each tier in a file of its own: two in one would share its schema version and its
    cursors, so one tier's progress would pass for the other's."""
    seen: dict[str, str] = {}
    for tier, (file, _) in paths.databases().items():
        other = seen.setdefault(os.path.realpath(file), tier)
        if other != tier:
            named = tier if tier in configured else other
            raise ConfigError(path, f"databases.{named}", f"{file} is the {other if named == tier else tier} "
                                                          "database already: each tier needs a file of its own")


def _sync(path: str, table: Any) -> SyncConfig:
    from .schemas.registry import TIERS

    if not isinstance(table, dict):
        raise ConfigError(path, "sync", "expected a table with url (and machine, push, pull, share_private)")
    unknown = set(table) - {"url", "machine", "push", "pull", "share_private"}
    if unknown:
        raise ConfigError(path, "sync", f"unknown keys {sorted(unknown)} (known: url, machine, push, pull, "
                                        "share_private)")
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")) or "\x00" in url:
        raise ConfigError(path, "sync.url", "expected a PostgreSQL URL, postgresql://user@host/database")
    machine = table.get("machine", os.uname().nodename)
    if not isinstance(machine, str) or not machine.strip() or len(machine) > 200 or "\x00" in machine:
        raise ConfigError(path, "sync.machine", "expected a name of 1 to 200 characters")
    lists: dict[str, tuple[str, ...]] = {}
    for key, default in (("push", TIERS), ("pull", ("org",))):
        value = table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(path, f"sync.{key}", f"expected a list of tiers ({', '.join(TIERS)})")
        bad = [v for v in value if v not in TIERS]
        if bad:
            raise ConfigError(path, f"sync.{key}", f"unknown tiers {bad} (known: {', '.join(TIERS)})")
        lists[key] = tuple(dict.fromkeys(value))
    share = table.get("share_private", False)
    if not isinstance(share, bool):
        raise ConfigError(path, "sync.share_private", "expected true or false")
    return SyncConfig(url, machine.strip(), lists["push"], lists["pull"], share)
