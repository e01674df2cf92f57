"""A real PostgreSQL server for the tests and benchmarks: started here, on loopback, stopped after.

Debian's ``postgresql`` package (``.ci/run`` installs it): ``initdb`` and
``pg_ctl`` from ``pg_config --bindir`` or /usr/lib/postgresql/*/bin. The server
refuses to run as root, so as root it runs as the ``postgres`` user the
package creates (``runuser``; ``nobody`` where that user does not exist). The cluster lives in its own temporary folder
(root's pytest folders are closed to that user). Local connections are
trusted; over TCP a password is required (``team`` / ``team-secret``), so the
tests can see a refused login.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Any

__all__ = ["PgServer", "find_bindir"]

PASSWORD = "team-secret"


def find_bindir() -> str | None:
    for cand in ("pg_ctl",):
        found = shutil.which(cand)
        if found and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(found)), "initdb")):
            return os.path.dirname(os.path.realpath(found))
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out = ""  # no pg_config (Debian's server package does not ship it on PATH): look in the usual place
    if out and os.path.exists(os.path.join(out, "pg_ctl")):
        return out
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return dirs[-1] if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql package "
                               "(.ci/run does)")
        self.bindir = bindir
        self.root = tempfile.mkdtemp(prefix="codi-queue-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = _free_port()
        self._as: list[str] = []
        self.user = _server_user() if os.geteuid() == 0 else None
        if self.user:
            os.chown(self.root, *_ids(self.user))
            self._as = ["runuser", "-u", self.user, "--"]
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w") as fp:
            fp.write(PASSWORD)
        if self.user:
            os.chown(pwfile, *_ids(self.user))
        self._run("initdb", "-D", self.data, "-U", "team", "--pwfile", pwfile, "-E", "UTF8", "--locale=C.UTF-8",
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as fp:
            fp.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                     "max_connections = 100\nfsync = on\n")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        proc = subprocess.run([*self._as, os.path.join(self.bindir, tool), *args], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "start")

    def running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def start_if_stopped(self) -> None:
        """A test that stopped the server and failed before starting it again must not take the rest down."""
        if not self.running():
            self.start()

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, password: str | None = PASSWORD, user: str = "team") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self, name: str) -> str:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return name


def _server_user() -> str:
    """Who runs the server when the tests run as root: the package's ``postgres`` user, else ``nobody``."""
    import pwd

    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    raise RuntimeError("PostgreSQL refuses to run as root, and there is no postgres or nobody user to run it as")


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
