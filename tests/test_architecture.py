"""The package's layers, checked from the import graph (``relay/`` read as source, nothing run).

Rule 1: the pure folders (``core``, ``detect``) import nothing that does I/O: no asyncio,
        sockets, Redis, SMTP or HTTP library, no process or file-system module, and from the
        relay only each other and the shared vocabulary (model, errors, replies, rulefiles,
        settings). They also call no ``open`` / ``read_*`` / ``write_*``: rule files are read
        by ``rulefiles`` before the core sees them.
Rule 2: no import cycle between folders. A node is a folder (``relay.store``) or, for the
        modules at the package root, the module itself (``relay.pipeline``), so the conductor
        may import the layers and the layers may import the vocabulary without that being a
        cycle. Every import counts, including those inside functions and ``TYPE_CHECKING``.
Rule 3: no module is over 400 lines (STYLE.md: modules under ~400 lines).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "relay"
PURE = ("relay.core", "relay.detect", "relay.smtp")
VOCABULARY = frozenset(
    {
        "relay",
        "relay.model",
        "relay.errors",
        "relay.replies",
        "relay.rulefiles",
        "relay.settings",
        "relay.settings_controllers",
        "relay.settings_redis",
        "relay.settings_retention",
        "relay.settings_upstream",
        "relay.settings_web",
    }
)
# Standard-library and third-party modules a pure stage may use: computation only.
PURE_EXTERNAL = frozenset(
    {
        "__future__", "base64", "binascii", "bisect", "codecs", "collections", "dataclasses",
        "datetime", "dkim", "email", "enum", "fnmatch", "functools", "hashlib", "hmac", "html",
        "ipaddress", "itertools", "json", "math", "operator", "quopri", "re", "string",
        "struct", "threading", "typing", "unicodedata", "urllib", "zlib", "zoneinfo", "re2",
        "ahocorasick", "heapq", "types", "abc", "copy", "textwrap",
    }
)  # fmt: skip
IO_CALLS = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes"})
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "rules" in path.relative_to(PACKAGE).parts:
            continue
        yield module_name(path), path, ast.parse(path.read_text(), str(path))


def imports(name: str, tree: ast.Module, is_package: bool) -> Iterator[str]:
    """Every module ``tree`` imports, absolute; ``from relay.x import y`` yields ``relay.x.y``
    when that is a module, else ``relay.x``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")
                parent = parent if is_package else parent[:-1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def graph() -> dict[str, set[str]]:
    known = {name for name, _, _ in modules()}
    edges: dict[str, set[str]] = {}
    for name, path, tree in modules():
        found = set()
        for target in imports(name, tree, path.name == "__init__.py"):
            if target in known and target != name:
                found.add(target)
        edges[name] = found
    return edges


def node_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) <= 2:
        return module  # the package itself or a root module
    return ".".join(parts[:2])


def test_pure_folders_import_no_io() -> None:
    problems = []
    for name, path, tree in modules():
        if not name.startswith(PURE):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                targets = []
            for target in targets:
                top = target.split(".")[0]
                if top == "relay":
                    if not (target.startswith(PURE) or target in VOCABULARY):
                        problems.append(f"{path}:{getattr(node, 'lineno', 0)}: imports {target}")
                elif top not in PURE_EXTERNAL:
                    problems.append(f"{path}:{getattr(node, 'lineno', 0)}: imports {target}")
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if called in IO_CALLS:
                    problems.append(f"{path}:{node.lineno}: calls {called}()")
    assert problems == []


def test_vocabulary_imports_no_layer() -> None:
    edges = graph()
    for name in VOCABULARY | {"relay.passwords"}:
        layered = sorted(
            t for t in edges.get(name, ()) if t not in VOCABULARY | {"relay.passwords"}
        )
        assert layered == [], f"{name} imports {layered}"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_cycle_between_folders() -> None:
    folders: dict[str, set[str]] = {}
    for source, targets in graph().items():
        here = node_of(source)
        folders.setdefault(here, set())
        for target in targets:
            if node_of(target) != here and target != "relay":
                folders[here].add(node_of(target))
    assert _cycle(folders) is None


def test_no_cycle_between_modules() -> None:
    edges = {k: {t for t in v if t != "relay"} for k, v in graph().items()}
    assert _cycle(edges) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_modules_stay_small() -> None:
    long = {
        str(path): n
        for _, path, _ in modules()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
