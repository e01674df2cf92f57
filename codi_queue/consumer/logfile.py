"""The consumer's log: human lines on stderr, one JSON event per line in a rotating file."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time

from ..fsutil import check_private, ensure_private_dir, open_regular
from ..values import clean_text

__all__ = ["configure_logging", "JsonFormatter"]

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        # A file name that is not UTF-8 carries its bytes as surrogates, which the UTF-8 file
        # cannot take (the record was lost, with a "Logging error" traceback): the text rule.
        return clean_text(json.dumps(event, ensure_ascii=False))


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    def _open(self):  # type: ignore[no-untyped-def]
        # Created 0600 like every other state file, however the umask is set.
        # Never through a link: a logs/ another user swapped is refused before this.
        fd = open_regular(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8")


def configure_logging(path: str, verbose: bool = False) -> None:
    folder = os.path.dirname(path)
    ensure_private_dir(folder)
    why = check_private(folder)
    if why:
        from ..errors import UnsafePath

        raise UnsafePath(folder, why)
    root = logging.getLogger("codi_queue")
    root.setLevel(logging.INFO)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    file = _PrivateRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    file.setFormatter(JsonFormatter())
    root.addHandler(console)
    root.addHandler(file)
