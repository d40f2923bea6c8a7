"""storage/graph.py: the one typed walker over image graphs (children, platforms, referrers)."""

from __future__ import annotations

import json

import pytest

from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest
from pyreg.storage.graph import (
    Node,
    Platform,
    PlatformError,
    children,
    parse_as,
    referrers,
    select_platform,
    walk,
)
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, parse_manifest


def _desc(media_type: str, data: bytes, platform: dict[str, str] | None = None) -> Descriptor:
    return Descriptor(media_type, Digest.of(data), len(data), platform=platform)


class Graph:
    """An in-memory content store: digest -> bytes."""

    def __init__(self) -> None:
        self.blobs: dict[Digest, bytes] = {}
        self.fetched: list[Digest] = []

    def put(self, media_type: str, doc: object, platform: dict[str, str] | None = None) -> Descriptor:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        desc = _desc(media_type, data, platform)
        self.blobs[desc.digest] = data
        return desc

    def image(self, tag: str, shared: Descriptor, platform: dict[str, str] | None = None) -> Descriptor:
        config = self.put(mt.OCI_CONFIG, {"rootfs": {"type": "layers", "diff_ids": []}, "tag": tag})
        layer = self.put(mt.OCI_LAYER_GZIP,
                         tag.encode())
        return self.put(mt.OCI_MANIFEST, {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                          "config": config.to_json(),
                                          "layers": [shared.to_json(), layer.to_json()]}, platform)

    def fetch(self, desc: Descriptor) -> Manifest | None:
        if desc.digest not in self.blobs:
            return None
        self.fetched.append(desc.digest)
        return parse_as(desc, self.blobs[desc.digest])


AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def _index(g: Graph) -> tuple[Descriptor, Descriptor, Descriptor, Descriptor]:
    shared = g.put("application/octet-stream", b"shared base layer")
    amd = g.image("amd", shared, AMD64)
    arm = g.image("arm", shared, ARM64)
    top = g.put(mt.OCI_INDEX, {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                               "manifests": [amd.to_json(), arm.to_json()]})
    return top, amd, arm, shared


def test_walk_children_before_parents_each_once() -> None:
    g = Graph()
    top, amd, arm, shared = _index(g)
    order = [n.descriptor.digest for n in walk(top, g.fetch)]
    assert order[-1] == top.digest
    assert len(order) == len(set(order)) == 8   # index, 2 manifests, 2 configs, 3 layers (one shared)
    assert order.count(shared.digest) == 1
    assert order.index(amd.digest) < order.index(arm.digest) < order.index(top.digest)
    for parent in (amd, arm):
        m = g.fetch(parent)
        assert m is not None
        assert all(order.index(c.digest) < order.index(parent.digest) for c in children(m))
    # only indexes and manifests are fetched, never configs or layers
    assert set(g.fetched) == {top.digest, amd.digest, arm.digest}


def test_walk_with_platform_takes_one_child() -> None:
    g = Graph()
    top, amd, arm, _ = _index(g)
    seen = {n.descriptor.digest for n in walk(top, g.fetch, platform=Platform.parse("linux/arm64"))}
    assert arm.digest in seen and amd.digest not in seen and len(seen) == 5


def test_walk_absent_child_is_a_leaf() -> None:
    g = Graph()
    top, amd, arm, _ = _index(g)
    del g.blobs[amd.digest]
    nodes = {n.descriptor.digest: n for n in walk(top, g.fetch)}
    assert nodes[amd.digest].manifest is None and nodes[arm.digest].manifest is not None


def test_select_platform() -> None:
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"mediaType": mt.OCI_MANIFEST, "digest": "sha256:" + "3" * 64, "size": 1,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    ]}
    index = parse_manifest(json.dumps(doc).encode())
    assert select_platform(index, Platform.parse("linux/amd64")).digest.hex == "1" * 64
    assert select_platform(index, Platform.parse("linux/arm/v7")).digest.hex == "2" * 64
    assert select_platform(index, Platform.parse("linux/aarch64")).digest.hex == "3" * 64
    assert select_platform(index, Platform.parse("linux/arm64/v8")).digest.hex == "3" * 64
    with pytest.raises(PlatformError, match=r"no image for platform linux/s390x \(available: linux/amd64, "):
        select_platform(index, Platform.parse("linux/s390x"))
    with pytest.raises(ValueError):
        Platform.parse("linux")
    assert Platform.host().os == "linux"


def test_referrers() -> None:
    g = Graph()
    top, amd, _, _ = _index(g)
    empty = g.put(mt.OCI_EMPTY, b"{}")
    sig = g.put(mt.OCI_MANIFEST, {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                  "artifactType": "application/example.sig", "config": empty.to_json(),
                                  "layers": [empty.to_json()], "subject": amd.to_json()})
    nodes = [Node(d, g.fetch(d)) for d in (top, amd, sig)]
    assert referrers(amd.digest, nodes) == [sig]
    assert referrers(top.digest, nodes) == []


def test_parse_as_checks_the_digest() -> None:
    g = Graph()
    top, _, _, _ = _index(g)
    with pytest.raises(ManifestError, match="does not match its digest"):
        parse_as(top, g.blobs[top.digest] + b" ")
