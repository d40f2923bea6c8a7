"""``pyreg build`` beside the reference builders on one Dockerfile: Debian's buildah (vfs storage,
chroot isolation, roots under the test's tmp dir) and docker, its classic builder and its BuildKit
(Debian's dockerd and CLI 20.10, with its own data root, exec root and socket, no iptables, no
bridge). Every image is loaded into a store of its own with
``pyreg load``, its layers applied in order, and the trees (paths, types, modes, owners,
contents, link targets, hard links) and config fields compared.

Where they differ from each other (and which one pyreg follows) is asserted below, not hidden:
- buildah leaves the mount points it made for a RUN in the image (``/proc``, ``/sys``, ``/dev``,
  ``/run``, ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``, empty); docker's classic
  builder leaves none (its mounts live in a separate init layer); the BuildKit of docker 20.10
  (0.8) removes ``/etc/hosts`` and ``/etc/resolv.conf`` but leaves ``/proc``, ``/sys``, ``/dev``
  and ``/etc``, and BuildKit today removes every stub of its runtime spec. pyreg follows docker's
  classic builder and today's BuildKit: a ``FROM scratch`` image gets none.
- Everything else — paths, modes (setuid too), owners (COPY --chown), contents, symlinks, hard
  links, whiteouts applied — and the config fields (Env, Cmd after ENTRYPOINT, Entrypoint,
  WorkingDir, User, ExposedPorts, Labels but buildah's ``io.buildah.version``) are the same in all
  three.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.runtime import RuntimeEnv
from tests.images import BUSYBOX

pytestmark = [pytest.mark.root]

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "ln", "-s", "busybox", "/bin/sh"]
ENV PATH=/bin APP=/srv
WORKDIR /srv/app
COPY files/ ./files/
COPY --chown=1000:1000 one.txt /srv/owned.txt
RUN mkdir -p /data/sub /data/gone && echo hi > /data/sub/f && chmod 0750 /data/sub && \\
    ln -s sub/f /data/link && ln /data/sub/f /data/hard && rm /srv/app/files/a && rmdir /data/gone && \\
    chmod 4755 /data/sub/f
USER 1000
EXPOSE 8080
LABEL a=b
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""
# Debian's docker.io CLI (20.10) drives the daemon's BuildKit itself; a newer CLI wants buildx
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
STUBS = {"proc", "sys", "dev", "run", "etc", "etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv"}


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "files" / "d").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "one.txt").write_text("one\n")
    (ctx / "files" / "a").write_text("a\n")
    (ctx / "files" / "d" / "b").write_text("b\n")
    os.chmod(ctx / "files" / "d" / "b", 0o600)
    return ctx


def flatten(env: RuntimeEnv, store: Path, ref: str, dest: Path) -> dict[str, Any]:
    """Apply the image's layers in order into ``dest``; its config."""
    import json

    from pyreg.runtime.extract import extract_layer
    from pyreg.storage.localstore import LocalStore

    s = LocalStore(store)
    rec = next(r for r in s.images() if ref in r.name)
    manifest = json.loads(s.read_blob(rec.digest))
    for desc in manifest["layers"]:
        extract_layer(s.blob_path(desc["digest"]), dest, desc["mediaType"], whiteouts="apply")
    return json.loads(s.read_blob(manifest["config"]["digest"]))


