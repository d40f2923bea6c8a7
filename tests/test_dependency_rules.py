"""DESIGN.md's dependency rules, checked on the source: every import of every module, including
imports inside functions and ``importlib.import_module("...")`` / ``__import__("...")`` calls with
a literal name.

- ``storage`` imports none of ``registry``, ``client``, ``runtime``;
- ``registry`` imports no ``client`` or ``runtime``;
- ``runtime`` imports no ``registry`` or ``client`` (the CLI hands it what it needs: a pull);
- ``client`` imports no ``registry`` and, of the runtime, only its public face ``runtime.api``;
- every import of our own packages names them as installed: ``pyreg.storage``, never ``storage``.
  ``client/cli.py``'s ``COMMANDS`` table names command modules of every package as strings,
  which is not an import.
"""

from __future__ import annotations

import ast
import sys
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
ONLY_PUBLIC = {"client": {"runtime": {"pyreg.runtime.api"}}}


def module_name(path: Path) -> str:
    """The module's installed name: ``storage/digest.py`` is ``pyreg.storage.digest``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["pyreg", *parts])


def source_of(module: str) -> Path:
    """Where ``pyreg.X.y`` lives in the checkout (``X/y``), without the ``.py``."""
    return REPO / Path(*module.removeprefix("pyreg.").split("."))


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
                is_module = source_of(sub).with_suffix(".py").is_file() or \
                    (source_of(sub) / "__init__.py").is_file()
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
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if target.partition(".")[0] in PACKAGES:
                found.append(f"{where} (our packages are imported as pyreg.{target})")
                continue
            if not target.startswith("pyreg."):
                continue
            top = target.removeprefix("pyreg.").partition(".")[0]
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
        "    from pyreg.client import cli\n"
        "    import pyreg.registry.app\n"
        "    import importlib\n"
        "    importlib.import_module('pyreg.client.common')\n"
        "    from .commands import run\n"
    )
    found = [t for _, t in imports_of(sample, "pyreg.runtime.probe")]
    assert sorted(found) == sorted(["os", "pyreg.client.cli", "pyreg.registry.app", "importlib",
                                   "pyreg.client.common",
                                   "pyreg.runtime.commands.run"])


def test_client_inspect_reads_containers_through_the_runtime_api() -> None:
    targets = [t for _, t in imports_of(REPO / "client" / "commands" / "inspect.py")]
    assert "pyreg.runtime.api" in targets
    assert not [t for t in targets if t.startswith("pyreg.runtime.") and t != "pyreg.runtime.api"]


def test_a_bare_package_import_is_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``import storage`` works in a checkout but not once installed: the rule must catch it."""
    fake = tmp_path / "storage"
    fake.mkdir()
    (fake / "probe.py").write_text("import storage.digest\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations("storage") == ["storage/probe.py:1 imports storage.digest "
                                     "(our packages are imported as pyreg.storage.digest)"]
