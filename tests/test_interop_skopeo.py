"""skopeo (containers/image, a client nobody here wrote) against a real ``pyreg serve``.

Every push is checked byte for byte: the manifest skopeo reads back is the one it pushed, and an
image copied back out of pyreg into an OCI layout has the same manifest digest and blobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.peers import Skopeo, run_all, tagged
from tests.images import DOCKER_MANIFEST, OCI_INDEX, TestImage, TestIndex, read_layout

pytestmark = pytest.mark.peers


def assert_same_image(pulled: TestImage, expected: TestImage) -> None:
    assert pulled.manifest == expected.manifest
    assert pulled.manifest_digest == expected.manifest_digest
    assert pulled.config == expected.config
    for digest in expected.layer_digests:
        assert pulled.blob(digest) == expected.blob(digest), digest


def push_and_pull_back(skopeo: Skopeo, image: TestImage, host: str, repo: str, tag: str,
                       out: Path) -> TestImage:
    ref = tagged(host, repo, tag)
    skopeo.copy(image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == image.manifest
    assert skopeo.digest(ref) == image.manifest_digest
    skopeo.copy(ref, f"oci:{out}:{tag}")
    pulled = read_layout(out, tag)
    assert_same_image(pulled, image)
    return pulled


def test_copy_busybox_both_ways(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage,
                                tmp_path: Path) -> None:
    push_and_pull_back(skopeo, busybox_image, registry_server.host, "library/busybox", "latest",
                       tmp_path / "out")


def test_copy_five_layer_image_both_ways(registry_server: Any, skopeo: Skopeo,
                                         five_layer_image: TestImage, tmp_path: Path) -> None:
    push_and_pull_back(skopeo, five_layer_image, registry_server.host, "team/five", "v1", tmp_path / "out")


def test_pull_by_digest(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage,
                        tmp_path: Path) -> None:
    skopeo.copy(busybox_image.oci_ref, tagged(registry_server.host, "bydigest", "t"))
    by_digest = f"docker://{registry_server.host}/bydigest@{busybox_image.manifest_digest}"
    assert skopeo.inspect_raw(by_digest) == busybox_image.manifest
    skopeo.copy(by_digest, f"oci:{tmp_path / 'out'}:pinned")
    assert_same_image(read_layout(tmp_path / "out", "pinned"), busybox_image)


def test_copy_as_docker_schema2(registry_server: Any, skopeo: Skopeo, five_layer_image: TestImage,
                                tmp_path: Path) -> None:
    ref = tagged(registry_server.host, "docker/five", "v2s2")
    skopeo.copy(five_layer_image.oci_ref, ref, "--format", "v2s2")
    raw = skopeo.inspect_raw(ref)
    doc = json.loads(raw)
    assert doc["mediaType"] == DOCKER_MANIFEST
    assert [layer["digest"] for layer in doc["layers"]] == five_layer_image.layer_digests
    info = skopeo.inspect(ref)
    assert info["Layers"] == five_layer_image.layer_digests
    response = httpx.get(f"{registry_server.url}/v2/docker/five/manifests/v2s2",
                         headers={"Accept": DOCKER_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == DOCKER_MANIFEST
    assert response.content == raw
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:v2s2")
    pulled = read_layout(tmp_path / "out", "v2s2")
    assert pulled.config == five_layer_image.config
    assert pulled.layer_digests == five_layer_image.layer_digests


def test_inspect(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage) -> None:
    ref = tagged(registry_server.host, "inspect/me", "1.0")
    skopeo.copy(busybox_image.oci_ref, ref)
    info = skopeo.inspect(ref)
    assert info["Digest"] == busybox_image.manifest_digest
    assert info["Layers"] == busybox_image.layer_digests
    assert info["Architecture"] == busybox_image.config_json["architecture"]
    assert info["Os"] == "linux"
    assert info["Env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    assert info["RepoTags"] == ["1.0"]
    config = skopeo.run("inspect", "--tls-verify=false", "--config", "--raw", ref).stdout
    assert config.encode() == busybox_image.config


def test_list_tags(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage) -> None:
    tags = ["v1", "latest", "0.9", "a-b_c.d"]
    for tag in tags:
        skopeo.copy(busybox_image.oci_ref, tagged(registry_server.host, "tags/repo", tag))
    assert sorted(skopeo.list_tags(f"docker://{registry_server.host}/tags/repo")) == sorted(tags)


def test_delete(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage,
                five_layer_image: TestImage) -> None:
    host = registry_server.host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "del/repo", "gone"))
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "del/repo", "stays"))
    skopeo.delete(tagged(host, "del/repo", "gone"))
    assert skopeo.run("inspect", "--tls-verify=false", tagged(host, "del/repo", "gone"),
                      check=False).returncode != 0
    gone = httpx.head(f"{registry_server.url}/v2/del/repo/manifests/{busybox_image.manifest_digest}")
    assert gone.status_code == 404
    assert skopeo.list_tags(f"docker://{host}/del/repo") == ["stays"]
    assert skopeo.digest(tagged(host, "del/repo", "stays")) == five_layer_image.manifest_digest


def test_copy_between_repositories_on_pyreg(registry_server: Any, skopeo: Skopeo,
                                            five_layer_image: TestImage, tmp_path: Path) -> None:
    """Registry to registry: containers/image mounts blobs it saw in another repository."""
    host = registry_server.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "src/five", "1"))
    skopeo.copy(tagged(host, "src/five", "1"), tagged(host, "dst/five", "1"))
    assert skopeo.inspect_raw(tagged(host, "dst/five", "1")) == five_layer_image.manifest
    for digest in five_layer_image.blob_digests:
        response = httpx.head(f"{registry_server.url}/v2/dst/five/blobs/{digest}")
        assert response.status_code == 200, digest
        assert response.headers["docker-content-digest"] == digest
    skopeo.copy(tagged(host, "dst/five", "1"), f"oci:{tmp_path / 'out'}:1")
    assert_same_image(read_layout(tmp_path / "out", "1"), five_layer_image)


def test_parallel_pushes_of_the_same_image(registry_server: Any, skopeo: Skopeo,
                                           five_layer_image: TestImage, tmp_path: Path) -> None:
    """Four skopeo processes push the same blobs into one repository (two tags) at once."""
    host = registry_server.host
    tags = ["p0", "p1", "p0", "p1"]
    run_all([lambda t=t: skopeo.copy(five_layer_image.oci_ref, tagged(host, "race/five", t)) for t in tags])
    assert sorted(skopeo.list_tags(f"docker://{host}/race/five")) == ["p0", "p1"]
    for tag in ("p0", "p1"):
        assert skopeo.inspect_raw(tagged(host, "race/five", tag)) == five_layer_image.manifest
    skopeo.copy(tagged(host, "race/five", "p1"), f"oci:{tmp_path / 'out'}:p1")
    assert_same_image(read_layout(tmp_path / "out", "p1"), five_layer_image)


def test_copy_image_index_with_all_platforms(registry_server: Any, skopeo: Skopeo, index_image: TestIndex,
                                             tmp_path: Path) -> None:
    ref = tagged(registry_server.host, "multi/arch", "both")
    skopeo.copy(index_image.oci_ref, ref, "--all")
    assert skopeo.inspect_raw(ref) == index_image.index
    response = httpx.get(f"{registry_server.url}/v2/multi/arch/manifests/both", headers={"Accept": OCI_INDEX})
    assert response.headers["content-type"] == OCI_INDEX
    assert response.headers["docker-content-digest"] == index_image.digest
    for child in index_image.children:
        by_digest = f"docker://{registry_server.host}/multi/arch@{child.manifest_digest}"
        assert skopeo.inspect_raw(by_digest) == child.manifest
    # Without --all skopeo picks this host's platform: the first child.
    skopeo.copy(ref, f"oci:{tmp_path / 'native'}:n")
    assert_same_image(read_layout(tmp_path / "native", "n"), index_image.children[0])
    skopeo.copy(ref, f"oci:{tmp_path / 'all'}:both", "--all")
    index = read_layout_index(tmp_path / "all", "both")
    assert index == index_image.index


def read_layout_index(layout: Path, tag: str) -> bytes:
    top = json.loads((layout / "index.json").read_bytes())
    for desc in top["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return (layout / "blobs" / desc["digest"].replace(":", "/")).read_bytes()
    raise KeyError(tag)


def test_zstd_layers(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage,
                     tmp_path: Path) -> None:
    """skopeo recompresses to zstd on the way in: a layer media type pyreg must store and serve."""
    ref = tagged(registry_server.host, "zstd/busybox", "z")
    skopeo.copy(busybox_image.oci_ref, ref, "--dest-compress-format", "zstd", "--format", "oci")
    doc = json.loads(skopeo.inspect_raw(ref))
    assert [layer["mediaType"] for layer in doc["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"]
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:z")
    pulled = read_layout(tmp_path / "out", "z")
    assert pulled.config == busybox_image.config  # same diff_ids: same uncompressed content
    assert pulled.layer_digests == [layer["digest"] for layer in doc["layers"]]


def test_many_tags_listed(registry_server: Any, skopeo: Skopeo, busybox_image: TestImage) -> None:
    """250 tags (put over plain HTTP, one manifest) are all listed, following Link if pyreg pages."""
    skopeo.copy(busybox_image.oci_ref, tagged(registry_server.host, "many/tags", "first"))
    tags = [f"t{i:03d}" for i in range(250)]
    with httpx.Client(base_url=registry_server.url) as client:
        for tag in tags:
            response = client.put(f"/v2/many/tags/manifests/{tag}", content=busybox_image.manifest,
                                  headers={"Content-Type": busybox_image.manifest_json["mediaType"]})
            assert response.status_code == 201, response.text
    assert sorted(skopeo.list_tags(f"docker://{registry_server.host}/many/tags")) == sorted([*tags, "first"])


def test_several_workers(make_registry_server: Any, skopeo: Skopeo, five_layer_image: TestImage,
                         busybox_image: TestImage, tmp_path: Path) -> None:
    """Three worker processes: uploads and pulls whose requests land on different workers."""
    server = make_registry_server(workers=3)
    refs = [tagged(server.host, f"workers/r{i}", "1") for i in range(4)]
    images_ = [five_layer_image, busybox_image, five_layer_image, busybox_image]
    run_all([lambda r=r, i=i: skopeo.copy(i.oci_ref, r) for r, i in zip(refs, images_, strict=True)])
    outs = [tmp_path / f"out{i}" for i in range(4)]
    run_all([lambda r=r, o=o: skopeo.copy(r, f"oci:{o}:1") for r, o in zip(refs, outs, strict=True)])
    for out, image in zip(outs, images_, strict=True):
        assert_same_image(read_layout(out, "1"), image)


@pytest.mark.slow
def test_copy_256mib_image_both_ways(registry_server: Any, skopeo: Skopeo, big_image: TestImage,
                                     tmp_path: Path) -> None:
    push_and_pull_back(skopeo, big_image, registry_server.host, "big/image", "256m", tmp_path / "out")


@pytest.mark.slow
@pytest.mark.filesystem_only
def test_server_killed_mid_push_loses_nothing(registry_server: Any, skopeo: Skopeo, big_image: TestImage,
                                              tmp_path: Path) -> None:
    """SIGKILL the server while skopeo streams the 256 MiB layer: the half-written blob is never
    visible, and after a restart the same push completes and pulls back byte for byte."""
    host, ref = registry_server.host, tagged(registry_server.host, "crash/big", "1")
    big_layer = big_image.layers[-1]
    push = subprocess.Popen(skopeo.command("copy", "--dest-tls-verify=false", big_image.oci_ref, ref),
                            env=skopeo.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uploads = Path(registry_server.data_dir) / "docker/registry/v2/repositories/crash/big/_uploads"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and push.poll() is None:
            if any(p.stat().st_size > 16 << 20 for p in uploads.glob("*/data")):
                break
            time.sleep(0.01)
        assert push.poll() is None, "the push ended before the server could be killed mid-upload"
        os.killpg(registry_server.process.pid, signal.SIGKILL)
        push.wait(120)
        assert push.returncode != 0
    finally:
        if push.poll() is None:
            push.kill()
            push.wait()

    registry_server.restart()
    head = httpx.head(f"{registry_server.url}/v2/crash/big/blobs/{big_layer.digest}")
    assert head.status_code == 404
    blob_dir = Path(registry_server.data_dir) / "docker/registry/v2/blobs/sha256" / big_layer.digest[7:9]
    assert not (blob_dir / big_layer.digest[7:] / "data").exists()
    push_and_pull_back(skopeo, big_image, host, "crash/big", "1", tmp_path / "out")


def test_schema1_push_is_refused_clearly(registry_server: Any, skopeo: Skopeo,
                                         busybox_image: TestImage) -> None:
    """Docker schema 1 is not supported: skopeo gets MANIFEST_INVALID with a reason (Distribution
    2.8 answers 500 here), and no tag appears."""
    ref = tagged(registry_server.host, "schema1/bb", "v1")
    result = skopeo.copy(busybox_image.oci_ref, ref, "--format", "v2s1", check=False)
    assert result.returncode != 0
    assert "manifest invalid" in result.stderr
    # a 500 shows as "status 500" / "500 Internal Server Error"; a bare "500" may be in the port
    assert "status 500" not in result.stderr and "500 Internal" not in result.stderr
    tags = httpx.get(f"{registry_server.url}/v2/schema1/bb/tags/list")
    assert tags.status_code == 404 or tags.json().get("tags") in (None, [])


def test_errors_skopeo_sees(make_registry_server: Any, skopeo: Skopeo, busybox_image: TestImage) -> None:
    """What skopeo prints for the usual mistakes: the spec's codes, never a 500."""
    server = make_registry_server({"storage": {"delete": {"enabled": False}}})
    skopeo.copy(busybox_image.oci_ref, tagged(server.host, "errs/bb", "1"))
    refused = skopeo.delete(tagged(server.host, "errs/bb", "1"), check=False)
    assert refused.returncode != 0
    assert "UNSUPPORTED" in refused.stderr and "405" in refused.stderr
    assert skopeo.digest(tagged(server.host, "errs/bb", "1")) == busybox_image.manifest_digest
    unknown = skopeo.run("inspect", "--tls-verify=false", tagged(server.host, "errs/bb", "2"), check=False)
    assert unknown.returncode != 0 and "manifest unknown" in unknown.stderr
    no_repo = skopeo.run("list-tags", "--tls-verify=false", f"docker://{server.host}/errs/none", check=False)
    assert no_repo.returncode != 0 and "404" in no_repo.stderr
    assert "Traceback" not in server.log()
