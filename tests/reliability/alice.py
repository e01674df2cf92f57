"""A small ALICE-style crash-state generator: record file-system calls with strace, model them, replay crashes.

The model tracks inodes and directory entries. A file's contents become
durable at an fsync/fdatasync of that file; a directory's entries at an fsync
of the directory. After any prefix of the recorded calls a crash can leave:

* ``process``: everything done so far (kill -9: the page cache survives);
* ``power``: only what was made durable (a machine crash, worst case);
* ``torn``: ``power``, plus the first half of the last write if the prefix
  ends in one (a write that partly reached the disk).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

SYSCALLS = ("openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,"
            "ftruncate,close,dup,dup2,dup3,fcntl")
_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(?:<(.*)>)?$")
_HEX = re.compile(rb"\\x([0-9a-f]{2})")
_STR = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_FD = re.compile(r"^(-?\d+)<((?:\\x[0-9a-f]{2})*)>")


def _unhex(text: str) -> bytes:
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())


@dataclass
class Op:
    kind: str  # create, write, sync, rename, unlink, mkdir, truncate
    path: str = ""
    path2: str = ""
    data: bytes = b""
    offset: int = -1  # -1: append
    trunc: bool = False
    fd_key: tuple[int, int] = (0, 0)


def record(argv: list[str], trace: str, env: dict[str, str], root: str | tuple[str, ...]) -> list[Op]:
    """Run ``argv`` under strace; the calls that touched files below ``root`` (or roots), in order."""
    if isinstance(root, str):
        root = (root,)
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={SYSCALLS}", "-y", "-xx", "-s", "16777216", "-o", trace, *argv],
                   env=env, check=True, capture_output=True, timeout=120)
    ops: list[Op] = []
    fds: dict[tuple[int, int], tuple[str, bool, bool]] = {}  # (pid, fd) → (path, append, is_dir)
    offsets: dict[tuple[int, int], int] = {}
    with open(trace, encoding="ascii", errors="replace") as fp:
        for line in fp:
            m = _LINE.match(line.strip())
            if not m:
                continue
            pid, name, args, ret = int(m.group(1)), m.group(2), m.group(3), int(m.group(4))
            if ret < 0:
                continue
            strings = [_unhex(s).decode(errors="replace") for s in _STR.findall(args)]
            fd_match = _FD.match(args)
            fd_path = _unhex(fd_match.group(2)).decode(errors="replace") if fd_match else ""
            key = (pid, int(fd_match.group(1))) if fd_match else (pid, -1)
            if name == "openat":
                path = strings[0] if strings else ""
                if not path.startswith(root):
                    continue
                flags = args.split(",")[2] if args.count(",") >= 2 else ""
                new_key = (pid, ret)
                fds[new_key] = (path, "O_APPEND" in flags, "O_DIRECTORY" in flags)
                offsets[new_key] = 0
                if "O_CREAT" in flags:
                    ops.append(Op("create", path, trunc="O_TRUNC" in flags, fd_key=new_key))
                elif "O_DIRECTORY" not in flags:
                    ops.append(Op("open", path, fd_key=new_key))
            elif key in fds and name in ("write", "pwrite64"):
                data = _unhex(_STR.findall(args)[0]) if _STR.findall(args) else b""
                data = data[:ret]
                path, append, _ = fds[key]
                if name == "pwrite64":
                    offset = int(args.rsplit(",", 1)[1])
                elif append:
                    offset = -1
                else:
                    offset = offsets[key]
                    offsets[key] += len(data)
                ops.append(Op("write", path, data=data, offset=offset, fd_key=key))
            elif key in fds and (name in ("dup", "dup2", "dup3") or (name == "fcntl" and "F_DUPFD" in args)):
                fds[(pid, ret)] = fds[key]
                ops.append(Op("dup", fds[key][0], fd_key=key, offset=ret))
            elif key in fds and name in ("fsync", "fdatasync"):
                # A directory is named by its path now (it may have been renamed since it was opened).
                ops.append(Op("sync", fd_path if fds[key][2] else fds[key][0], fd_key=key, trunc=fds[key][2]))
            elif key in fds and name == "ftruncate":
                ops.append(Op("truncate", fds[key][0], offset=int(args.rsplit(",", 1)[1]), fd_key=key))
            elif key in fds and name == "close":
                del fds[key]
            elif name in ("rename", "renameat", "renameat2") and len(strings) >= 2 and strings[0].startswith(root):
                ops.append(Op("rename", strings[0], strings[1]))
            elif name in ("unlink", "unlinkat") and strings and strings[0].startswith(root):
                ops.append(Op("unlink", strings[0]))
            elif name in ("mkdir", "mkdirat") and strings and strings[0].startswith(root):
                ops.append(Op("mkdir", strings[0]))
    return ops


@dataclass
class Inode:
    cur: bytearray = field(default_factory=bytearray)
    dur: bytes = b""


@dataclass
class Dir:
    cur: dict[str, object] = field(default_factory=dict)  # name → Inode or Dir
    dur: dict[str, object] = field(default_factory=dict)


class Model:
    """The tree at ``root`` (recorded paths), starting from the snapshot at ``source``."""

    def __init__(self, root: str, source: str) -> None:
        self.root = os.path.realpath(root)
        self.top = self._load(source)
        self.fd_inodes: dict[tuple[int, int], Inode] = {}

    def _load(self, path: str) -> Dir:
        d = Dir()
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                d.cur[entry.name] = self._load(entry.path)
            else:
                with open(entry.path, "rb") as fp:
                    data = fp.read()
                d.cur[entry.name] = Inode(bytearray(data), data)
        d.dur = dict(d.cur)
        return d

    def _parent(self, path: str) -> tuple[Dir, str]:
        rel = os.path.relpath(os.path.realpath(os.path.dirname(path)), self.root)
        node: object = self.top
        if rel != ".":
            for part in rel.split(os.sep):
                node = node.cur[part]  # type: ignore[attr-defined]
        assert isinstance(node, Dir)
        return node, os.path.basename(path)

    def _node(self, path: str) -> object:
        if os.path.realpath(path) == self.root:
            return self.top
        parent, name = self._parent(path)
        return parent.cur[name]

    def apply(self, op: Op) -> None:
        if op.kind in ("create", "open"):
            parent, name = self._parent(op.path)
            node = parent.cur.get(name)
            if op.kind == "create" and node is None:
                node = parent.cur[name] = Inode()
            if isinstance(node, Inode):
                if op.trunc:
                    del node.cur[:]
                self.fd_inodes[op.fd_key] = node
        elif op.kind == "write":
            inode = self.fd_inodes[op.fd_key]
            offset = len(inode.cur) if op.offset < 0 else op.offset
            if len(inode.cur) < offset:
                inode.cur.extend(b"\0" * (offset - len(inode.cur)))
            inode.cur[offset:offset + len(op.data)] = op.data
        elif op.kind == "dup":
            if op.fd_key in self.fd_inodes:
                self.fd_inodes[(op.fd_key[0], op.offset)] = self.fd_inodes[op.fd_key]
        elif op.kind == "truncate":
            inode = self.fd_inodes[op.fd_key]
            del inode.cur[op.offset:]
        elif op.kind == "sync":
            node = self.fd_inodes.get(op.fd_key) if not op.trunc else self._node(op.path)
            if isinstance(node, Inode):
                node.dur = bytes(node.cur)
            elif isinstance(node, Dir):
                node.dur = dict(node.cur)
        elif op.kind == "rename":
            src_parent, src = self._parent(op.path)
            dst_parent, dst = self._parent(op.path2)
            dst_parent.cur[dst] = src_parent.cur.pop(src)
        elif op.kind == "unlink":
            parent, name = self._parent(op.path)
            parent.cur.pop(name, None)
        elif op.kind == "mkdir":
            parent, name = self._parent(op.path)
            parent.cur[name] = Dir()

    def materialise(self, dest: str, durable: bool, torn: Op | None = None) -> None:
        def write(d: Dir, path: str) -> None:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o700)
            for name, node in (d.dur if durable else d.cur).items():
                target = os.path.join(path, name)
                if isinstance(node, Dir):
                    write(node, target)
                else:
                    assert isinstance(node, Inode)
                    data = bytearray(node.dur if durable else node.cur)
                    if torn is not None and self.fd_inodes.get(torn.fd_key) is node:
                        half = torn.data[: max(1, len(torn.data) // 2)]
                        offset = len(data) if torn.offset < 0 else torn.offset
                        data[offset:offset + len(half)] = half
                    with open(target, "wb") as fp:
                        fp.write(bytes(data))
                    os.chmod(target, 0o600)
        for name in (self.top.dur if durable else self.top.cur):
            if os.path.exists(os.path.join(dest, name)):
                shutil.rmtree(os.path.join(dest, name))
        write(self.top, dest)


def crash_states(root: str, source: str, ops: list[Op]) -> list[tuple[str, int, Model, bool, Op | None]]:
    """(label, prefix length, model after the prefix, durable only?, torn write) for every crash point."""
    states = []
    for k in range(len(ops) + 1):
        model = Model(root, source)
        for op in ops[:k]:
            model.apply(op)
        states.append(("process", k, model, False, None))
        states.append(("power", k, model, True, None))
        if k and ops[k - 1].kind == "write":
            states.append(("torn", k, model, True, ops[k - 1]))
    return states
