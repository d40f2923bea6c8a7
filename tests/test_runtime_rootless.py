"""Rootless: ``pyreg run`` by an unprivileged user, in a user namespace where only its uid is 0.

The CLI runs as ``nobody`` on the system Python (``/usr/bin/python3``: the test interpreter may
live where nobody can read it). Its store is its own: layers are extracted by nobody, so the
five-layer image's whiteouts become ``user.overlay.*`` xattrs and overlay is mounted with
``userxattr``. No cgroups (v1 cannot be delegated to a user), so limits are refused clearly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.fixtures.runtime import REPO_ROOT, RuntimeEnv, mounts_mentioning, require_root_runtime

pytestmark = pytest.mark.root

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


class RootlessEnv:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(base),
            "PYREG_RUN_ROOT": str(base / "run"),
            "PYREG_STORE": str(base / "store"),
            "PYREG_CONFIG": str(base / "config.json"),
            "PYREG_REGISTRY": "registry.invalid:5000",
            "PYREG_NETWORK": "none",  # slirp4netns (the default) is tested in a namespace of its own
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYSTEM_PYTHON, "-m", "pyreg", *args], env=self.env, cwd=self.base,
                              capture_output=True, text=True, timeout=timeout, user=NOBODY, group=NOBODY,
                              extra_groups=[])

    def states(self) -> list[dict[str, Any]]:
        return _states(self.base / "run")


def _states(run_root: Path) -> list[dict[str, Any]]:
    import json

    out = []
    d = run_root / "containers"
    if d.is_dir():
        for sub in d.iterdir():
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads((sub / "state.json").read_text()))
    return out


def _skip_unless_possible() -> None:
    require_root_runtime()
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is needed to run pyreg as an unprivileged user")
    probe = subprocess.run([SYSTEM_PYTHON, "-c",
                            "import pyreg.client.cli, pyreg.runtime.container, pyreg.storage.localstore"],
                           user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, text=True,
                           cwd="/", env={"PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"})
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run pyreg from {REPO_ROOT} with {SYSTEM_PYTHON}: "
                    f"{probe.stderr.strip()[-300:]}")
    probe = subprocess.run(["unshare", "-U", "-r", "-m", "true"], user=NOBODY, group=NOBODY, extra_groups=[],
                           capture_output=True, text=True, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not allowed here: {probe.stderr.strip()}")


@pytest.fixture
def rootless(five_layer_image: images.TestImage) -> Iterator[RootlessEnv]:
    with rootless_env(five_layer_image) as env:
        yield env


@contextlib.contextmanager
def rootless_env(five_layer_image: images.TestImage) -> Iterator[RootlessEnv]:
    """A store nobody owns with ``five-layer`` in it; kills what it left, checks no mount is."""
    _skip_unless_possible()
    base = Path(tempfile.mkdtemp(prefix="pyreg-rootless-"))  # pytest's tmp is 0700 root: not for nobody
    os.chmod(base, 0o755)
    loader = RuntimeEnv(base)
    loader.env["PYREG_STORE"] = str(base / "store")
    loader.store = base / "store"
    loader.load_image(five_layer_image, "five-layer")  # blobs and index only: nobody extracts
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, NOBODY, NOBODY)
    env = RootlessEnv(base)
    try:
        yield env
    finally:
        for rec in env.states():
            for key in ("pid", "supervisor"):
                pid = rec.get(key)
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
        left = mounts_mentioning(str(base))
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"mounts left in the host mount table: {left}"


def test_rootless_run_with_whiteouts(rootless: RootlessEnv) -> None:
    script = "; ".join([f"test -e /{p} && echo present:{p}" for p in images.FIVE_LAYER_ABSENT]
                       + ["id -u", "cat /data/a.txt /data/opaque/new", "ls -A /data/opaque",
                          "echo made > /made; cat /made", "hostname"])
    r = rootless.run("run", "--rm", "--hostname", "rl", "five-layer", "sh", "-c", script + "; true")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "A", "new", "new", "made", "rl"], r.stdout + r.stderr
    assert rootless.states() == []
    # the layers were extracted by nobody, whiteouts as user xattrs
    layers = list((rootless.base / "store" / "layers" / "sha256").iterdir())
    assert layers and all(p.stat().st_uid == NOBODY for p in layers)
    def is_whiteout(p: Path) -> bool:
        with contextlib.suppress(OSError):
            return os.getxattr(p, "user.overlay.whiteout") == b"y"
        return False

    found = [p for layer in layers for p in (layer / "diff").rglob("gone.txt") if is_whiteout(p)]
    assert len(found) == 1 and found[0].stat().st_size == 0


def test_rootless_detached_exec_stop_rm(rootless: RootlessEnv) -> None:
    r = rootless.run("run", "-d", "--name", "rl", "five-layer", "sh", "-c",
                     'trap "exit 3" TERM; echo up; while :; do sleep 0.05; done')
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    rec = next(s for s in rootless.states() if s["id"] == cid)
    # root inside, nobody outside
    uid_line = next(ln for ln in Path(f"/proc/{rec['pid']}/status").read_text().splitlines()
                    if ln.startswith("Uid:"))
    assert uid_line.split()[1] == str(NOBODY)
    assert Path(f"/proc/{rec['pid']}/ns/user").resolve() != Path("/proc/self/ns/user").resolve()
    r = rootless.run("exec", "rl", "sh", "-c", "id -u; hostname; ps -o pid | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["0", cid[:12]]
    assert "rl" in rootless.run("ps").stdout
    deadline = time.monotonic() + 30
    while "up" not in rootless.run("logs", "rl").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rootless.run("stop", "rl").returncode == 0
    rec = next(s for s in rootless.states() if s["id"] == cid)
    assert (rec["status"], rec["exit_code"]) == ("exited", 3)
    assert rootless.run("rm", "rl").returncode == 0
    assert rootless.states() == []


def test_rootless_refuses_what_it_cannot_do(rootless: RootlessEnv) -> None:
    r = rootless.run("run", "--rm", "--memory", "32m", "five-layer", "true")
    assert r.returncode == 125 and "need root" in r.stderr
    r = rootless.run("run", "--rm", "-u", "1000", "five-layer", "true")
    assert r.returncode == 125 and "only root" in r.stderr
    assert rootless.states() == []


def test_rootless_logs_times_and_cp_stopped(rootless: RootlessEnv) -> None:
    """Rootless too: line times in the log, and cp both ways on a stopped container (its overlay
    mounted with userxattr in a user and mount namespace of the copy's own)."""
    r = rootless.run("run", "-d", "--name", "rl", "five-layer", "sh", "-c", "echo hi; echo made > /made")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while next(s for s in rootless.states() if s["name"] == "rl")["status"] != "exited":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = rootless.run("logs", "-t", "rl").stdout
    assert out.endswith(" hi\n") and out[:4].isdigit(), out
    assert rootless.run("logs", "--since", "1h", "rl").stdout == "hi\n"
    r = rootless.run("cp", "rl:/made", str(rootless.base / "made"))
    assert r.returncode == 0, r.stderr
    assert (rootless.base / "made").read_text() == "made\n"
    (rootless.base / "in.txt").write_text("in\n")
    os.chown(rootless.base / "in.txt", NOBODY, NOBODY)
    r = rootless.run("cp", str(rootless.base / "in.txt"), "rl:/data/")
    assert r.returncode == 0, r.stderr
    r = rootless.run("cp", "rl:/data/a.txt", str(rootless.base / "a.txt"))  # from an image layer
    assert r.returncode == 0 and (rootless.base / "a.txt").read_text() == "A\n", r.stderr
    r = rootless.run("cp", "rl:/data/in.txt", str(rootless.base / "back"))
    assert r.returncode == 0 and (rootless.base / "back").read_text() == "in\n", r.stderr
    assert rootless.run("rm", "rl").returncode == 0
