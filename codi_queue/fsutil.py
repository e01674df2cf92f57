"""Small durable-filesystem helpers: private directories, directory fsync, atomic writes."""

from __future__ import annotations

import os
import stat

__all__ = [
    "ensure_private_dir",
    "fsync_dir",
    "write_atomic",
    "append_line",
    "check_private",
]

DIR_MODE = 0o700
FILE_MODE = 0o600


def fsync_dir(path: str) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: str) -> bool:
    """Create ``path`` (and parents) as 0700 and fsync each new entry; True if created.

    An existing directory keeps its mode: tightening a user's own directory
    silently would hide a misconfiguration that ``check_private`` reports.
    """
    if os.path.isdir(path):
        return False
    parent = os.path.dirname(os.path.abspath(path))
    if parent and not os.path.isdir(parent):
        ensure_private_dir(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    fsync_dir(parent)
    return True


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def append_line(path: str, line: bytes) -> None:
    """Append one line with a single O_APPEND write so concurrent writers never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.write(fd, line if line.endswith(b"\n") else line + b"\n")
    finally:
        os.close(fd)


def check_private(path: str) -> str | None:
    """Why ``path`` is unsafe to hold our state (another owner, group/world writable), or None."""
    st = os.stat(path)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by uid {os.getuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None
