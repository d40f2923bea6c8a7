"""``pyreg save`` / ``pyreg load``: docker-grade archives, read by skopeo and podman, and hostile ones.

A saved docker-archive carries both ``manifest.json`` (old docker, skopeo/podman's docker-archive)
and an OCI layout (docker 25+, oci-archive readers): both are checked with skopeo. Bad archives
(empty, truncated, not a tar, member names that climb out with ``..``, links out of the archive, a
layer that does not match its digest) fail with one line and leave no image in the store.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import REPO_ROOT, ClientEnv, tar_layer
from tests.fixtures.peers import Podman, Skopeo
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers

FIVE = "example.com/team/five:1"
BUSYBOX = "example.com/library/busybox:1"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def store_names(env: ClientEnv) -> list[str]:
    index = env.store / "index.json"
    if not index.exists():
        return []
    return [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads(index.read_text())["manifests"]]


def load_layout(env: ClientEnv, image: TestImage, name: str, tmp_path: Path) -> None:
    """Put a test image in the local store under ``name`` (through an oci-archive pyreg writes)."""
    archive = tmp_path / f"{image.name}.oci.tar"
    env.run("copy", f"oci:{image.layout}:{image.tag}", f"oci-archive:{archive}:{name}")
    env.run("load", "-i", str(archive))


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("pyreg: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_save_is_docker_and_oci_at_once(client_env: ClientEnv, skopeo: Skopeo, podman: Podman,
                                        five_layer_image: TestImage, tmp_path: Path) -> None:
    load_layout(client_env, five_layer_image, FIVE, tmp_path)
    archive = tmp_path / "five.tar"
    client_env.run("save", FIVE, "-o", str(archive))  # docker-archive by default
    names = members(archive)
    assert {"manifest.json", "repositories", "index.json", "oci-layout"} <= set(names)
    with tarfile.open(archive) as tar:
        (item,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert item["RepoTags"] == [FIVE]
    assert item["Config"] == f"blobs/sha256/{five_layer_image.config_digest[7:]}"
    # an old reader (manifest.json): skopeo's docker-archive; the same config and layer content
    skopeo.copy(f"docker-archive:{archive}:{FIVE}", f"oci:{tmp_path / 'old'}:x")
    old = read_layout(tmp_path / "old", "x")
    assert old.config_digest == five_layer_image.config_digest
    # a new reader (the OCI layout in the same tar): the image's own manifest digest
    skopeo.copy(f"oci-archive:{archive}:{FIVE}", f"oci:{tmp_path / 'new'}:x")
    assert read_layout(tmp_path / "new", "x").manifest_digest == five_layer_image.manifest_digest
    # podman load, and pyreg load into a fresh store: the same image again
    podman.run("load", "-i", str(archive))
    assert podman.image_inspect(FIVE)["Id"] == five_layer_image.config_digest[7:]
    client_env.env["PYREG_STORE"] = str(tmp_path / "store2")
    out = client_env.run("load", "-i", str(archive)).stdout
    assert out.strip() == f"Loaded image: {FIVE}"
    (entry,) = json.loads((tmp_path / "store2" / "index.json").read_text())["manifests"]
    assert entry["digest"] == five_layer_image.manifest_digest
    # --format oci-archive: the layout alone
    client_env.run("save", "--format", "oci-archive", FIVE, "-o", str(tmp_path / "oci.tar"))
    assert "manifest.json" not in members(tmp_path / "oci.tar")
    skopeo.copy(f"oci-archive:{tmp_path / 'oci.tar'}:{FIVE}", f"oci:{tmp_path / 'oci'}:x")
    assert read_layout(tmp_path / "oci", "x").manifest_digest == five_layer_image.manifest_digest


def test_save_to_stdout_and_load_from_stdin(client_env: ClientEnv, five_layer_image: TestImage,
                                            tmp_path: Path) -> None:
    load_layout(client_env, five_layer_image, FIVE, tmp_path)
    archive = tmp_path / "piped.tar"
    with open(archive, "wb") as out:
        subprocess.run([sys.executable, "-m", "pyreg", "save", FIVE], env=client_env.env, cwd=REPO_ROOT,
                       stdout=out, check=True, timeout=300)
    assert "manifest.json" in members(archive)
    # through a pipe (nothing seekable), read by GNU tar
    save = subprocess.Popen([sys.executable, "-m", "pyreg", "save", "--format", "oci-archive", FIVE],
                            env=client_env.env, cwd=REPO_ROOT, stdout=subprocess.PIPE)
    listing = subprocess.run(["tar", "-tf", "-"], stdin=save.stdout, capture_output=True, text=True,
                             timeout=300, check=True).stdout.split()
    assert save.wait(timeout=300) == 0
    manifest = f"blobs/sha256/{five_layer_image.manifest_digest[7:]}"
    assert {"oci-layout", "index.json", manifest} <= set(listing)
    client_env.env["PYREG_STORE"] = str(tmp_path / "store2")
    with open(archive, "rb") as f:
        proc = subprocess.run([sys.executable, "-m", "pyreg", "load"], env=client_env.env, cwd=REPO_ROOT,
                              stdin=f, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"Loaded image: {FIVE}"
    assert store_names(client_env) == [FIVE]


def test_multi_image_archive_and_ambiguous_tag(client_env: ClientEnv, skopeo: Skopeo,
                                               five_layer_image: TestImage, busybox_image: TestImage,
                                               tmp_path: Path) -> None:
    load_layout(client_env, five_layer_image, FIVE, tmp_path)
    load_layout(client_env, busybox_image, BUSYBOX, tmp_path)
    archive = tmp_path / "two.tar"
    client_env.run("save", "-o", str(archive), FIVE, BUSYBOX)
    # skopeo picks each image out of manifest.json by name
    skopeo.copy(f"docker-archive:{archive}:{BUSYBOX}", f"oci:{tmp_path / 'bb'}:x")
    assert read_layout(tmp_path / "bb", "x").config_digest == busybox_image.config_digest
    client_env.env["PYREG_STORE"] = str(tmp_path / "store2")
    line = one_error(client_env.run("load", "-i", str(archive), "--tag", "mine:1", check=False))
    assert "--tag is ambiguous" in line and "2 images" in line
    assert store_names(client_env) == []  # nothing loaded
    out = client_env.run("load", "-i", str(archive)).stdout.splitlines()
    assert sorted(out) == sorted([f"Loaded image: {FIVE}", f"Loaded image: {BUSYBOX}"])
    assert sorted(store_names(client_env)) == sorted([FIVE, BUSYBOX])
    # a docker-archive that names one image, read with pyreg copy by name and by position
    client_env.run("copy", f"docker-archive:{archive}:@1", f"oci:{tmp_path / 'second'}:x")
    client_env.run("copy", f"docker-archive:{archive}:{FIVE}", f"oci:{tmp_path / 'five'}:x")
    for layout in ("second", "five"):
        index = json.loads((tmp_path / layout / "index.json").read_text())
        assert len(index["manifests"]) == 1


# ------------------------------------------------------------------------------------ hostile input

def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    info.linkname = link
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def docker_archive(path: Path, *, layer_name: str = "l1/layer.tar", config_diff_id: str | None = None,
                   extra: Callable[[tarfile.TarFile], None] | None = None, layer_link: str | None = None,
                   second_bad: bool = False, compress: bool = False) -> Path:
    """A small docker-save tarball; the keyword arguments break it in one way each."""
    layer, diff_id = tar_layer({"etc/hello": b"hello\n"}, compress=compress)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [config_diff_id or diff_id]}}).encode()
    items = [{"Config": "config.json", "RepoTags": ["example.com/ok:1"], "Layers": [layer_name]}]
    with tarfile.open(path, "w") as tar:
        _add(tar, "config.json", config)
        if layer_link is not None:
            _add(tar, "l1/layer.tar", kind=tarfile.SYMTYPE, link=layer_link)
        elif not layer_name.startswith(("/", "..")):
            _add(tar, layer_name, layer)
        if second_bad:
            bad_config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha(b"other")]}}).encode()
            _add(tar, "bad.json", bad_config)
            _add(tar, "bad/layer.tar", layer)
            items.append({"Config": "bad.json", "RepoTags": ["example.com/bad:1"],
                          "Layers": ["bad/layer.tar"]})
        if extra is not None:
            extra(tar)
        _add(tar, "manifest.json", json.dumps(items).encode())
    return path


def oci_archive_with_bad_blob(path: Path, tmp_path: Path, image: TestImage, env: ClientEnv) -> Path:
    good = tmp_path / "good-oci.tar"
    env.run("copy", f"oci:{image.layout}:{image.tag}", f"oci-archive:{good}:example.com/ok:1")
    victim = f"blobs/sha256/{image.layer_digests[-1][7:]}"
    with tarfile.open(good) as src, tarfile.open(path, "w") as dst:
        for info in src.getmembers():
            f = src.extractfile(info) if info.isfile() else None
            data = f.read() if f is not None else None
            if info.name == victim:
                assert data is not None
                data = bytes([data[0] ^ 1]) + data[1:]  # same size, other bytes
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


HOSTILE: dict[str, tuple[Callable[[Path, Path, Any, ClientEnv], Path], str]] = {
    "empty": (lambda p, t, i, e: (p.write_bytes(b""), p)[1], "empty input"),
    "not-a-tar": (lambda p, t, i, e: (p.write_bytes(b"hello, I am text\n" * 200), p)[1], "not a tar archive"),
    "gzip-garbage": (lambda p, t, i, e: (p.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00garbage" * 50), p)[1],
                     "damaged gzip stream"),
    "truncated": (lambda p, t, i, e: (p.write_bytes(docker_archive(t / "full.tar").read_bytes()[:3000]),
                                      p)[1], "truncated"),
    "dotdot-member": (lambda p, t, i, e: docker_archive(p, extra=lambda tar: _add(tar, "../../evil", b"x")),
                      "unsafe member name"),
    "absolute-member": (lambda p, t, i, e: docker_archive(p, extra=lambda tar: _add(tar, "/etc/evil", b"x")),
                        "unsafe member name"),
    "dotdot-layer-path": (lambda p, t, i, e: docker_archive(p, layer_name="../../etc/passwd"),
                          "unsafe member name"),
    "symlink-out": (lambda p, t, i, e: docker_archive(p, layer_link="../../../etc/passwd"),
                    "links outside the archive"),
    "layer-not-its-diff-id": (lambda p, t, i, e: docker_archive(p, config_diff_id=sha(b"something else")),
                              "digest mismatch"),
    "gzip-layer-not-its-diff-id": (lambda p, t, i, e: docker_archive(p, compress=True,
                                                                     config_diff_id=sha(b"else")),
                                   "does not match its diff ID"),
    "second-image-bad": (lambda p, t, i, e: docker_archive(p, second_bad=True), "digest mismatch"),
    "oci-blob-not-its-digest": (lambda p, t, i, e: oci_archive_with_bad_blob(p, t, i, e), "digest mismatch"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_bad_archives_load_nothing(client_env: ClientEnv, five_layer_image: TestImage, tmp_path: Path,
                                   case: str) -> None:
    make, needle = HOSTILE[case]
    path = make(tmp_path / "in.tar", tmp_path, five_layer_image, client_env)
    client_env.env["PYREG_STORE"] = str(tmp_path / "fresh-store")
    line = one_error(client_env.run("load", "-i", str(path), check=False))
    assert needle in line, line
    assert store_names(client_env) == []
    if "digest" in needle:
        # the bytes that did not match were not kept under any name
        stored = tmp_path / "fresh-store" / "blobs" / "sha256"
        for blob in stored.iterdir() if stored.exists() else []:
            assert sha(blob.read_bytes()) == f"sha256:{blob.name}"
    # copying from it is refused the same way, and names nothing in the target
    one_error(client_env.run("copy", f"docker-archive:{path}", f"oci:{tmp_path / 'out'}:x", check=False))
    assert not (tmp_path / "out" / "index.json").exists()


def test_unnamed_image_loads_by_id(client_env: ClientEnv, five_layer_image: TestImage,
                                   tmp_path: Path) -> None:
    """An archive entry without a name loads as docker does: ``Loaded image ID: <config digest>``."""
    archive = tmp_path / "unnamed.tar"
    client_env.run("copy", five_layer_image.oci_ref, f"oci-archive:{archive}")
    out = client_env.run("load", "-i", str(archive)).stdout.strip()
    assert out == f"Loaded image ID: {five_layer_image.config_digest}"


def test_no_archive_to_or_from_a_terminal(client_env: ClientEnv, tmp_path: Path) -> None:
    """``save`` without ``-o`` refuses to write binary to a terminal, and ``load`` without ``-i``
    to wait on one, as docker does (one line, exit 1)."""
    import os
    import pty

    for args, needle in ((["save", "example.com/x:1"], "refusing to write an archive to a terminal"),
                         (["load"], "stdin is a terminal")):
        controller, terminal = pty.openpty()
        try:
            std: dict[str, Any] = ({"stdout": terminal} if args[0] == "save"
                                   else {"stdin": terminal, "stdout": subprocess.PIPE})
            proc = subprocess.run([sys.executable, "-m", "pyreg", *args], env=client_env.env,
                                  cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, timeout=60, **std)
        finally:
            os.close(terminal)
            os.close(controller)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and needle in lines[0], proc.stderr


def test_compressed_archive_and_compressed_layer_load(client_env: ClientEnv, tmp_path: Path) -> None:
    """``docker save | gzip`` loads, and a layer kept gzip'd inside a docker archive is stored as
    docker stores it: uncompressed, under its diff ID."""
    import gzip

    plain = docker_archive(tmp_path / "plain.tar", compress=True)
    packed = tmp_path / "packed.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert client_env.run("load", "-i", str(packed)).stdout.strip() == "Loaded image: example.com/ok:1"
    _, diff_id = tar_layer({"etc/hello": b"hello\n"}, compress=False)
    assert (client_env.store / "blobs" / "sha256" / diff_id[7:]).is_file()