def tree(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            data: Any = None
            if stat.S_ISREG(st.st_mode):
                data = Path(p).read_bytes()
                if st.st_nlink > 1:
                    data = (data, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            out[rel] = (stat.S_IFMT(st.st_mode), oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, data)
    return out


def load(env: RuntimeEnv, archive: Path, store: Path) -> None:
    env.run("load", "-i", str(archive), check=True, env={"PYREG_STORE": str(store)})


@contextlib.contextmanager
def run_dockerd(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Debian's dockerd on a socket of its own (vfs storage, no iptables, no bridge); the
    environment for the docker CLI to reach it. Stopped (and its containerd with it) on exit."""
    if not shutil.which("dockerd") or not shutil.which(DOCKER):
        pytest.skip("dockerd (Debian docker.io) is not installed")
    short = Path(tempfile.mkdtemp(prefix="pyreg-dk-"))  # a unix socket path must be short
    sock = short / "d.sock"
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(tmp_path / "docker-data"), "--exec-root", str(short / "exec"),
         "-H", f"unix://{sock}", "--pidfile", str(short / "d.pid"), "--iptables=false", "--bridge=none",
         "--storage-driver", "vfs"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dockerd.log", "w"))  # noqa: SIM115
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0",
           "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([DOCKER, "version"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("dockerd did not start here: " + (tmp_path / "dockerd.log").read_text()[-500:])
            time.sleep(0.2)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[dict[str, str]]:
    with run_dockerd(tmp_path) as env:
        yield env


def test_same_tree_and_config_as_buildah_and_docker(runtime_env: RuntimeEnv, tmp_path: Path,
                                                    dockerd: dict[str, str]) -> None:
    env = runtime_env
    ctx = make_context(tmp_path)
    trees: dict[str, dict[str, tuple[Any, ...]]] = {}
    configs: dict[str, dict[str, Any]] = {}

    env.run("build", "-t", "cmp:pyreg", str(ctx), check=True, timeout=300)
    configs["pyreg"] = flatten(env, env.store, "cmp:pyreg", tmp_path / "rootfs-pyreg")
    trees["pyreg"] = tree(tmp_path / "rootfs-pyreg")

    if shutil.which("buildah"):
        b = ["buildah", "--root", str(tmp_path / "bh-root"), "--runroot", str(tmp_path / "bh-run"),
             "--storage-driver", "vfs"]
        subprocess.run([*b, "bud", "--isolation", "chroot", "-t", "cmp", str(ctx)],
                       check=True, capture_output=True, timeout=300)
        subprocess.run([*b, "push", "cmp", f"oci-archive:{tmp_path / 'buildah.tar'}:latest"], check=True,
                       capture_output=True, timeout=300)
        load(env, tmp_path / "buildah.tar", tmp_path / "store-buildah")
        configs["buildah"] = flatten(env, tmp_path / "store-buildah", "latest", tmp_path / "rootfs-buildah")
        trees["buildah"] = tree(tmp_path / "rootfs-buildah")

    for mode, flag in (("docker", "0"), ("buildkit", "1")):
        denv = {**dockerd, "DOCKER_BUILDKIT": flag}
        r = subprocess.run([DOCKER, "build", "--network", "none", "-t", f"cmp:{mode}", str(ctx)], env=denv,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0 and mode == "buildkit":
            continue  # a docker CLI without BuildKit: the classic builder alone
        assert r.returncode == 0, r.stderr
        subprocess.run([DOCKER, "save", "-o", str(tmp_path / f"{mode}.tar"), f"cmp:{mode}"], env=denv,
                       check=True, capture_output=True, timeout=300)
        load(env, tmp_path / f"{mode}.tar", tmp_path / f"store-{mode}")
        configs[mode] = flatten(env, tmp_path / f"store-{mode}", f"cmp:{mode}", tmp_path / f"rootfs-{mode}")
        trees[mode] = tree(tmp_path / f"rootfs-{mode}")

    ours = trees["pyreg"]
    assert not STUBS & set(ours), "BuildKit's rule: no mount stubs in the image"
    assert ours["data/sub/f"][1] == "0o4755" and ours["srv/owned.txt"][2:4] == (1000, 1000)
    assert ours["data/hard"][4][1] == ours["data/sub/f"][4][1]  # one inode: a hard link kept
    for name, theirs in trees.items():
        if name == "pyreg":
            continue
        stubs = {k for k in theirs if k in STUBS}
        trimmed = {k: v for k, v in theirs.items() if k not in stubs}
        assert trimmed == ours, f"{name} differs: {set(trimmed) ^ set(ours)}"
        if name == "buildkit":  # 0.8 (docker 20.10) leaves these; BuildKit today cleans its spec's stubs
            assert stubs <= {"dev", "etc", "proc", "sys"}, stubs
        else:
            assert stubs == {"buildah": STUBS - {".dockerenv"}, "docker": set()}[name], name
    fields = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels")
    for name, cfg in configs.items():
        c = cfg["config"]
        got = {f: c.get(f) for f in fields}
        if name == "buildah":  # buildah signs its work with a label of its own
            got["Labels"] = {k: v for k, v in got["Labels"].items() if k != "io.buildah.version"}
        want = {f: configs["pyreg"]["config"].get(f) for f in fields}
        assert got == want, f"{name}: {got} != {want}"
        assert cfg["os"] == "linux" and cfg["architecture"] == configs["pyreg"]["architecture"]
        layered = [h for h in cfg["history"] if not h.get("empty_layer")]
        assert len(cfg["rootfs"]["diff_ids"]) == len(layered)  # buildah: one layer (--layers=false)
    assert len(configs["pyreg"]["rootfs"]["diff_ids"]) == 6
