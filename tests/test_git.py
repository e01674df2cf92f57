"""Git hooks: installed beside (not over) existing hooks, and each commit, merge and push becomes a git_event."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codi_queue.consumer.loop import Consumer
from codi_queue.paths import Paths

from .conftest import cli_env, named_rows, query


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _repo(path: Path) -> Path:
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "dev@example.com")
    _git(path, "config", "user.name", "Dev")
    return path


def test_commit_merge_and_push_are_recorded_and_existing_hooks_still_run(tmp_path: Path, home: Path, paths: Paths) -> None:
    repo = _repo(tmp_path / "repo")
    log = tmp_path / "chained.log"
    hook = repo / ".git" / "hooks" / "post-commit"
    hook.write_text(f"#!/bin/sh\necho ran >> {log}\nexit 0\n")
    hook.chmod(0o755)
    env = cli_env(home)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0 and "kept as post-commit.pre-codi-queue" in res.stdout
    # The installed hooks call the interpreter's console script or python -m: make sure they find our home.
    (repo / "a.txt").write_text("one\ntwo\n")
    (repo / "b.bin").write_bytes(b"\0\1\2")
    _git(repo, "add", ".", env=env)
    _git(repo, "commit", "-qm", "add files\n\nwith a body", env=env)
    assert log.read_text() == "ran\n"
    _git(repo, "checkout", "-qb", "feature", env=env)
    (repo / "a.txt").write_text("one\nTWO\nthree\n")
    _git(repo, "commit", "-qam", "change a", env=env)
    _git(repo, "checkout", "-q", "main", env=env)
    _git(repo, "merge", "-q", "--no-ff", "-m", "merge feature", "feature", env=env)
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", str(remote))
    _git(repo, "remote", "add", "origin", str(remote))
    _git(repo, "push", "-q", "origin", "main", env=env)
    Consumer(paths).run(once=True)
    events = named_rows(paths, "sessions", "SELECT * FROM git_events ORDER BY id")
    # git runs post-merge, not post-commit, for a merge commit
    assert [r["event_type"] for r in events] == ["commit", "commit", "merge", "push"]

    def changes(r: dict[str, object]) -> tuple[object, ...]:
        return r["files_changed"], r["additions"], r["deletions"]

    first = events[0]
    assert first["branch"] == "main" and first["message"].startswith("add files") and changes(first) == (2, 2, 0)
    assert first["author"] == "Dev <dev@example.com>"
    (change,) = [r for r in events if r["message"] == "change a"]
    assert change["branch"] == "feature" and changes(change) == (1, 2, 1)
    (push,) = [r for r in events if r["event_type"] == "push"]
    assert push["message"].startswith("push to origin refs/heads/main")


def test_a_failing_chained_pre_push_still_blocks_the_push(tmp_path: Path, home: Path) -> None:
    repo = _repo(tmp_path / "repo")
    guard = repo / ".git" / "hooks" / "pre-push"
    guard.write_text("#!/bin/sh\nexit 1\n")
    guard.chmod(0o755)
    env = cli_env(home)
    subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)], env=env, check=True,
                   capture_output=True, timeout=60)
    (repo / "f").write_text("x")
    _git(repo, "add", ".", env=env)
    _git(repo, "commit", "-qm", "x", env=env)
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", str(remote))
    res = subprocess.run(["git", "-C", str(repo), "push", "-q", str(remote), "main"], capture_output=True, env=env, timeout=60)
    assert res.returncode != 0


def test_reinstall_is_idempotent(tmp_path: Path, home: Path) -> None:
    repo = _repo(tmp_path / "repo")
    cmd = [sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)]
    subprocess.run(cmd, env=cli_env(home), check=True, capture_output=True, timeout=60)
    again = subprocess.run(cmd, env=cli_env(home), capture_output=True, text=True, timeout=60)
    assert again.stdout.count("already installed") == 3
    assert not any(p.name.endswith(".pre-codi-queue") for p in (repo / ".git" / "hooks").iterdir())
    assert os.access(repo / ".git" / "hooks" / "post-commit", os.X_OK)


@pytest.mark.parametrize("planted", ["a directory", "a link to a directory", "a link to nothing",
                                     "a second hook over a chained one"])
def test_a_hook_that_cannot_be_chained_is_refused_before_any_is_installed(tmp_path: Path, home: Path,
                                                                         planted: str) -> None:
    """post-merge is looked at second: a directory there ended the command with "[Errno 22]" after
    post-commit was installed and unreported; a link to nothing was written through (a file made
    at its target, outside the repository); a second foreign hook replaced the one chained before."""
    repo = _repo(tmp_path / "repo")
    hooks = repo / ".git" / "hooks"
    hook = hooks / "post-merge"
    target = tmp_path / "elsewhere"
    if planted == "a directory":
        hook.mkdir()
    elif planted == "a link to a directory":
        target.mkdir()
        hook.symlink_to(target)
    elif planted == "a link to nothing":
        hook.symlink_to(target)
    else:
        (hooks / "post-merge.pre-codi-queue").write_text("#!/bin/sh\necho first\n")
        hook.write_text("#!/bin/sh\necho second\n")
    before = sorted(p.name for p in hooks.iterdir())
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)], env=cli_env(home),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "post-merge" in res.stderr and "Errno" not in res.stderr, res.stderr
    assert sorted(p.name for p in hooks.iterdir()) == before  # nothing installed, nothing moved
    assert not target.is_file()
    if planted == "a second hook over a chained one":
        assert (hooks / "post-merge.pre-codi-queue").read_text() == "#!/bin/sh\necho first\n"


def test_a_hook_that_is_the_user_s_link_is_chained_and_its_target_left_alone(tmp_path: Path, home: Path) -> None:
    repo = _repo(tmp_path / "repo")
    shared = tmp_path / "shared-hook"
    shared.write_text("#!/bin/sh\nexit 0\n")
    shared.chmod(0o755)
    (repo / ".git" / "hooks" / "post-commit").symlink_to(shared)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)], env=cli_env(home),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert shared.read_text() == "#!/bin/sh\nexit 0\n"
    assert os.readlink(repo / ".git" / "hooks" / "post-commit.pre-codi-queue") == str(shared)
    assert not (repo / ".git" / "hooks" / "post-commit").is_symlink()


REFS_GUARD = """#!/bin/sh
# Refuse pushes to main: reads the refs git writes on stdin, as git's own sample does.
while read local_ref local_sha remote_ref remote_sha
do
    if [ "$remote_ref" = "refs/heads/main" ]; then
        echo "refusing a push to main" >&2
        exit 1
    fi
