"""storage/content.py: one ContentStore protocol (the local store and an OCI layout implement it)
and copy_graph, the one "walk a graph, copy what the target lacks"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage import mediatypes as mt
from storage.content import ContentNotFound, ContentSizeError, ContentStore, LayoutStore, copy_graph
from storage.digest import Digest, DigestMismatchError
from storage.graph import Platform
from storage.localstore import LocalStore
from storage.manifest import Descriptor


def _put(store: ContentStore, media_type: str, data: bytes, platform: dict[str, str] | None = None
         ) -> Descriptor:
    desc = Descriptor(media_type, Digest.of(data), len(data), platform=platform)
    with store.writer(desc.digest, desc.size) as w:
        w.write(data)
        w.commit()
    return desc


def _image(store: ContentStore, tag: str, shared: Descriptor, platform: dict[str, str]) -> Descriptor:
    config = _put(store, mt.OCI_CONFIG, json.dumps({"tag": tag}).encode())
    layer = _put(store, mt.OCI_LAYER_GZIP, tag.encode() * 100)
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json(),
           "layers": [shared.to_json(), layer.to_json()]}
    return _put(store, mt.OCI_MANIFEST, json.dumps(doc).encode(), platform)


def _index(store: ContentStore) -> tuple[Descriptor, Descriptor, Descriptor]:
    shared = _put(store, mt.OCI_LAYER_GZIP, b"shared" * 1000)
    amd = _image(store, "amd", shared, {"os": "linux", "architecture": "amd64"})
    arm = _image(store, "arm", shared, {"os": "linux", "architecture": "arm64"})
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [amd.to_json(), arm.to_json()]}
    return _put(store, mt.OCI_INDEX, json.dumps(doc).encode()), amd, arm


@pytest.fixture(params=["layout", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ContentStore:
    if request.param == "layout":
        return LayoutStore(tmp_path / "layout")
    return LocalStore(tmp_path / "local")


def test_protocol(store: ContentStore) -> None:
    data = b"0123456789" * 10
    desc = _put(store, "application/octet-stream", data)
    info = store.info(desc.digest)
    assert info is not None and info.size == len(data)
    with store.reader(desc.digest, offset=95) as f:
        assert f.read() == b"56789"
    assert [i.digest for i in store.walk()] == [desc.digest]
    assert store.delete(desc.digest) and not store.delete(desc.digest)
    assert store.info(desc.digest) is None
    with pytest.raises(ContentNotFound):
        store.reader(desc.digest)


def test_writer_verifies_digest_and_size(store: ContentStore) -> None:
    digest = Digest.of(b"right")
    with pytest.raises(DigestMismatchError), store.writer(digest, 5) as w:
        w.write(b"wrong")
        w.commit()
    with pytest.raises(ContentSizeError), store.writer(digest, 5) as w:
        w.write(b"rig")
        w.commit()
    with store.writer(digest, 5) as w:
        w.write(b"rig")  # left without commit: aborted
    assert store.info(digest) is None and list(store.walk()) == []


@pytest.mark.parametrize("dst_kind", ["layout", "local"])
def test_copy_graph(store: ContentStore, dst_kind: str, tmp_path: Path) -> None:
    top, amd, arm = _index(store)
    dst: ContentStore = (LayoutStore(tmp_path / "dst") if dst_kind == "layout"
                         else LocalStore(tmp_path / "dst"))
    one = copy_graph(store, dst, top, platform=Platform.parse("linux/arm64"))
    assert [d.digest for d in one][-1] == top.digest
    assert dst.info(arm.digest) is not None and dst.info(amd.digest) is None
    rest = copy_graph(store, dst, top)
    # only what the target lacked: amd's manifest, config and own layer; the top is already there
    assert len(rest) == 3 and rest[-1].digest == amd.digest
    assert {i.digest for i in dst.walk()} == {i.digest for i in store.walk()}
    assert copy_graph(store, dst, top) == []
