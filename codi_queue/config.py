"""The one configuration file: what the consumer watches besides the spool.

``config.toml`` in the config directory (``codi-queue paths`` shows where)::

    [watch]
    transcripts = ["~/.claude/projects"]     # Claude Code transcript trees
    state_dirs = ["~/.codi/sessions"]        # session directories holding state.json

    [watch.jsonl]                            # legacy JSONL file = operation
    "~/.claude/data/routing-metrics.jsonl" = "routing_metric"
    "~/.claude/data/git-activity.jsonl" = "auto"   # known file names map themselves

    [archive]                                # retention of applied segments (the replay journal)
    max_age_days = 30                        # 0 = keep forever
    max_bytes = 2147483648                   # 2 GiB; 0 = no size limit

    [observability]
    prometheus_textfile = "/var/lib/node_exporter/textfile/codi_queue.prom"

``home = "..."`` at the top level is read by path resolution (``paths.py``)
from the file in the platform's config directory.

A missing file means nothing extra is watched. A file that is not valid TOML,
names an unknown operation or has a value of the wrong type is refused with
the key and the reason.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import CodiQueueError
from .fsutil import NOFOLLOW
from .paths import Paths

__all__ = ["Config", "ConfigError", "load_config"]


class ConfigError(CodiQueueError):
    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        super().__init__(f"{path}: {key + ': ' if key else ''}{reason}")


ARCHIVE_MAX_AGE_DAYS = 30
ARCHIVE_MAX_BYTES = 2 * 1024**3


class Config:
    __slots__ = ("path", "exists", "jsonl", "transcripts", "state_dirs", "archive_max_age_days",
                 "archive_max_bytes", "prometheus_textfile")

    def __init__(self, path: str, exists: bool) -> None:
        self.path = path
        self.exists = exists
        self.jsonl: dict[str, str] = {}
        self.transcripts: list[str] = []
        self.state_dirs: list[str] = []
        self.archive_max_age_days: float = ARCHIVE_MAX_AGE_DAYS
        self.archive_max_bytes: int = ARCHIVE_MAX_BYTES
        self.prometheus_textfile: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "file_exists": self.exists,
            "watch": {"jsonl": dict(self.jsonl), "transcripts": list(self.transcripts), "state_dirs": list(self.state_dirs)},
            "archive": {"max_age_days": self.archive_max_age_days, "max_bytes": self.archive_max_bytes},
            "observability": {"prometheus_textfile": self.prometheus_textfile},
        }


def _expand(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.path.expandvars(path)))


def _str_list(path: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, key, "expected a list of paths")
    return [_expand(v) for v in value]


def read_private_file(path: str, home: str) -> bytes:
    """A configuration file's bytes, refused when another user could have written it.

    Under the home it is never read through a link; elsewhere (the platform's
    config directory, often a dotfiles link) the file it names must be ours
    and writable by no one else, like the directory holding it.
    """
    import stat

    under_home = os.path.abspath(path).startswith(os.path.abspath(home) + os.sep)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (NOFOLLOW if under_home else os.O_CLOEXEC))
    with os.fdopen(fd, "rb") as fp:
        st = os.fstat(fp.fileno())
        folder = os.stat(os.path.dirname(os.path.realpath(path)))
        for what, s in (("the file", st), ("its directory", folder)):
            if hasattr(os, "getuid") and s.st_uid != os.getuid():
                raise ConfigError(path, None, f"refusing it: {what} is owned by uid {s.st_uid}, not {os.getuid()}")
            if s.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ConfigError(path, None, f"refusing it: {what} is writable by group or others")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(path, None, "refusing it: not a regular file")
        return fp.read(1 << 20)


def load_config(paths: Paths) -> Config:
    import tomllib

    from .schemas.legacy import op_for_file
    from .schemas.registry import OPS

    path = paths.config
    try:
        data = tomllib.loads(read_private_file(path, paths.home).decode("utf-8", "replace"))
    except FileNotFoundError:
        return Config(path, exists=False)
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    config = Config(path, exists=True)
    unknown_top = set(data) - {"home", "watch", "archive", "observability"}
    if unknown_top:
        raise ConfigError(path, None, f"unknown keys {sorted(unknown_top)} (known: home, watch, archive, observability)")
    archive = data.get("archive", {})
    if not isinstance(archive, dict) or set(archive) - {"max_age_days", "max_bytes"}:
        raise ConfigError(path, "archive", "expected a table with max_age_days and/or max_bytes")
    for key, attr in (("max_age_days", "archive_max_age_days"), ("max_bytes", "archive_max_bytes")):
        if key in archive:
            value = archive[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(path, f"archive.{key}", "expected a number >= 0 (0 = no limit)")
            setattr(config, attr, value if key == "max_age_days" else int(value))
    obs = data.get("observability", {})
    if not isinstance(obs, dict) or set(obs) - {"prometheus_textfile"}:
        raise ConfigError(path, "observability", "expected a table with prometheus_textfile")
    if "prometheus_textfile" in obs:
        if not isinstance(obs["prometheus_textfile"], str):
            raise ConfigError(path, "observability.prometheus_textfile", "expected a path")
        config.prometheus_textfile = _expand(obs["prometheus_textfile"])
    watch = data.get("watch", {})
    if not isinstance(watch, dict):
        raise ConfigError(path, "watch", "expected a table")
    unknown = set(watch) - {"jsonl", "transcripts", "state_dirs"}
    if unknown:
        raise ConfigError(path, "watch", f"unknown keys {sorted(unknown)} (known: jsonl, transcripts, state_dirs)")
    config.transcripts = _str_list(path, "watch.transcripts", watch.get("transcripts", []))
    config.state_dirs = _str_list(path, "watch.state_dirs", watch.get("state_dirs", []))
    jsonl = watch.get("jsonl", {})
    if not isinstance(jsonl, dict):
        raise ConfigError(path, "watch.jsonl", "expected a table of path = operation")
    for file, op in jsonl.items():
        key = f"watch.jsonl.{file!r}"
        if not isinstance(op, str):
            raise ConfigError(path, key, "expected an operation name")
        if op == "auto":
            op = op_for_file(file) or ""
            if not op:
                raise ConfigError(path, key, "'auto' works only for the known legacy file names")
        if op not in OPS:
            raise ConfigError(path, key, f"unknown operation {op!r}")
        config.jsonl[_expand(file)] = op
    return config
