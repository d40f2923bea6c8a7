"""pyreg installs under one import name: ``pip install`` adds ``pyreg`` and nothing else.

DESIGN.md keeps the repository's top-level folders (``storage/``, ``registry/``, …) and ships them
as ``pyreg.storage``, ``pyreg.registry``, … through pyproject's ``package-dir``; generic top-level
names like ``client`` or ``storage`` would collide with other projects in site-packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "registry", "client", "runtime")


def declared_packages() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_package_in_the_tree_is_declared() -> None:
    """A new subpackage missing from pyproject's list would be left out of the wheel silently."""
    found = {"pyreg", *(".".join(("pyreg", *init.parent.relative_to(REPO).parts))
                        for top in PACKAGES for init in (REPO / top).rglob("__init__.py"))}
    assert found == declared_packages()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("pyreg-*.whl")
    return built


def test_the_wheel_holds_only_pyreg(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"pyreg"}
    for package in PACKAGES:
        assert f"pyreg/{package}/__init__.py" in names
    assert "pyreg/runtime/seccomp_default.json" in names  # package data travels too
    assert any(n.startswith("pyreg/registry/ui/static/") for n in names)


def test_the_installed_command_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Installed (not editable) into a fresh environment, run from elsewhere: ``pyreg`` works,
    ``python -m pyreg`` works, and the install adds nothing but ``pyreg`` to site-packages."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    site_packages = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    before = {p.name for p in Path(site_packages).iterdir()}
    # without PYTHONPATH: a checkout on it (with the egg-info the wheel build leaves there) would
    # make pip think pyreg is installed already and install nothing
    no_path = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300, env=no_path)
    clean = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([env_dir / "bin" / "pyreg", "--version"], env=clean, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pyreg ")
    out = subprocess.run([python, "-m", "pyreg", "images", "--help"], env=clean, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert "usage: pyreg images" in out.stdout
    probe = "import pyreg.storage.digest as d, site; print(d.__file__); print(site.getsitepackages()[0])"
    out = subprocess.run([python, "-c", probe], env=clean, cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    where, site_packages = out.stdout.splitlines()
    assert where.startswith(str(env_dir))
    # what the install added to the environment's import path: pyreg and its metadata, nothing else
    added = {p.name for p in Path(site_packages).iterdir()} - before
    assert {n for n in added if not n.endswith((".dist-info", ".pth")) and n != "__pycache__"} == {"pyreg"}
