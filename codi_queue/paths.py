"""Where everything lives, and which rule chose it.

Order: ``--home`` > ``CODI_QUEUE_HOME`` > ``home = ...`` in the config file
(the platform's user config directory) > platformdirs defaults. With a home,
everything sits under it; without, data (spool, archive, databases) goes to
the user data directory and logs, state and config to their own platform
directories. A home inside the installed package is refused: user data never
lives there.
"""

from __future__ import annotations

import os
import stat

__all__ = ["Paths", "resolve", "resolve_cached", "database_path", "DATABASE_FILES"]

APP = "codi-queue"
ENV_HOME = "CODI_QUEUE_HOME"
DATABASE_FILES = {
    "platform": "platform.db",
    "org": "org.db",
    "sessions": "sessions.db",
    "project": "project.db",
    "state": "state.db",
}


TIER_NAMES = ("platform", "org", "sessions", "project")


class Paths:
    __slots__ = ("home", "source", "spool", "archive", "logs", "state", "config", "db_dir", "_databases")

    def __init__(self, home: str, source: str, *, logs: str, state: str, config_dir: str, config: str = "") -> None:
        self.home = home
        self.source = source  # which rule chose the home: "--home", "CODI_QUEUE_HOME", "platformdirs"
        self.spool = os.path.join(home, "spool")
        self.archive = os.path.join(home, "archive")
        self.db_dir = os.path.join(home, "db")
        self.logs = logs
        self.state = state
        self.config = config or os.path.join(config_dir, "config.toml")
        self._databases: dict[str, tuple[str, str]] | None = None  # tier → (file, where that came from)

    def with_db_dir(self, db_dir: str) -> Paths:
        """The same paths, but every database in ``db_dir`` under its default name (a rebuild
        writes fresh files there, whatever the configured locations are)."""
        other = Paths.__new__(Paths)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.db_dir = db_dir
        other._databases = {t: (os.path.join(db_dir, f), "rebuild") for t, f in DATABASE_FILES.items()}
        return other

    def database(self, tier: str) -> str:
        return self.databases()[tier][0]

    def database_file(self, tier: str) -> str:
        """The tier's database, to be opened: refused (``UnsafePath``) when it, its ``-wal``,
        ``-shm`` or ``-journal``, or a directory on the way lies under the home and is a
        link, which would carry our writes out of it. One configured elsewhere is the user's
        to set up, links and all. Any of those files that is there must be a regular file:
        SQLite would wait for ever reading a FIFO, and a directory is no database."""
        from .fsutil import check_private, refuse_links_below, unsafe_ancestor

        path = self.database(tier)
        if self.databases()[tier][1] != "default":
            # Configured elsewhere: its folder is held to the home's rules at every open, as
            # check_safe holds it at start (where one that cannot be reached is passed over).
            folder = os.path.dirname(path)
            why = check_private(folder, follow=True) or unsafe_ancestor(folder)
            if why:
                from .errors import UnsafePath

                raise UnsafePath(folder, why)
        for name in (path, *(path + suffix for suffix in DATABASE_SIDECARS)):
            refuse_links_below(self.home, name)
            try:
                mode = os.stat(name).st_mode
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not stat.S_ISREG(mode):
                from .errors import UnsafePath

                raise UnsafePath(name, "not a regular file (a database and its -wal, -shm and -journal must be)")
        return path

    def databases(self) -> dict[str, tuple[str, str]]:
        """Each tier's database file and where it came from: ``[databases]`` in the config
        file (``~`` expanded, relative paths against the home), else ``HOME/db/<tier>.db``."""
        if self._databases is None:
            chosen = {t: (os.path.join(self.db_dir, f), "default") for t, f in DATABASE_FILES.items()}
            for tier, path in _configured_databases(self.config, self.home).items():
                chosen[tier] = (path, f"config file {self.config}")
            self._databases = chosen
        return self._databases

    def configured_database(self, tier: str) -> bool:
        """Whether the tier's database is one the user pointed us at (an adopted database)."""
        return self.databases()[tier][1] not in ("default", "rebuild")

    @property
    def error_log(self) -> str:
        return os.path.join(self.logs, "errors.jsonl")

    @property
    def metrics(self) -> str:
        return os.path.join(self.state, "metrics.json")

    @property
    def consumer_log(self) -> str:
        return os.path.join(self.logs, "consumer.log")

    @property
    def consumer_pid_file(self) -> str:
        return os.path.join(self.state, "consumer.pid")

    @property
    def sync_push_file(self) -> str:
        return os.path.join(self.state, "sync-push.json")

    @property
    def sync_home_id_file(self) -> str:
        return os.path.join(self.state, "sync-home-id")

    @property
    def sync_pull_file(self) -> str:
        return os.path.join(self.state, "sync-pull.json")

    def holding(self, path: str) -> str | None:
        """Which of our own directories (home, logs, state) holds ``path``, by real path, or None.
        Nothing the user points us at (a source, an output file) may lie there."""
        real = os.path.realpath(path)
        return next((own for own in (self.home, self.logs, self.state) if _within(real, own)), None)

    def output_dir(self, path: str, what: str) -> str:
        """``path`` for a directory the user asked us to write (``backup --into``, ``rebuild
        --into``), or CodiQueueError naming ``what``: never the home itself, nor in the spool,
        archive, databases, state or logs (databases rebuilt into the live inbox were taken for
        a broken one)."""
        sqlite_path(path, what)
        real = os.path.realpath(path)
        for own in (self.spool, self.archive, self.db_dir, self.state, self.logs, self.home):
            if real == os.path.realpath(own) or (own != self.home and _within(real, own)):
                from .errors import CodiQueueError

                where = "is" if real == os.path.realpath(own) else "lies in"
                raise CodiQueueError(f"{what}: {path} {where} codi-queue's own {own}: choose a new directory "
                                     f"elsewhere, such as {os.path.join(self.home, 'backups', 'NAME')}")
        return path

    def private_dirs(self, databases: bool = True) -> list[tuple[str, bool]]:
        """Every directory we keep state in, and whether it may be a symbolic link (only the home).

        ``databases``: also the folders of databases configured elsewhere
        (``~/.claude/data``; followed, a user's own link to it is fine). Hooks,
        which never open a database, skip them and the config file they need.
        """
        dirs = [(self.home, True), (self.spool, False), (self.archive, False), (self.db_dir, False),
                (self.state, False), (self.logs, False)]
        if databases:
            dirs += [(os.path.dirname(p), True) for t, (p, src) in self.databases().items()
                     if src != "default" and t in TIER_NAMES]
        return dirs

    def check_safe(self, databases: bool = True) -> None:
        """Refuse a home (or state, logs, spool, db directory) another user could write to.

        Another user able to write there could plant a config file, swap the
        logs for a link, or forge spool files: nothing is read or written then.
        """
        from .fsutil import check_private, unsafe_ancestor

        below_home = os.path.abspath(self.home) + os.sep
        own = self.private_dirs(databases=False)
        for path, follow in self.private_dirs(databases):
            try:
                why = check_private(path, follow=follow)
            except OSError:
                if (path, follow) in own:
                    raise
                # A database folder that cannot be reached (behind a directory we may not search):
                # that tier is set aside when it is opened (database_file checks it then), the rest
                # go on; it had stopped every command and the whole consumer.
                continue
            if not why and not os.path.abspath(path).startswith(below_home):  # the home's own are checked once
                why = unsafe_ancestor(path)
            if why:
                from .errors import UnsafePath

                raise UnsafePath(path, why)

    def as_dict(self) -> dict[str, object]:
        return {
            "home": self.home,
            "source": self.source,
            "spool": self.spool,
            "archive": self.archive,
            "logs": self.logs,
            "state": self.state,
            "config": self.config,
            "databases": {t: self.database(t) for t in TIER_NAMES},
            "databases_from": {t: self.databases()[t][1] for t in TIER_NAMES},
            "state_db": self.database("state"),
        }


