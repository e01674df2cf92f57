"""No module imports a layer above its own (lazy imports inside functions included).

schemas ← queue ← producers ← consumer ← recovery ← sync ← cli. The consumer
sits above the producers because it enqueues what it tails from watched
files. The top-level helpers (paths, fsutil, errors, values, …) sit below
everything; ``config`` reads the schema registry, and the package's
``__init__``, ``__main__`` and ``cli`` sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "codi_queue"
RANK = {"schemas": 1, "config": 2, "queue": 3, "producers": 4, "consumer": 5, "recovery": 6, "sync": 7}
TOP = {"cli", "__init__", "__main__"}


def _layer(parts: tuple[str, ...]) -> int:
    """The rank of a module given its path inside the package (a module name or a package)."""
    head = parts[0].removesuffix(".py")
    if head in TOP:
        return 99
    return RANK.get(head, 0)  # plain helpers: paths, fsutil, errors, values, timestamps, ids, ...


def _imports(path: Path) -> list[tuple[int, tuple[str, ...]]]:
    rel = path.relative_to(ROOT).parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-1])[: len(rel) - node.level] if node.level > 1 else list(rel[:-1])
                target = tuple(base + [p for p in (node.module or "").split(".") if p])
            elif (node.module or "").startswith("codi_queue."):
                target = tuple(node.module.split(".")[1:])  # type: ignore[union-attr]
            else:
                continue
            if target:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("codi_queue."):
                    found.append((node.lineno, tuple(alias.name.split(".")[1:])))
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        mine = _layer(path.relative_to(ROOT).parts)
        for line, target in _imports(path):
            theirs = _layer(target)
            if theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {'.'.join(target)}")
    assert upward == []


def test_the_check_sees_an_upward_import() -> None:
    probe = ROOT / "queue" / "spool.py"
    assert _layer(probe.relative_to(ROOT).parts) == RANK["queue"]
    assert _layer(("consumer", "loop")) > _layer(("queue", "spool"))
    lines = [t for _, t in _imports(ROOT / "consumer" / "loop.py")]
    assert ("queue", "spool") in lines  # relative imports are resolved to package paths
