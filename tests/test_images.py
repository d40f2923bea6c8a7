"""The test images themselves: reproducible, complete, runnable (everything else relies on them)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import images
from tests.images import TestImage, TestIndex


def members(image: TestImage, index: int) -> dict[str, tarfile.TarInfo]:
    return {m.name.rstrip("/"): m for m in images.layer_members(image.layers[index])}


def test_builds_are_reproducible(busybox_image: TestImage, tmp_path: Path) -> None:
    again = images.build_busybox_image(tmp_path / "again")
    assert again.manifest_digest == busybox_image.manifest_digest
    assert again.layer_digests == busybox_image.layer_digests


def test_layout_is_consistent(five_layer_image: TestImage) -> None:
    layout = five_layer_image.layout
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == five_layer_image.manifest_digest
    for digest in [five_layer_image.manifest_digest, *five_layer_image.blob_digests]:
        assert images.sha256_digest(five_layer_image.blob(digest)) == digest
    manifest = five_layer_image.manifest_json
    assert [d["size"] for d in manifest["layers"]] == [layer.size for layer in five_layer_image.layers]
    config = five_layer_image.config_json
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in five_layer_image.layers]
    assert images.read_layout(layout).manifest == five_layer_image.manifest


def test_busybox_layer_contents(busybox_image: TestImage) -> None:
    tree = members(busybox_image, 0)
    assert tree["bin/busybox"].isfile() and tree["bin/busybox"].mode & 0o111
    for applet in ("bin/sh", "bin/echo", "bin/ls", "bin/cat", "bin/ps", "bin/hostname", "bin/sleep",
                   "bin/true", "bin/false", "usr/bin/env", "usr/bin/whoami", "usr/bin/id"):
        assert tree[applet].issym(), applet
        target = os.path.normpath(os.path.join(os.path.dirname(applet), tree[applet].linkname))
        assert target == "bin/busybox", applet
    assert tree["tmp"].mode == 0o1777
    assert busybox_image.config_json["config"]["Cmd"] == ["sh"]


def test_five_layer_whiteouts(five_layer_image: TestImage) -> None:
    assert len(five_layer_image.layers) == 5
    last = members(five_layer_image, 4)
    assert {"data/.wh.gone.txt", "data/opaque/.wh..wh..opq", "data/opaque/new"} <= set(last)


def test_five_layer_image_shares_the_busybox_base(five_layer_image: TestImage,
                                                  busybox_image: TestImage) -> None:
    assert five_layer_image.layers[0].digest == busybox_image.layers[0].digest


def test_index_image(index_image: TestIndex) -> None:
    doc = json.loads(index_image.index)
    assert doc["mediaType"] == images.OCI_INDEX
    archs = [m["platform"]["architecture"] for m in doc["manifests"]]
    assert archs[0] == images.host_architecture() and len(set(archs)) == 2
    for child, desc in zip(index_image.children, doc["manifests"], strict=True):
        assert desc["digest"] == child.manifest_digest
        assert child.config_json["architecture"] == desc["platform"]["architecture"]


@pytest.mark.root
def test_busybox_image_runs_in_a_chroot(busybox_image: TestImage, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (chroot): run the suite as root, as tests/run does")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    with tarfile.open(busybox_image.layers[0].path, "r:gz") as tar:
        tar.extractall(rootfs, filter="tar")
    out = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "cat /etc/motd; id -un; su user -c id"],
                         capture_output=True, text=True, check=True, env={"PATH": images.PATH_ENV[5:]}).stdout
    user = "uid=1000(user) gid=1000(user) groups=1000(user)"
    assert out.splitlines() == [images.MOTD.strip(), "root", user]
