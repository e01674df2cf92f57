"""KeepAlive agents: the consumer as a launchd agent (macOS) or a systemd user unit (Linux).

``codi-queue agent install`` renders the file with this interpreter and the
resolved home, writes it where the service manager looks, and loads it;
``--dry-run`` prints the file and the commands instead. The consumer exits 0
on SIGTERM after its batch, and a second one refuses to start, so
``KeepAlive``/``Restart=always`` restart it only when it should run.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from dataclasses import dataclass

from .errors import CodiQueueError
from .paths import Paths

__all__ = ["LABEL", "UNIT", "Agent", "render_plist", "render_unit", "agent_for", "default_kind"]

LABEL = "dev.codi-queue.consumer"
UNIT = "codi-queue.service"


def _argv(python: str, home: str) -> list[str]:
    return [python, "-m", "codi_queue", "--home", home, "run"]


def render_plist(python: str, home: str, logs: str) -> bytes:
    return plistlib.dumps(
        {
            "Label": LABEL,
            "ProgramArguments": _argv(python, home),
            "RunAtLoad": True,
            "KeepAlive": True,
            "ThrottleInterval": 10,
            "ProcessType": "Background",
            "ExitTimeOut": 30,
            "StandardOutPath": os.path.join(logs, "agent.out.log"),
            "StandardErrorPath": os.path.join(logs, "agent.err.log"),
        }
    )


def _systemd_quote(arg: str) -> str:
    # systemd expands %specifiers and $VARIABLES in ExecStart, quoted or not: a home named
    # "…$HOME…" would have started the consumer on another home.
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and all(c.isalnum() or c in "/._-+:=@%" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(python: str, home: str) -> str:
    exec_start = " ".join(_systemd_quote(a) for a in _argv(python, home))
    return f"""[Unit]
Description=codi-queue consumer (the only writer of the codi-queue databases)
StartLimitIntervalSec=300
StartLimitBurst=20

[Service]
Type=simple
ExecStart={exec_start}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=30
UMask=0077

[Install]
WantedBy=default.target
"""


@dataclass
class Agent:
    kind: str  # "launchd" or "systemd"
    path: str  # where the file goes
    content: bytes
    install: list[list[str]]
    uninstall: list[list[str]]
    status: list[str]

    def apply(self, commands: list[list[str]]) -> list[str]:
        """Run the commands in order; the failures (a service manager that is not running, say)."""
        failures = []
        for cmd in commands:
            try:
                res = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=60)
            except FileNotFoundError:
                failures.append(f"{cmd[0]}: not found")
                continue
            if res.returncode != 0:
                failures.append(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr.strip()[:500]}")
        return failures


def default_kind() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def agent_for(paths: Paths, kind: str | None = None, python: str | None = None) -> Agent:
    kind = kind or default_kind()
    python = python or sys.executable
    for what, path in (("the home", paths.home), ("the logs directory", paths.logs), ("the interpreter", python)):
        if any(ord(c) < 32 or c == "\x7f" for c in path):
            # A newline would end the unit's line and start one of its own (a directive);
            # a property list cannot hold most control characters at all.
            raise CodiQueueError(f"{what} {path!r} holds a control character: it cannot be written into an "
                                 "agent's file safely; choose a path without one")
    if kind == "launchd":
        path = os.path.expanduser(f"~/Library/LaunchAgents/{LABEL}.plist")
        domain = f"gui/{os.getuid()}"
        return Agent(
            kind,
            path,
            render_plist(python, paths.home, paths.logs),
            install=[["launchctl", "bootout", domain, path], ["launchctl", "bootstrap", domain, path]],
            uninstall=[["launchctl", "bootout", domain, path]],
            status=["launchctl", "print", f"{domain}/{LABEL}"],
        )
    if kind == "systemd":
        config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        path = os.path.join(config, "systemd", "user", UNIT)
        return Agent(
            kind,
            path,
            render_unit(python, paths.home).encode(),
            install=[["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", UNIT]],
            uninstall=[["systemctl", "--user", "disable", "--now", UNIT]],
            status=["systemctl", "--user", "status", "--no-pager", UNIT],
        )
    raise ValueError(f"unknown agent kind {kind!r} (launchd or systemd)")