def resolve(home: str | None = None) -> Paths:
    if home:
        return _under(home, "--home")
    env = os.environ.get(ENV_HOME)
    if env:
        return _under(env, ENV_HOME)
    import platformdirs  # only the default-path case pays for it

    config = os.path.join(platformdirs.user_config_dir(APP, appauthor=False), "config.toml")
    configured = _home_from(config)
    if configured:
        return _under(configured, "config file", config=config)
    return _checked(Paths(
        platformdirs.user_data_dir(APP, appauthor=False),
        "platformdirs",
        logs=platformdirs.user_log_dir(APP, appauthor=False),
        state=platformdirs.user_state_dir(APP, appauthor=False),
        config_dir=os.path.dirname(config),
    ))


# What platformdirs reads (Linux and macOS) when neither --home nor CODI_QUEUE_HOME is set.
_PLATFORM_ENV = ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME")
_resolved: dict[tuple[str | None, ...], tuple[Paths, str, bytes | None]] = {}


def resolve_cached(home: str | None = None) -> Paths:
    """``resolve``, remembered while nothing it reads has changed, for producers that enqueue
    many times in one process. An absolute home (given, or from CODI_QUEUE_HOME) decides every
    location by itself; the default also depends on platformdirs' environment and the config
    file, which is read again each time. The Paths is shared: callers read its locations only."""
    chosen = home or os.environ.get(ENV_HOME)
    if chosen:
        if not chosen.startswith("/"):  # relative or ~: the working directory or $HOME decide
            return resolve(home)
        key: tuple[str | None, ...] = (chosen, "--home" if home else ENV_HOME)
    else:
        key = (None, *(os.environ.get(name) for name in _PLATFORM_ENV))
    hit = _resolved.get(key)
    if hit is not None and (not hit[1] or _file_signature(hit[1]) == hit[2]):
        return hit[0]
    paths = resolve(home)
    config = "" if chosen else paths.config  # the config file chose (or may yet choose) the home
    if len(_resolved) > 64:  # a caller cycling through homes: start over rather than grow
        _resolved.clear()
    _resolved[key] = (paths, config, _file_signature(config) if config else None)
    return paths


