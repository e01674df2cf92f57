"""Small durable-filesystem helpers: private directories, directory fsync, atomic writes.

Nothing under the home is opened through a symbolic link: every open here
uses ``O_NOFOLLOW`` (directories ``O_DIRECTORY | O_NOFOLLOW``), and
``check_private`` refuses a directory another user could write to.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "exists",
    "is_dir",
    "is_file",
    "lexists",
    "ensure_private_dir",
    "fsync_dir",
    "sync_data",
    "write_atomic",
    "write_all",
    "data_extents",
    "append_line",
    "read_file",
    "read_private_file",
    "check_private",
    "unsafe_directory",
    "open_home",
    "refuse_links_below",
    "open_regular",
    "NOFOLLOW",
    "DIR_FLAGS",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW

# Make a file's data, and the size that reaches it, durable. Python has no os.fdatasync on macOS:
# there it is fsync, which is what SQLite's writers do there by default (PRAGMA fullfsync=OFF), so
# an acknowledgement is as durable as theirs. Looked up through this module so tests can count it.
sync_data = getattr(os, "fdatasync", os.fsync)


def fsync_dir(path: str) -> None:
    """Make the directory's entries (creates, renames, unlinks) durable.

    Through a link too: a sync writes nothing a link could redirect, and the
    home itself may be a link to a private directory (``check_private``
    follows it there), whose entries need syncing like any other's."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


LINK_REFUSED = "a symbolic link (nothing under the home is followed through a link)"


def refuse_links_below(under: str, path: str) -> None:
    """Raise ``UnsafePath`` if anything from below ``under`` down to ``path`` is a symbolic link.

    ``under`` (the home) may itself be the user's link; what lies beneath it
    never is: a link there would carry a write out of the home. Checks each
    existing component, stopping at the first missing one (which we create).
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(under))
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return  # not below it: a place the user chose, followed as they set it up
    current = os.path.abspath(under)
    for part in rel.split(os.sep):
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            from .errors import UnsafePath

            raise UnsafePath(current, LINK_REFUSED)


def ensure_private_dir(path: str, under: str | None = None) -> bool:
    """Create ``path`` (and parents) as 0700 and fsync each new entry; True if created.

    ``under``: the home ``path`` lies in; no directory below it is entered
    through a link (``UnsafePath``), as a link there would carry our writes out.

    An existing directory keeps its mode: tightening a user's own directory
    silently would hide a misconfiguration that ``check_private`` reports.

    A parent found already there is synced into its own parent first: whoever
    made it syncs that just after, but one killed in between leaves a name a
    power loss can take, with everything made and acknowledged below it since.
    So a directory that has anything in it has its own name on disk.
    """
    if under is not None:
        refuse_links_below(under, path)
    if is_dir(path):
        return False
    parent = os.path.dirname(os.path.abspath(path))
    if parent and not is_dir(parent):
        ensure_private_dir(parent)
    elif parent and os.path.dirname(parent) != parent:
        try:
            fsync_dir(os.path.dirname(parent))
        except PermissionError:
            pass  # a directory we may not list (0711, say) is not ours to sync: its maker's sync is all there is
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
    fsync_dir(parent)
    return True


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def data_extents(fd: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The ranges of ``[lo, hi)`` of the file ``fd`` that hold data, in order: a hole (a sparse
    file's unwritten range, gigabytes that read as zeros and take no disk) is left out. Where
    the system cannot tell (no SEEK_DATA), the whole range."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return [(lo, hi)] if lo < hi else []
    out: list[tuple[int, int]] = []
    pos = lo
    while pos < hi:
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # nothing but a hole from here to the end of the file
            if exc.errno == errno.EINVAL:
                return [*out, (pos, hi)]  # a filesystem that cannot tell
            raise
        if start >= hi:
            break
        end = min(os.lseek(fd, start, seek_hole), hi)
        out.append((start, end))
        pos = end
    return out


def write_atomic(path: str, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never a mix.

    The temporary name is new each time (``O_EXCL``), so a file planted under
    it is never written through. Only a regular file (or a link, which is
    replaced, never written through) is replaced: a path that names a device,
    a FIFO or a socket is an OSError. ``status --prometheus /dev/null`` had
    renamed a file of ours over the system's ``/dev/null``.
    """
    _replaceable(path)
    tmp = f"{path}.tmp.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not decide who can read it
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        _replaceable(path)  # again just before: the write took time
        os.replace(tmp, path)
    except BaseException:  # e.g. a directory by that name: leave nothing of ours behind
        os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _replaceable(path: str) -> None:
    """Nothing, or the OSError that says ``path`` names something no file of ours may replace."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
        raise OSError(errno.EEXIST, f"{kind}, not a regular file: left as it is", path)


def read_file(path: str, limit: int = 64 * 1024 * 1024) -> bytes:
    """A small state file's bytes, never through a link and never blocking on a FIFO (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NOFOLLOW)
    with os.fdopen(fd, "rb") as fp:
        return fp.read(limit)


def read_users_file(path: str, limit: int = 64 * 1024 * 1024) -> bytes:
    """A file of the user's outside the home (Claude's settings, a git hook): their links are
    followed, but a FIFO is refused, never waited on (OSError: not a regular file)."""
    with os.fdopen(open_regular(path, os.O_RDONLY | os.O_CLOEXEC, follow=True), "rb") as fp:
        return fp.read(limit)


