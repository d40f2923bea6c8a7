"""README's first command works where the system Python refuses ``pip install`` (PEP 668).

The command is read from README.md and run as written — except its ``apt-get`` step (the package
it installs, python3-venv, is a tests/run peer) and with ``pyreg serve`` on a free port — by
bash with ``/usr/bin`` first on the PATH, a fresh HOME, in a copy of the checkout (``pip install
.`` builds in its source tree). Without a virtualenv step Debian's ``pip`` stops with
"externally-managed-environment" and this test fails."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.registry import REPO_ROOT, free_port

pytestmark = pytest.mark.peers

SYSTEM_PYTHON = Path("/usr/bin/python3")


def first_commands() -> list[str]:
    block = re.search(r"^```sh\n(.*?)^```", (REPO_ROOT / "README.md").read_text(), re.M | re.S)
    assert block is not None
    return [line.split("   #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_first_two_commands() -> None:
    first, second = first_commands()[:2]
    assert first.endswith("pyreg serve") and second == "tests/run"


def _externally_managed() -> bool:
    out = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return (Path(out) / "EXTERNALLY-MANAGED").exists()


def test_first_command_on_a_pep668_python(tmp_path: Path) -> None:
    if not SYSTEM_PYTHON.exists() or not _externally_managed():
        pytest.skip("needs a distribution's python3 that refuses pip install (PEP 668)")
    command = first_commands()[0]
    apt = "apt-get update && apt-get install -y python3-venv && "
    assert command.startswith(apt)
    port = free_port()
    command = command.removeprefix(apt).replace("pyreg serve", f"pyreg serve --addr 127.0.0.1:{port}")
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO_ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, src / name)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    proc = subprocess.Popen(["bash", "-c", f"set -e; {command}"], cwd=src, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600  # the pip install downloads pyreg's dependencies
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert (home / ".pyreg" / "bin" / "pyreg").exists()
        assert httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=5).status_code == 200
        assert (src / "data").is_dir()  # the embedded filesystem default: ./data
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
