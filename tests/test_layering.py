"""Imports flow one way: proxy → addons → {policies, certs}. Checked, not hoped for."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names) | {"__future__"}

ALLOWED = {
    "certs": {"certs", "cryptography"},
    "policies": {"policies", "certs", "yaml", "re2"},
    "addons": {"addons", "certs", "policies", "mitmproxy", "OpenSSL", "cryptography", "proxy.store", "proxy.metrics"},
}
# Composition roots that load into stock mitmdump: they wire the process like proxy/ does.
ENTRY_POINTS = {Path("addons/gateway.py")}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _allowed(name: str, allowed: set[str]) -> bool:
    top = name.split(".")[0]
    return top in STDLIB or any(name == a or name.startswith(a + ".") for a in allowed)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_its_layer(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) not in ENTRY_POINTS
        for name in sorted(_imports(path))
        if not _allowed(name, ALLOWED[package])
    ]
    assert offenders == []