def write_users_file(path: str, data: bytes) -> None:
    """Replace a file of the user's outside the home (Claude's settings, the agent's unit) whole.

    Their own link (a dotfiles repository) stays a link and the file it names is the one
    replaced, keeping its mode; replacing the link with a file of ours cut the settings off
    from the repository without a word."""
    target = os.path.realpath(path)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = FILE_MODE
    os.makedirs(os.path.dirname(target), exist_ok=True)
    write_atomic(target, data, mode=mode)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # a NUL in the name: nothing can be there
        return None


# os.path.exists, isfile and isdir answer False when the answer cannot be had: a directory we
# may not search, a link loop, an I/O error. A configuration file, a watched source or a
# database passed over as absent is an error said to nobody; these raise the OSError instead.
def exists(path: str) -> bool:
    """Whether ``path`` (through links) is there; an error other than its absence is raised."""
    return _stat_or_none(path) is not None


def lexists(path: str) -> bool:
    """Whether anything, a link included, stands at ``path``; an error other than its absence is raised."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False
    return True


def is_dir(path: str) -> bool:
    """Whether ``path`` (through links) is a directory; an error other than its absence is raised."""
    st = _stat_or_none(path)
    return st is not None and stat.S_ISDIR(st.st_mode)


def is_file(path: str) -> bool:
    """Whether ``path`` (through links) is a regular file; an error other than its absence is raised."""
    st = _stat_or_none(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def read_private_file(path: str, home: str | None) -> bytes:
    """A configuration file's bytes, refused (``UnsafePath``) when another user could have written it.

    Under the home it is never read through a link; elsewhere (the platform's
    config directory, often a dotfiles link; ``home`` None: no home yet) the
    file it names must be ours and writable by no one else, like the directory
    holding it. Never blocks (a FIFO is refused, not waited on); at most 1 MiB.
    """
    from .errors import UnsafePath

    under_home = home is not None and os.path.abspath(path).startswith(os.path.abspath(home) + os.sep)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (NOFOLLOW if under_home else os.O_CLOEXEC))
    with os.fdopen(fd, "rb") as fp:
        st = os.fstat(fp.fileno())
        folder = os.stat(os.path.dirname(os.path.realpath(path)))
        for what, info in (("the file", st), ("its directory", folder)):
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise UnsafePath(path, f"{what} is owned by uid {info.st_uid}, not {os.getuid()}")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnsafePath(path, f"{what} is writable by group or others")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(path, "not a regular file")
        return fp.read(1 << 20)


def open_regular(path: str, flags: int, mode: int = FILE_MODE, dir_fd: int | None = None,
                 follow: bool = False) -> int:
    """A descriptor of the regular file at ``path``: never blocking on a FIFO found there
    (opening one waits for the other end, for ever) and, unless ``follow`` (a file of the
    user's, outside the home), never through a link; anything but a regular file is refused
    with ``OSError``."""
    try:
        fd = os.open(path, flags | (0 if follow else NOFOLLOW) | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO no one reads, or a socket
            raise OSError(errno.EINVAL, "not a regular file", path) from None
        raise
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def append_line(path: str, line: bytes) -> None:
    """Append one line with a single O_APPEND write so concurrent writers never interleave."""
    fd = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line if line.endswith(b"\n") else line + b"\n")
    finally:
        os.close(fd)


def check_private(path: str, follow: bool = False) -> str | None:
    """Why ``path`` is unsafe to hold our state, or None.

    Unsafe: another owner, writable by group or others, not a directory, or
    (unless ``follow``) a symbolic link. A missing path is safe: we create it.
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    return unsafe_directory(st)


def unsafe_directory(st: os.stat_result) -> str | None:
    """Why a directory with this status is unsafe to hold our state, or None."""
    if stat.S_ISLNK(st.st_mode):
        return LINK_REFUSED
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by uid {os.getuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def unsafe_ancestor(path: str) -> str | None:
    """Why a directory above ``path`` would let another user replace it (rename ours away,
    put theirs in its place), or None. Each one, on the way written and on the way the links
    lead, must be ours or root's and writable by no one else unless sticky, as ``/tmp`` is;
    our own group may write (user private groups), as OpenSSH's StrictModes allows."""
    uid, gid = os.getuid(), os.getgid()
    seen: set[str] = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        parent = os.path.dirname(start)
        while parent not in seen:
            seen.add(parent)
            try:
                st = os.stat(parent)
            except OSError:
                st = None  # not there yet (we make it) or not ours to look at: the path itself is checked
            if st is not None:
                if st.st_uid not in (0, uid):
                    return f"{parent}, a directory above it, is owned by uid {st.st_uid}, who could replace it"
                writable = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != gid)
                if writable and not st.st_mode & stat.S_ISVTX:
                    return (f"{parent}, a directory above it, is writable by others (mode "
                            f"{stat.S_IMODE(st.st_mode):o}, not sticky), who could replace it")
            if parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
    return None


def open_home(path: str) -> int:
    """A descriptor of the home directory, through a link if the home is one (the user's own
    link to a private directory is allowed, as ``Paths.private_dirs`` says), checked on the
    descriptor itself, so what was checked is what is held. Raises OSError, or ValueError
    with the reason it is unsafe."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    why = unsafe_directory(os.fstat(fd))
    if why:
        os.close(fd)
        raise ValueError(why)
    return fd
