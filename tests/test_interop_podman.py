"""podman push and pull against a real ``pyreg serve`` (isolated storage, ``--tls-verify=false``).

podman pushes from its own store, so it may recompress layers: what must survive the round trip is
the image config (the image id is its digest) and the content of every layer (``diff_ids``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.peers import Podman, Skopeo, tagged
from tests.images import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, TestImage

pytestmark = pytest.mark.peers


def image_id(image: TestImage) -> str:
    return image.config_digest.split(":", 1)[1]


def push_rmi_pull(podman: Podman, image: TestImage, dest: str, *push_args: str) -> dict[str, Any]:
    local = podman.pull(image.oci_ref)
    assert local == image_id(image)
    podman.push(local, f"docker://{dest}", *push_args)
    podman.rmi(local)
    assert podman.pull(f"docker://{dest}") == image_id(image)
    return podman.image_inspect(dest)


def test_push_and_pull_busybox(registry_server: Any, podman: Podman, busybox_image: TestImage) -> None:
    dest = f"{registry_server.host}/podman/busybox:1"
    info = push_rmi_pull(podman, busybox_image, dest)
    assert info["RootFS"]["Layers"] == [layer.diff_id for layer in busybox_image.layers]
    assert info["Config"]["Cmd"] == ["sh"]
    manifest = httpx.get(f"{registry_server.url}/v2/podman/busybox/manifests/1",
                         headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    assert manifest.status_code == 200
    assert json.loads(manifest.content)["config"]["digest"] == busybox_image.config_digest
    assert info["Digest"] == manifest.headers["docker-content-digest"]


def test_push_and_pull_five_layers(registry_server: Any, podman: Podman, five_layer_image: TestImage) -> None:
    dest = f"{registry_server.host}/podman/five:v1"
    info = push_rmi_pull(podman, five_layer_image, dest)
    assert info["RootFS"]["Layers"] == [layer.diff_id for layer in five_layer_image.layers]


def test_push_docker_format_and_pull_by_digest(registry_server: Any, podman: Podman, skopeo: Skopeo,
                                               busybox_image: TestImage) -> None:
    dest = f"{registry_server.host}/podman/v2s2:latest"
    local = podman.pull(busybox_image.oci_ref)
    podman.push(local, f"docker://{dest}", "--format", "v2s2")
    raw = skopeo.inspect_raw(f"docker://{dest}")
    assert json.loads(raw)["mediaType"] == DOCKER_MANIFEST
    digest = skopeo.digest(f"docker://{dest}")
    podman.rmi(local)
    assert podman.pull(f"docker://{registry_server.host}/podman/v2s2@{digest}") == image_id(busybox_image)


def test_pull_what_skopeo_pushed(registry_server: Any, podman: Podman, skopeo: Skopeo,
                                 five_layer_image: TestImage) -> None:
    skopeo.copy(five_layer_image.oci_ref, tagged(registry_server.host, "mixed/five", "s"))
    assert podman.pull(f"docker://{registry_server.host}/mixed/five:s") == image_id(five_layer_image)
    info = podman.image_inspect(f"{registry_server.host}/mixed/five:s")
    assert info["Digest"] == five_layer_image.manifest_digest


@pytest.mark.slow
def test_push_and_pull_256mib_image(registry_server: Any, podman: Podman, big_image: TestImage) -> None:
    info = push_rmi_pull(podman, big_image, f"{registry_server.host}/podman/big:256m")
    assert info["RootFS"]["Layers"] == [layer.diff_id for layer in big_image.layers]


def test_pull_picks_this_platform_from_an_index_and_a_docker_list(registry_server: Any, podman: Podman,
                                                                  skopeo: Skopeo, index_image: Any) -> None:
    host = registry_server.host
    native = index_image.children[0]
    skopeo.copy(index_image.oci_ref, tagged(host, "plat/oci", "i"), "--all")
    skopeo.copy(index_image.oci_ref, tagged(host, "plat/docker", "l"), "--all", "--format", "v2s2")
    listed = json.loads(skopeo.inspect_raw(tagged(host, "plat/docker", "l")))
    assert listed["mediaType"] == DOCKER_MANIFEST_LIST
    assert len(listed["manifests"]) == 2
    assert podman.pull(f"docker://{host}/plat/oci:i") == image_id(native)
    assert podman.pull(f"docker://{host}/plat/docker:l") == image_id(native)


def test_push_zstd_and_pull_back(registry_server: Any, podman: Podman, skopeo: Skopeo,
                                 busybox_image: TestImage) -> None:
    dest = f"{registry_server.host}/podman/zstd:1"
    local = podman.pull(busybox_image.oci_ref)
    podman.push(local, f"docker://{dest}", "--compression-format", "zstd")
    manifest = json.loads(skopeo.inspect_raw(f"docker://{dest}"))
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"]
    podman.rmi(local)
    assert podman.pull(f"docker://{dest}") == image_id(busybox_image)
