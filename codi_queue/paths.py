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

__all__ = ["Paths", "resolve", "DATABASE_FILES"]

APP = "codi-queue"
ENV_HOME = "CODI_QUEUE_HOME"
DATABASE_FILES = {
    "platform": "platform.db",
    "org": "org.db",
    "sessions": "sessions.db",
    "project": "project.db",
    "state": "state.db",
}


class Paths:
    __slots__ = ("home", "source", "spool", "archive", "logs", "state", "config", "db_dir")

    def __init__(self, home: str, source: str, *, logs: str, state: str, config_dir: str, config: str = "") -> None:
        self.home = home
        self.source = source  # which rule chose the home: "--home", "CODI_QUEUE_HOME", "platformdirs"
        self.spool = os.path.join(home, "spool")
        self.archive = os.path.join(home, "archive")
        self.db_dir = os.path.join(home, "db")
        self.logs = logs
        self.state = state
        self.config = config or os.path.join(config_dir, "config.toml")

    def with_db_dir(self, db_dir: str) -> Paths:
        """The same paths, but databases in ``db_dir`` (a rebuild writes beside the live ones)."""
        other = Paths.__new__(Paths)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        other.db_dir = db_dir
        return other

    def database(self, tier: str) -> str:
        return os.path.join(self.db_dir, DATABASE_FILES[tier])

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

    def private_dirs(self) -> list[tuple[str, bool]]:
        """Every directory we keep state in, and whether it may be a symbolic link (only the home)."""
        return [(self.home, True), (self.spool, False), (self.archive, False), (self.db_dir, False),
                (self.state, False), (self.logs, False)]

    def check_safe(self) -> None:
        """Refuse a home (or state, logs, spool, db directory) another user could write to.

        Another user able to write there could plant a config file, swap the
        logs for a link, or forge spool files: nothing is read or written then.
        """
        from .fsutil import check_private

        for path, follow in self.private_dirs():
            why = check_private(path, follow=follow)
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
            "databases": {t: self.database(t) for t in ("platform", "org", "sessions", "project")},
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


def _home_from(config: str) -> str | None:
    if not os.path.exists(config):
        return None
    import tomllib

    from .errors import CodiQueueError

    try:
        with open(config, "rb") as fp:
            home = tomllib.load(fp).get("home")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CodiQueueError(f"{config}: {exc}") from None
    if home is not None and not isinstance(home, str):
        raise CodiQueueError(f"{config}: home: expected a path")
    return home or None


def _under(home: str, source: str, config: str = "") -> Paths:
    home = os.path.abspath(os.path.expanduser(home))
    return _checked(Paths(
        home,
        source,
        logs=os.path.join(home, "logs"),
        state=os.path.join(home, "state"),
        config_dir=home,
        config=config,
    ))


def _checked(paths: Paths) -> Paths:
    package = os.path.dirname(os.path.abspath(__file__))
    if paths.home == package or paths.home.startswith(package + os.sep):
        from .errors import UnsafePath

        raise UnsafePath(paths.home, "inside the installed codi-queue package; user data never lives there")
    return paths
