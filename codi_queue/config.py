"""The one configuration file: what the consumer watches besides the spool.

``config.toml`` in the config directory (``codi-queue paths`` shows where)::

    [watch]
    transcripts = ["~/.claude/projects"]     # Claude Code transcript trees
    state_dirs = ["~/.codi/sessions"]        # session directories holding state.json

    [watch.jsonl]                            # legacy JSONL file = operation
    "~/.claude/data/routing-metrics.jsonl" = "routing_metric"
    "~/.claude/data/git-activity.jsonl" = "auto"   # known file names map themselves

A missing file means nothing extra is watched. A file that is not valid TOML,
names an unknown operation or has a value of the wrong type is refused with
the key and the reason.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import CodiQueueError
from .paths import Paths

__all__ = ["Config", "ConfigError", "load_config"]


class ConfigError(CodiQueueError):
    def __init__(self, path: str, key: str | None, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        super().__init__(f"{path}: {key + ': ' if key else ''}{reason}")


class Config:
    __slots__ = ("path", "exists", "jsonl", "transcripts", "state_dirs")

    def __init__(self, path: str, exists: bool) -> None:
        self.path = path
        self.exists = exists
        self.jsonl: dict[str, str] = {}
        self.transcripts: list[str] = []
        self.state_dirs: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "file_exists": self.exists,
            "watch": {"jsonl": dict(self.jsonl), "transcripts": list(self.transcripts), "state_dirs": list(self.state_dirs)},
        }


def _expand(path: str) -> str:
    return os.path.abspath(os.path.expanduser(os.path.expandvars(path)))


def _str_list(path: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, key, "expected a list of paths")
    return [_expand(v) for v in value]


def load_config(paths: Paths) -> Config:
    import tomllib

    from .schemas.legacy import op_for_file
    from .schemas.registry import OPS

    path = paths.config
    try:
        with open(path, "rb") as fp:
            data = tomllib.load(fp)
    except FileNotFoundError:
        return Config(path, exists=False)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, None, f"not valid TOML: {exc}") from None
    config = Config(path, exists=True)
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