def _file_signature(path: str) -> bytes | None:
    # The contents, not a stat: two writes within one timestamp tick share an mtime. A config
    # file is small; one that is not (a link to a device) is told apart by its first MiB.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block a producer
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return f"\0unreadable {exc.errno}".encode()  # not the absent file it may have been: resolve reports it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b"\0not a regular file"  # resolve reports it
        return os.read(fd, 1 << 20)
    except OSError:
        return None
    finally:
        os.close(fd)


def _configured_databases(config: str, home: str) -> dict[str, str]:
    """``[databases]`` of the config file: tier → absolute path. A file that cannot be read
    here is reported by ``load_config``; paths fall back to the defaults meanwhile."""
    import tomllib

    from .errors import CodiQueueError
    from .fsutil import read_private_file

    try:
        table = tomllib.loads(read_private_file(config, home).decode("utf-8", "replace")).get("databases", {})
    except (OSError, CodiQueueError, tomllib.TOMLDecodeError):
        return {}
    if not isinstance(table, dict):
        return {}
    out: dict[str, str] = {}
    for tier, value in table.items():
        if tier in TIER_NAMES:
            try:
                out[tier] = database_path(value, home)
            except ValueError:
                continue  # load_config names it
    return out


def database_path(value: object, home: str) -> str:
    """A ``[databases]`` value as an absolute path: ``~`` and ``$VAR`` expanded; a relative one
    lies under the home, as documented, so ``..`` may not lead out of it (ValueError: why not)."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("expected a path")
    path = os.path.expanduser(os.path.expandvars(value))
    if not _utf8(path):
        raise ValueError(f"{path!r} {NOT_UTF8}")
    if os.path.isabs(path):
        return os.path.normpath(path)
    resolved = os.path.normpath(os.path.join(os.path.abspath(home), path))
    if not resolved.startswith(os.path.abspath(home) + os.sep):
        raise ValueError(f"{value!r} is relative, so it lies under the home, and '..' may not lead out of it "
                         "(give an absolute path for a database elsewhere)")
    return resolved


def _home_from(config: str) -> str | None:
    from .errors import CodiQueueError
    from .fsutil import read_private_file

    try:
        # The file may name the home: one another user could write (or a FIFO that would
        # hang every producer) is refused, as load_config refuses it. Only its absence means
        # the default home: a file we may not read (its directory unsearchable) may name another.
        data = read_private_file(config, None)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except CodiQueueError:
        raise
    except OSError as exc:
        raise CodiQueueError(f"{config}: {exc}") from None
    import tomllib

    try:
        home = tomllib.loads(data.decode("utf-8")).get("home")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CodiQueueError(f"{config}: {exc}") from None
    if home is None or home == "":
        return None
    if not isinstance(home, str) or "\x00" in home:
        raise CodiQueueError(f"{config}: home: expected a path")
    expanded = os.path.expanduser(os.path.expandvars(home))
    if not os.path.isabs(expanded):  # against the working directory, each hook would find its own home
        raise CodiQueueError(f"{config}: home: {home!r} is not an absolute path (or ~/...)")
    return expanded


def _under(home: str, source: str, config: str = "") -> Paths:
    if "\x00" in home:
        from .errors import CodiQueueError

        raise CodiQueueError(f"{source}: a path cannot hold a NUL byte")
    expanded = os.path.expanduser(home)
    if source == ENV_HOME and not os.path.isabs(expanded):
        # Inherited by hooks that run in each project's directory, a relative home would give
        # every project a home of its own that no consumer drains (as a relative ``home =``).
        from .errors import CodiQueueError

        raise CodiQueueError(f"{ENV_HOME}: {home!r} is not an absolute path (or ~/...)")
    home = os.path.abspath(expanded)
    return _checked(Paths(
        home,
        source,
        logs=os.path.join(home, "logs"),
        state=os.path.join(home, "state"),
        config_dir=home,
        config=config,
    ))


# What SQLite keeps beside a database file, and opens by name beside it.
DATABASE_SIDECARS = ("-wal", "-shm", "-journal")


def _utf8(path: str) -> bool:
    """Whether ``path`` is UTF-8 (a name that is not comes from Python with surrogates in it)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_UTF8 = "is not valid UTF-8, and SQLite opens databases only by UTF-8 paths"


def _within(real: str, directory: str) -> bool:
    """Whether the real path ``real`` is ``directory`` or lies below it (by its real path)."""
    mine = os.path.realpath(directory)
    return real == mine or real.startswith(mine + os.sep)


def sqlite_path(path: str, what: str) -> str:
    """``path`` if SQLite can open a database under it; CodiQueueError naming ``what`` if not. Checked
    before anything is written: SQLite (through apsw) takes UTF-8 paths only, and a path that is
    not ended the command half-way in an internal error (a backup's first file written)."""
    if not _utf8(path):
        from .errors import CodiQueueError

        raise CodiQueueError(f"{what}: {path!r} {NOT_UTF8}: choose one whose path is")
    return path


def _checked(paths: Paths) -> Paths:
    for where in (paths.home, paths.logs, paths.state):
        # Producers would otherwise acknowledge operations into a spool no consumer can apply.
        sqlite_path(where, paths.source)
    # Where the home really is: the home itself may be a link (Paths.private_dirs)
    package = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    home = os.path.realpath(paths.home)
    if home == package or home.startswith(package + os.sep):
        from .errors import UnsafePath

        raise UnsafePath(paths.home, "inside the installed codi-queue package; user data never lives there")
    return paths