done
exit 0
"""


def _sample_pre_push() -> str | None:
    for folder in ("/usr/share/git-core/templates/hooks", "/usr/share/git/templates/hooks"):
        sample = Path(folder, "pre-push.sample")
        if sample.exists():
            return sample.read_text()
    return None


def _push_setup(tmp_path: Path, home: Path, guard: str) -> tuple[Path, Path, dict[str, str]]:
    repo = _repo(tmp_path / "repo")
    hook = repo / ".git" / "hooks" / "pre-push"
    hook.write_text(guard)
    hook.chmod(0o755)
    env = cli_env(home)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    remote = tmp_path / "remote.git"
    _git(tmp_path, "init", "-q", "--bare", str(remote))
    _git(repo, "remote", "add", "origin", str(remote))
    return repo, remote, env


def test_a_chained_pre_push_reading_refs_sees_them_and_still_blocks(tmp_path: Path, home: Path, paths: Paths) -> None:
    repo, remote, env = _push_setup(tmp_path, home, REFS_GUARD)
    (repo / "f").write_text("x")
    _git(repo, "add", ".", env=env)
    _git(repo, "commit", "-qm", "x", env=env)
    blocked = subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert blocked.returncode != 0 and "refusing a push to main" in blocked.stderr
    assert _git(remote, "branch", "--list") == ""  # nothing reached the remote
    _git(repo, "push", "-q", "origin", "main:topic", env=env)  # another branch is allowed through
    Consumer(paths).run(once=True)
    pushes = named_rows(paths, "sessions", "SELECT repo, message FROM git_events WHERE event_type = 'push'")
    assert len(pushes) == 1, pushes  # the blocked push is not recorded as one
    assert pushes[0]["repo"] == str(repo) and "refs/heads/topic" in pushes[0]["message"]
    commit_repo = query(paths, "sessions", "SELECT repo FROM git_events WHERE event_type = 'commit'")
    assert commit_repo == [(str(repo),)]  # the local repository, not the remote


@pytest.mark.parametrize("tmpdir", ["missing", "a-file"])
def test_a_pre_push_with_nowhere_to_keep_the_refs_never_blocks_or_lets_through_a_push(
        tmp_path: Path, home: Path, paths: Paths, tmpdir: str) -> None:
    """The hook keeps git's refs in a file under TMPDIR for its own record. When it could not make
    one (TMPDIR missing, full, read-only) it exited 1: every push was refused for our sake."""
    repo, remote, env = _push_setup(tmp_path, home, REFS_GUARD)
    where = tmp_path / "tmp"
    if tmpdir == "a-file":
        where.write_text("")
    env = dict(env, TMPDIR=str(where))
    (repo / "f").write_text("x")
    _git(repo, "add", ".", env=env)
    _git(repo, "commit", "-qm", "x", env=env)
    blocked = subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main"], capture_output=True, text=True,
                             env=env, timeout=60)
    assert blocked.returncode != 0 and "refusing a push to main" in blocked.stderr  # the guard saw the refs
    allowed = subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main:topic"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    assert _git(remote, "branch", "--list").split() == ["topic"]


def test_gits_own_sample_pre_push_still_works_when_chained(tmp_path: Path, home: Path) -> None:
    sample = _sample_pre_push()
    assert sample is not None, "git's sample hooks are part of the git package on the project's machines"
    repo, remote, env = _push_setup(tmp_path, home, sample)
    (repo / "f").write_text("x")
    _git(repo, "add", ".", env=env)
    _git(repo, "commit", "-qm", "WIP not ready", env=env)  # the sample refuses commits starting with WIP
    res = subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert res.returncode != 0 and "WIP" in res.stderr


def test_install_git_hook_dry_run_says_what_it_would_do(tmp_path: Path, home: Path) -> None:
    repo = _repo(tmp_path / "repo")
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo), "--dry-run"],
                         env=cli_env(home), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "would be installed" in res.stdout and ": installed" not in res.stdout
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


def test_a_commit_whose_text_is_not_utf8_is_recorded_with_replacements(tmp_path: Path, home: Path,
                                                                       paths: Paths) -> None:
    """A Latin-1 author or message (git keeps bytes) made the post-commit hook fail with
    UnicodeDecodeError, and the commit went unrecorded (session 13)."""
    repo = _repo(tmp_path / "repo")
    subprocess.run(["git", "-C", str(repo), "config", "user.name", b"Jos\xe9".decode("latin-1")], check=True)
    res = subprocess.run([sys.executable, "-m", "codi_queue", "install-git-hook", str(repo)], env=cli_env(home),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (repo / "f").write_text("x")
    _git(repo, "add", "f")
    env = {**cli_env(home), "GIT_AUTHOR_NAME": "Jos\udce9"}  # the raw byte 0xE9, as a Latin-1 terminal sends it
    subprocess.run(["git", "-C", str(repo), "-c", "i18n.commitEncoding=latin-1", "commit", "-q", "-F", "-"],
                   input=b"caf\xe9 \xff", env={k: v.encode("utf-8", "surrogateescape") for k, v in env.items()},
                   check=True, timeout=60)
    Consumer(paths).run(once=True)
    (row,) = named_rows(paths, "sessions", "SELECT author, message FROM git_events")
    assert row["author"].startswith("Jos\ufffd") and row["message"].startswith("caf\ufffd"), row
    assert query(paths, "state", "SELECT count(*) FROM cq_dead_letters") == [(0,)]
    assert not (home / "logs" / "errors.jsonl").exists()
