"""DESIGN.md's dependency rules, checked on the source: every import of every module, including
imports inside functions and ``importlib.import_module("...")`` / ``__import__("...")`` calls with
a literal name.

- ``storage`` imports none of ``registry``, ``client``, ``runtime``;
- ``registry`` imports no ``client`` or ``runtime``;
- ``runtime`` imports no ``registry`` or ``client`` (the CLI hands it what it needs: a pull);
- ``client`` imports no ``registry`` and, of the runtime, only its public face ``runtime.api``.
  ``client/cli.py``'s ``COMMANDS`` table names command modules of every package as strings,
  which is not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "registry", "client", "runtime")

# package -> packages it must never import
FORBIDDEN = {
    "storage": {"registry", "client", "runtime"},
    "registry": {"client", "runtime"},
    "runtime": {"registry", "client"},
    "client": {"registry"},
}
# package -> the only modules of a package it may import (and their submodules: none here)
ONLY_PUBLIC = {"client": {"runtime": {"runtime.api"}}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, wherever it stands; ``module``
    is the file's module name (default: from its path in the repository)."""
    tree = ast.parse(path.read_text(), str(path))
    module = module or module_name(path)
    package = module.rpartition(".")[0] if path.name != "__init__.py" else module
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from runtime import state`` imports runtime.state: name the submodule when it is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (REPO / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                    (REPO / Path(*sub.split(".")) / "__init__.py").is_file()
                out.append((node.lineno, sub if is_module else target))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = getattr(func, "attr", None) or getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value))
    return out


def violations(package: str) -> list[str]:
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, target in imports_of(path):
            top = target.partition(".")[0]
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if top in FORBIDDEN[package]:
                found.append(where)
            allowed = ONLY_PUBLIC.get(package, {}).get(top)
            if allowed is not None and target not in allowed:
                found.append(f"{where} (only {', '.join(sorted(allowed))} is public)")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_rules(package: str) -> None:
    assert violations(package) == []


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A checker that finds nothing proves nothing: it must see imports in functions, ``from X
    import submodule``, relative imports and ``importlib.import_module`` of a literal name."""
    sample = tmp_path / "probe.py"
    sample.write_text(
        "import os\n"
        "def f():\n"
        "    from client import cli\n"
        "    import registry.app\n"
        "    import importlib\n"
        "    importlib.import_module('client.common')\n"
        "    from .commands import run\n"
    )
    found = [t for _, t in imports_of(sample, "runtime.probe")]
    assert sorted(found) == sorted(["os", "client.cli", "registry.app", "importlib", "client.common",
                                   "runtime.commands.run"])


def test_client_inspect_reads_containers_through_the_runtime_api() -> None:
    targets = [t for _, t in imports_of(REPO / "client" / "commands" / "inspect.py")]
    assert "runtime.api" in targets
    assert not [t for t in targets if t.startswith("runtime.") and t != "runtime.api"]
