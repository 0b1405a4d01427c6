"""The house's rules, checked rather than hoped for (SPEC §1, STYLE "The house").

Imports flow one way: ``proxy → addons → {policies, certs}`` and ``agent → {policies, certs}``.
Every package is checked, and no package's modules import each other in a circle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
PACKAGES = ("certs", "policies", "addons", "proxy", "agent")

# What each package may import besides the standard library and itself.
ALLOWED: dict[str, set[str]] = {
    "certs": {"cryptography"},
    "policies": {"certs", "yaml", "re2"},
    "addons": {"certs", "policies", "mitmproxy", "OpenSSL", "cryptography", "prometheus_client"},
    "agent": {"certs", "policies", "cryptography", "h11"},  # h11: the local proxy's HTTP framing
    # the server: everything but the agent
    "proxy": {
        "addons", "certs", "policies", "mitmproxy", "aiohttp", "cryptography", "yaml",
        "prometheus_client", "OpenSSL", "certifi", "psycopg",
    },
}  # fmt: skip
FORBIDDEN: dict[str, set[str]] = {
    "certs": {"mitmproxy", "aiohttp", "proxy", "agent", "addons", "policies"},
    "policies": {"mitmproxy", "aiohttp", "proxy", "agent", "addons"},
    "addons": {"proxy", "agent", "aiohttp"},
    "agent": {"proxy", "addons", "mitmproxy", "aiohttp"},
    "proxy": {"agent"},
}


def _modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``path`` imports, wherever in the file (functions included)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_its_layer(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in _modules(package)
        for name in sorted(_imports(path, module))
        if _top(name) not in STDLIB and _top(name) not in allowed
    ]
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_package_never_imports_what_its_layer_forbids(package: str) -> None:
    """Stated apart from the allow list, so that widening it cannot quietly open a forbidden door."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for module, path in _modules(package)
        for name in sorted(_imports(path, module))
        if _top(name) in FORBIDDEN[package]
    ]
    assert offenders == []


def _module_graph() -> dict[str, set[str]]:
    modules = {module: path for package in PACKAGES for module, path in _modules(package)}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, module):
            # `from a.b import c` names module a.b.c when it exists, else the module a.b
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()
    for start in sorted(graph):
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        on_path = [start]
        if start in done:
            continue
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                on_path.pop()
                done.add(node)
            elif child in on_path:
                return [*on_path[on_path.index(child) :], child]
            elif child not in done:
                stack.append((child, iter(sorted(graph.get(child, ())))))
                on_path.append(child)
    return None


def test_no_module_imports_itself_through_others() -> None:
    """No circle among our modules: a package ``__init__`` re-exporting its modules counts too."""
    graph = _module_graph()
    # A package's __init__ importing its own submodules is the package's interface, not a circle.
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    assert _find_cycle(graph) is None


def test_cycle_finder_finds_a_circle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
