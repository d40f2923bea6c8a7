"""Interop with CNCF Distribution 2.8 (Debian's docker-registry) as a peer.

The first tests check the test images and the peer helpers against the reference registry itself,
so a failure in the pyreg tests below points at pyreg, not at the images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.peers import DistributionRegistry, Podman, Skopeo, tagged
from tests.images import TestImage, build_random_image, read_layout

pytestmark = pytest.mark.peers


def test_reference_registry_round_trip(distribution_registry: DistributionRegistry, skopeo: Skopeo,
                                       five_layer_image: TestImage, tmp_path: Path) -> None:
    ref = tagged(distribution_registry.host, "ref/five", "v1")
    skopeo.copy(five_layer_image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == five_layer_image.manifest
    assert skopeo.digest(ref) == five_layer_image.manifest_digest
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:v1")
    back = read_layout(tmp_path / "out", "v1")
    assert back.manifest_digest == five_layer_image.manifest_digest
    assert [back.blob(d) == five_layer_image.blob(d) for d in back.blob_digests] == [True] * 6


def test_reference_registry_podman(distribution_registry: DistributionRegistry, podman: Podman,
                                   busybox_image: TestImage) -> None:
    image_id = podman.pull(busybox_image.oci_ref)
    dest = f"{distribution_registry.host}/ref/busybox:1"
    podman.push(image_id, f"docker://{dest}")
    podman.rmi(image_id)
    assert podman.pull(f"docker://{dest}")


# --------------------------------------------------------------------------- one directory, two servers


def test_pyreg_serves_what_distribution_stored(registry_server: Any, distribution_factory: Any,
                                               skopeo: Skopeo, five_layer_image: TestImage,
                                               busybox_image: TestImage, tmp_path: Path) -> None:
    """Distribution pushes into a directory; pyreg, started on that directory, serves it as is."""
    registry_server.stop()
    distribution = distribution_factory(Path(registry_server.data_dir))
    skopeo.copy(five_layer_image.oci_ref, tagged(distribution.host, "dist/five", "v1"))
    skopeo.copy(busybox_image.oci_ref, tagged(distribution.host, "dist/busybox", "latest"))
    skopeo.copy(busybox_image.oci_ref, tagged(distribution.host, "dist/busybox", "other"))
    distribution.stop()
    assert (Path(registry_server.data_dir) / "docker/registry/v2/repositories/dist/five/_layers").is_dir()

    registry_server.restart()
    host = registry_server.host
    assert skopeo.inspect_raw(tagged(host, "dist/five", "v1")) == five_layer_image.manifest
    assert sorted(skopeo.list_tags(f"docker://{host}/dist/busybox")) == ["latest", "other"]
    skopeo.copy(tagged(host, "dist/five", "v1"), f"oci:{tmp_path / 'out'}:v1")
    pulled = read_layout(tmp_path / "out", "v1")
    assert pulled.manifest == five_layer_image.manifest
    for digest in five_layer_image.blob_digests:
        assert pulled.blob(digest) == five_layer_image.blob(digest)
    catalog = httpx.get(f"{registry_server.url}/v2/_catalog").json()
    assert {"dist/five", "dist/busybox"} <= set(catalog["repositories"])

    # A repository serves only the blobs it links: busybox does not link five-layer's own layers.
    only_five = five_layer_image.layer_digests[1]
    assert httpx.head(f"{registry_server.url}/v2/dist/five/blobs/{only_five}").status_code == 200
    assert httpx.head(f"{registry_server.url}/v2/dist/busybox/blobs/{only_five}").status_code == 404
    shared = busybox_image.layer_digests[0]
    response = httpx.get(f"{registry_server.url}/v2/dist/busybox/blobs/{shared}")
    assert response.status_code == 200
    assert response.content == busybox_image.blob(shared)


def test_distribution_serves_what_pyreg_stored(registry_server: Any, distribution_factory: Any,
                                               skopeo: Skopeo, five_layer_image: TestImage,
                                               busybox_image: TestImage, tmp_path: Path) -> None:
    """pyreg pushes into its data directory; Distribution, started on it, serves it as is."""
    host = registry_server.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "mine/five", "v1"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "mine/busybox", "latest"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "mine/busybox", "again"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "mine/docker", "v2s2"), "--format", "v2s2")
    registry_server.stop()

    distribution = distribution_factory(Path(registry_server.data_dir))
    dhost = distribution.host
    assert skopeo.inspect_raw(tagged(dhost, "mine/five", "v1")) == five_layer_image.manifest
    assert skopeo.digest(tagged(dhost, "mine/five", "v1")) == five_layer_image.manifest_digest
    assert sorted(skopeo.list_tags(f"docker://{dhost}/mine/busybox")) == ["again", "latest"]
    skopeo.copy(tagged(dhost, "mine/five", "v1"), f"oci:{tmp_path / 'out'}:v1")
    pulled = read_layout(tmp_path / "out", "v1")
    assert pulled.manifest == five_layer_image.manifest
    for digest in five_layer_image.blob_digests:
        assert pulled.blob(digest) == five_layer_image.blob(digest)
    assert skopeo.inspect(tagged(dhost, "mine/docker", "v2s2"))["Layers"] == busybox_image.layer_digests
    catalog = httpx.get(f"{distribution.url}/v2/_catalog").json()
    assert {"mine/five", "mine/busybox", "mine/docker"} <= set(catalog["repositories"])

    # Distribution can keep writing into the directory, and pyreg then serves that too.
    skopeo.copy(five_layer_image.oci_ref, tagged(dhost, "mine/busybox", "five"))
    distribution.stop()
    registry_server.restart()
    again = tagged(registry_server.host, "mine/busybox", "five")
    assert skopeo.digest(again) == five_layer_image.manifest_digest


def test_deletes_are_seen_by_the_other_server(registry_server: Any, distribution_factory: Any,
                                              skopeo: Skopeo, five_layer_image: TestImage,
                                              busybox_image: TestImage) -> None:
    """A manifest deleted by one server is gone for the other; the other tag stays."""
    host = registry_server.host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "del/a", "bb"))
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "del/a", "five"))
    skopeo.delete(tagged(host, "del/a", "bb"))
    registry_server.stop()

    distribution = distribution_factory(Path(registry_server.data_dir))
    dhost = distribution.host
    assert skopeo.list_tags(f"docker://{dhost}/del/a") == ["five"]
    gone = httpx.head(f"{distribution.url}/v2/del/a/manifests/{busybox_image.manifest_digest}",
                      headers={"Accept": busybox_image.manifest_json["mediaType"]})
    assert gone.status_code == 404
    skopeo.copy(busybox_image.oci_ref, tagged(dhost, "del/b", "bb"))
    skopeo.copy(busybox_image.oci_ref, tagged(dhost, "del/b", "bb2"))
    skopeo.delete(tagged(dhost, "del/a", "five"))  # Distribution deletes a pyreg-written manifest
    distribution.stop()

    registry_server.restart()
    assert httpx.head(f"{registry_server.url}/v2/del/a/manifests/five").status_code == 404
    assert httpx.head(f"{registry_server.url}/v2/del/a/manifests/{five_layer_image.manifest_digest}",
                      ).status_code == 404
    assert sorted(skopeo.list_tags(f"docker://{host}/del/b")) == ["bb", "bb2"]
    assert skopeo.digest(tagged(host, "del/b", "bb")) == busybox_image.manifest_digest


def test_distribution_garbage_collect_keeps_what_pyreg_uses(registry_server: Any, distribution_factory: Any,
                                                            skopeo: Skopeo, five_layer_image: TestImage,
                                                            busybox_image: TestImage, index_image: Any,
                                                            tmp_path: Path) -> None:
    """Distribution's mark-and-sweep on a pyreg directory: it must find every link pyreg wrote,
    so it removes only what pyreg deleted, and pyreg serves everything else afterwards."""
    host = registry_server.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "gc/five", "keep"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "gc/bb", "keep"), "--format", "v2s2")
    skopeo.copy(index_image.oci_ref, tagged(host, "gc/multi", "keep"), "--all")
    doomed = build_random_image(tmp_path / "doomed", 64 * 1024, with_busybox=False, seed=99, name="doomed")
    skopeo.copy(doomed.oci_ref, tagged(host, "gc/gone", "x"))
    skopeo.delete(tagged(host, "gc/gone", "x"))
    registry_server.stop()

    distribution = distribution_factory(Path(registry_server.data_dir))
    distribution.stop()
    distribution.garbage_collect()
    blobs = Path(registry_server.data_dir) / "docker/registry/v2/blobs/sha256"
    kept = {p.parent.name for p in blobs.glob("*/*/data")}
    for image in (five_layer_image, busybox_image, *index_image.children):
        for digest in image.blob_digests:
            assert digest.split(":")[1] in kept, digest
    assert index_image.digest.split(":")[1] in kept
    for digest in (doomed.manifest_digest, *doomed.blob_digests):  # only the deleted image used them
        assert digest.split(":")[1] not in kept, digest

    registry_server.restart()
    skopeo.copy(tagged(host, "gc/five", "keep"), f"oci:{tmp_path / 'five'}:k")
    assert read_layout(tmp_path / "five", "k").manifest == five_layer_image.manifest
    skopeo.copy(tagged(host, "gc/multi", "keep"), f"oci:{tmp_path / 'multi'}:k", "--all")
    assert skopeo.inspect_raw(tagged(host, "gc/multi", "keep")) == index_image.index
    assert skopeo.inspect(tagged(host, "gc/bb", "keep"))["Layers"] == busybox_image.layer_digests


def test_registry_to_registry_both_ways(registry_server: Any, distribution_registry: DistributionRegistry,
                                        skopeo: Skopeo, five_layer_image: TestImage,
                                        index_image: Any) -> None:
    """skopeo streams images straight from Distribution to pyreg and back, digests unchanged."""
    dist, mine = distribution_registry.host, registry_server.host
    skopeo.copy(five_layer_image.oci_ref, tagged(dist, "sync/five", "a"))
    skopeo.copy(five_layer_image.oci_ref, tagged(dist, "sync/five", "b"))
    skopeo.copy(index_image.oci_ref, tagged(dist, "sync/multi", "m"), "--all")
    skopeo.run("sync", "--src", "docker", "--dest", "docker", "--all", "--src-tls-verify=false",
               "--dest-tls-verify=false", f"{dist}/sync/five", f"{mine}/mirror")
    assert sorted(skopeo.list_tags(f"docker://{mine}/mirror/five")) == ["a", "b"]
    assert skopeo.inspect_raw(tagged(mine, "mirror/five", "b")) == five_layer_image.manifest
    skopeo.copy(tagged(dist, "sync/multi", "m"), tagged(mine, "from-dist/multi", "m"), "--all")
    assert skopeo.inspect_raw(tagged(mine, "from-dist/multi", "m")) == index_image.index
    skopeo.copy(tagged(mine, "from-dist/multi", "m"), tagged(dist, "back/multi", "m"), "--all")
    assert skopeo.inspect_raw(tagged(dist, "back/multi", "m")) == index_image.index
    skopeo.copy(tagged(mine, "mirror/five", "a"), tagged(dist, "back/five", "a"))
    assert skopeo.digest(tagged(dist, "back/five", "a")) == five_layer_image.manifest_digest


def test_pyreg_continues_an_upload_distribution_started(registry_server: Any,
                                                        distribution_factory: Any) -> None:
    """Upload state lives on disk in Distribution's own format, so a chunked upload begun on
    Distribution is finished on pyreg (same Location path, Distribution's ``_state`` left on)."""
    registry_server.stop()
    distribution = distribution_factory(Path(registry_server.data_dir))
    data = bytes(range(256)) * 4096 * 3
    first, rest = data[: 1 << 20], data[1 << 20 :]
    started = httpx.post(f"{distribution.url}/v2/up/load/blobs/uploads/")
    assert started.status_code == 202, started.text
    patched = httpx.patch(httpx.URL(distribution.url).join(started.headers["location"]), content=first,
                          headers={"Content-Type": "application/octet-stream",
                                   "Content-Range": f"0-{len(first) - 1}"})
    assert patched.status_code == 202, patched.text
    location = httpx.URL(patched.headers["location"])
    assert location.params.get("_state")
    distribution.stop()

    registry_server.restart()
    here = httpx.URL(registry_server.url).join(location.raw_path.decode())
    status = httpx.get(here)
    assert status.status_code == 204
    assert status.headers["range"] == f"0-{len(first) - 1}"
    more = httpx.patch(here, content=rest, headers={"Content-Type": "application/octet-stream",
                                                    "Content-Range": f"{len(first)}-{len(data) - 1}"})
    assert more.status_code == 202, more.text
    assert more.headers["range"] == f"0-{len(data) - 1}"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = httpx.put(httpx.URL(registry_server.url).join(more.headers["location"]), params={"digest": digest})
    assert done.status_code == 201, done.text
    assert done.headers["docker-content-digest"] == digest
    assert httpx.get(f"{registry_server.url}/v2/up/load/blobs/{digest}").content == data


def test_one_s3_bucket_both_ways(s3_section: dict[str, Any], moto_server: Any, skopeo: Skopeo,
                                 five_layer_image: TestImage, busybox_image: TestImage,
                                 tmp_path: Path) -> None:
    """The same layout in a bucket: Distribution's s3-aws driver and pyreg's S3 driver, one after
    the other on one bucket and root directory (moto), each serving what the other pushed."""
    from tests.fixtures.registry import RegistryServer

    pyreg = RegistryServer({"storage": {"s3": s3_section, "delete": {"enabled": True}, "cache": {"ttl": 0},
                                        "maintenance": {"uploadpurging": {"enabled": False}}},
                            "log": {"accesslog": {"disabled": True}}}, tmp_path / "pyreg")
    distribution = DistributionRegistry(tmp_path / "unused-root", tmp_path / "distribution", s3=s3_section)
    try:
        distribution.start()
        dhost = distribution.host
        skopeo.copy(five_layer_image.oci_ref, tagged(dhost, "bucket/five", "from-dist"))
        skopeo.copy(busybox_image.oci_ref, tagged(dhost, "bucket/bb", "from-dist"), "--format", "v2s2")
        distribution.stop()

        pyreg.start()
        host = pyreg.host
        assert skopeo.inspect_raw(tagged(host, "bucket/five", "from-dist")) == five_layer_image.manifest
        skopeo.copy(tagged(host, "bucket/five", "from-dist"), f"oci:{tmp_path / 'out'}:1")
        assert read_layout(tmp_path / "out", "1").manifest_digest == five_layer_image.manifest_digest
        assert skopeo.inspect(tagged(host, "bucket/bb", "from-dist"))["Layers"] == busybox_image.layer_digests
        skopeo.copy(busybox_image.oci_ref, tagged(host, "bucket/bb", "from-pyreg"))
        skopeo.copy(five_layer_image.oci_ref, tagged(host, "bucket/new", "from-pyreg"))
        pyreg.stop()

        distribution.start()
        assert sorted(skopeo.list_tags(f"docker://{dhost}/bucket/bb")) == ["from-dist", "from-pyreg"]
        assert skopeo.inspect_raw(tagged(dhost, "bucket/bb", "from-pyreg")) == busybox_image.manifest
        skopeo.copy(tagged(dhost, "bucket/new", "from-pyreg"), f"oci:{tmp_path / 'out2'}:1")
        pulled = read_layout(tmp_path / "out2", "1")
        assert pulled.manifest == five_layer_image.manifest
        for digest in five_layer_image.blob_digests:
            assert pulled.blob(digest) == five_layer_image.blob(digest)
    finally:
        distribution.stop()
        pyreg.stop()
    assert not any((tmp_path / "unused-root").iterdir())  # Distribution wrote only to the bucket
    prefix = s3_section["rootdirectory"].strip("/") + "/docker/registry/v2/repositories/bucket/"
    listed = moto_server.client().list_objects_v2(Bucket=s3_section["bucket"], Prefix=prefix)
    assert listed.get("KeyCount", 0) > 0


def test_deep_and_punctuated_names_and_catalog_pages(registry_server: Any, distribution_factory: Any,
                                                      skopeo: Skopeo, busybox_image: TestImage) -> None:
    """Names with several components and separators, written by Distribution, listed by pyreg's
    paginated ``_catalog`` exactly as Distribution lists them."""
    names = ["a.b/c_d/e-f", "x/y/z/w", "x/y", "x__y", "single", "p-q/r.s"]
    registry_server.stop()
    distribution = distribution_factory(Path(registry_server.data_dir))
    for name in names:
        skopeo.copy(busybox_image.oci_ref, tagged(distribution.host, name, "t"))
    theirs = httpx.get(f"{distribution.url}/v2/_catalog").json()["repositories"]
    distribution.stop()

    registry_server.restart()
    ours: list[str] = []
    url: str | None = f"{registry_server.url}/v2/_catalog?n=2"
    while url:
        page = httpx.get(url)
        assert page.status_code == 200
        ours += page.json()["repositories"]
        link = page.headers.get("link")
        url = str(httpx.URL(registry_server.url).join(link.split(";")[0].strip("<> "))) if link else None
    assert ours == theirs == sorted(names)
    for name in names:
        assert skopeo.digest(tagged(registry_server.host, name, "t")) == busybox_image.manifest_digest
