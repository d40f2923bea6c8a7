"""DESIGN.md's dependency rules for the content model: ``storage`` imports nothing of ours, and
``registry`` imports only ``storage`` (never ``client`` or ``runtime``). Read from the source with
``ast``, so an import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("storage", "registry", "client", "runtime")


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, top-level package of ours) for every import in ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in OURS:
                    found.append((str(path.relative_to(ROOT)), top))
    return found


@pytest.mark.parametrize("package,allowed", [("storage", {"storage"}), ("registry", {"registry", "storage"})])
def test_imports_follow_the_design(package: str, allowed: set[str]) -> None:
    bad = [(f, top) for f, top in _imports(package) if top not in allowed]
    assert bad == []
