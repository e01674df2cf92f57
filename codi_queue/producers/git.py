"""Git hooks → ``git_event`` operations (standard library only; never fails the git command).

``post-commit`` and ``post-merge`` describe HEAD; ``pre-push`` describes each
ref being pushed (from the lines git writes on stdin). Files changed,
additions and deletions come from ``--numstat`` (binary files count as
changed with no lines).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from .records import Op

__all__ = ["operations_for_git_hook"]

_ZERO = "0" * 40
_SEP = "\x1f"


def _git(repo: str, *args: str) -> str | None:
    # Git keeps names and messages as bytes (i18n.commitEncoding, a Latin-1 author): text
    # that is not UTF-8 is recorded with U+FFFD, as at every entry point, never the reason
    # the commit goes unrecorded.
    res = subprocess.run(["git", "-C", repo, *args], capture_output=True, encoding="utf-8", errors="replace",
                         timeout=30)
    return res.stdout if res.returncode == 0 else None


def _numstat(text: str) -> tuple[int, int, int]:
    files = adds = dels = 0
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        files += 1
        adds += int(parts[0]) if parts[0].isdigit() else 0
        dels += int(parts[1]) if parts[1].isdigit() else 0
    return files, adds, dels


def _repo_identity(repo: str) -> tuple[str, str | None]:
    """The local repository (its top-level directory, as the platform's tracker records ``pwd``) and branch.

    The remote a push goes to is named in its message, not here: ``repo`` is
    where the work happened, for commits, merges and pushes alike.
    """
    top = (_git(repo, "rev-parse", "--show-toplevel") or repo).strip()
    branch = (_git(top, "symbolic-ref", "--short", "-q", "HEAD") or "").strip() or None
    return top, branch


def _commit(repo: str, rev: str, event_type: str, repo_name: str, branch: str | None) -> dict[str, Any] | None:
    out = _git(repo, "show", "--no-color", "--numstat", f"--format=%H{_SEP}%an <%ae>{_SEP}%ct{_SEP}%B{_SEP}", rev)
    if out is None:
        return None
    head, _, stat = out.partition(_SEP + "\n") if out.count(_SEP) >= 4 else (out, "", "")
    fields = head.split(_SEP)
    if len(fields) < 4:
        return None
    files, adds, dels = _numstat(stat)
    return {
        "timestamp": int(fields[2]) if fields[2].isdigit() else int(time.time()),
        "event_type": event_type,
        "repo": repo_name[:4000],
        "branch": branch,
        "commit_hash": fields[0],
        "message": fields[3].strip()[:4000],
        "files_changed": files,
        "additions": adds,
        "deletions": dels,
        "author": fields[1][:4000],
    }


def operations_for_git_hook(name: str, args: list[str], stdin: str, repo: str | None = None) -> list[Op]:
    repo = repo or os.getcwd()
    repo_name, branch = _repo_identity(repo)
    bodies: list[dict[str, Any]] = []
    if name in ("post-commit", "post-merge"):
        body = _commit(repo, "HEAD", "commit" if name == "post-commit" else "merge", repo_name, branch)
        if body:
            bodies.append(body)
    elif name == "pre-push":
        remote = args[0] if args else "origin"
        for line in stdin.splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[1] == _ZERO:
                continue  # a deleted ref: nothing was pushed
            local_ref, local_sha, remote_ref, remote_sha = parts
            body = _commit(repo, local_sha, "push", repo_name, local_ref.removeprefix("refs/heads/"))
            if body is None:
                continue
            if remote_sha != _ZERO:
                files, adds, dels = _numstat(_git(repo, "diff", "--numstat", remote_sha, local_sha) or "")
                body.update(files_changed=files, additions=adds, deletions=dels)
            body["timestamp"] = int(time.time())
            body["message"] = f"push to {remote} {remote_ref}: {body['message']}"[:4000]
            bodies.append(body)
    else:
        raise ValueError(f"unknown git hook {name!r} (known: post-commit, post-merge, pre-push)")
    return [("git_event", {k: v for k, v in b.items() if v is not None}, None) for b in bodies]
