"""storage/content.py: one ContentStore protocol (the local store, an OCI layout, the registry
layout over a Driver — filesystem and S3 — and a registry repository over HTTP implement it) and
copy_graph, the one "walk a graph, copy what the target lacks". The remote store runs against a
real ``pyreg serve``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal

from pyreg.storage import mediatypes as mt
from pyreg.storage.asyncstore import BlockingStore
from pyreg.storage.content import (
    ContentNotFound,
    ContentSizeError,
    ContentStore,
    LayoutStore,
    ManifestStore,
    copy_graph,
)
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.filesystem import FilesystemDriver
from pyreg.storage.graph import Platform
from pyreg.storage.localstore import LocalStore
from pyreg.storage.manifest import Descriptor
from pyreg.storage.registrystore import RegistryStore
from pyreg.storage.remote import RegistryClient, RemoteError
from pyreg.storage.remote.store import RemoteStore
from pyreg.storage.s3 import S3Driver, s3_config_from_dict


def _put(store: ContentStore, media_type: str, data: bytes, platform: dict[str, str] | None = None
         ) -> Descriptor:
    desc = Descriptor(media_type, Digest.of(data), len(data), platform=platform)
    if isinstance(store, ManifestStore) and media_type in mt.MANIFESTS:
        store.push_manifest(desc, data)  # a registry keeps manifests apart from blobs
        return desc
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


@pytest.fixture
def remote_stores(pyreg_factory: Callable[..., Any]) -> Iterator[Callable[[str], RemoteStore]]:
    """``make(repository)``: a RemoteStore on one running pyreg server."""
    server = pyreg_factory()
    client = RegistryClient(server.host, plain_http=True)
    try:
        yield lambda repository: RemoteStore(client, repository)
    finally:
        client.close()


@pytest.fixture(params=["layout", "local", "remote", "registry-filesystem", "registry-s3", "registry-repo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContentStore]:
    """Every ContentStore runs the same conformance set; the registry layout's async store through
    the blocking portal that gives it the synchronous protocol (storage/asyncstore.py)."""
    if request.param == "layout":
        yield LayoutStore(tmp_path / "layout")
        return
    if request.param == "local":
        yield LocalStore(tmp_path / "local")
        return
    if request.param == "remote":
        yield request.getfixturevalue("remote_stores")("conformance/src")
        return
    if request.param == "registry-s3":
        s3 = S3Driver(s3_config_from_dict(request.getfixturevalue("s3_section")))
        with start_blocking_portal() as portal:
            yield BlockingStore(RegistryStore(s3), portal)
        s3.close()
        return
    repo = "team/app" if request.param == "registry-repo" else None
    with start_blocking_portal() as portal:
        yield BlockingStore(RegistryStore(FilesystemDriver(tmp_path / "registry"), repo), portal)


def _listed(store: ContentStore) -> list[Digest] | None:
    """What ``walk`` lists; None for a registry, which cannot list (and says so)."""
    if isinstance(store, RemoteStore):
        with pytest.raises(RemoteError, match="cannot list"):
            list(store.walk())
        return None
    return [i.digest for i in store.walk()]


def test_protocol(store: ContentStore) -> None:
    data = b"0123456789" * 10
    desc = _put(store, "application/octet-stream", data)
    info = store.info(desc.digest)
    assert info is not None and info.size == len(data)
    with store.reader(desc.digest, offset=95) as f:
        assert f.read() == b"56789"
    with store.reader(desc.digest) as f:
        assert f.read() == data
    assert _listed(store) in ([desc.digest], None)
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
    assert store.info(digest) is None and _listed(store) in ([], None)


def _walked(store: ContentStore, top: Descriptor) -> set[Digest]:
    from pyreg.storage.content import fetcher
    from pyreg.storage.graph import walk

    return {n.descriptor.digest for n in walk(top, fetcher(store))}


@pytest.mark.parametrize("dst_kind", ["layout", "local", "remote"])
def test_copy_graph(store: ContentStore, dst_kind: str, tmp_path: Path,
                    request: pytest.FixtureRequest) -> None:
    top, amd, arm = _index(store)
    dst: ContentStore
    if dst_kind == "remote":
        dst = request.getfixturevalue("remote_stores")("conformance/dst")
    else:
        dst = LayoutStore(tmp_path / "dst") if dst_kind == "layout" else LocalStore(tmp_path / "dst")
    if isinstance(dst, ManifestStore):
        # a registry refuses an index whose children it lacks: one platform is copied as itself
        one = [c.descriptor for c in copy_graph(store, dst, arm) if c.moved]
        assert [d.digest for d in one][-1] == arm.digest
        assert _has(dst, arm) and not _has(dst, amd) and not _has(dst, top)
        rest = [c.descriptor for c in copy_graph(store, dst, top) if c.moved]
        # only what the target lacked: amd's config, own layer and manifest, then the index
        assert len(rest) == 4 and [d.digest for d in rest[-2:]] == [amd.digest, top.digest]
    else:
        one = [c.descriptor for c in copy_graph(store, dst, top, platform=Platform.parse("linux/arm64"))
               if c.moved]
        assert [d.digest for d in one][-1] == top.digest
        assert _has(dst, arm) and not _has(dst, amd)
        rest = [c.descriptor for c in copy_graph(store, dst, top) if c.moved]
        # only what the target lacked: amd's manifest, config and own layer; the top is already there
        assert len(rest) == 3 and rest[-1].digest == amd.digest
    assert _walked(dst, top) == _walked(store, top) == {top.digest, amd.digest, arm.digest} | {
        d.digest for m in (amd, arm) for d in _manifest(store, m).blobs}
    assert [c for c in copy_graph(store, dst, top) if c.moved] == []


def _has(store: ContentStore, desc: Descriptor) -> bool:
    if isinstance(store, ManifestStore):
        return store.has_manifest(desc)
    return store.info(desc.digest) is not None


def _manifest(store: ContentStore, desc: Descriptor) -> Any:
    from pyreg.storage.content import fetcher

    return fetcher(store)(desc)


def test_registry_store_serves_only_what_a_repository_links(tmp_path: Path) -> None:
    """Scoped to a repository, the registry-layout store sees the blobs that repository links (as
    the registry serves them); a delete there unlinks, and the bytes stay for the others."""
    driver = FilesystemDriver(tmp_path / "registry")
    with start_blocking_portal() as portal:
        shared = BlockingStore(RegistryStore(driver), portal)
        mine = BlockingStore(RegistryStore(driver, "team/app"), portal)
        other = BlockingStore(RegistryStore(driver, "team/other"), portal)
        desc = _put(mine, "application/octet-stream", b"layer bytes")
        root, hex_ = tmp_path / "registry" / "docker/registry/v2", desc.digest.hex
        assert (root / f"repositories/team/app/_layers/sha256/{hex_}/link").read_text() == str(desc.digest)
        assert (root / f"blobs/sha256/{hex_[:2]}/{hex_}/data").read_bytes() == b"layer bytes"
        assert other.info(desc.digest) is None and list(other.walk()) == []
        with pytest.raises(ContentNotFound):
            other.reader(desc.digest)
        assert mine.delete(desc.digest) and mine.info(desc.digest) is None
        info = shared.info(desc.digest)
        assert info is not None and info.size == len(b"layer bytes")
        assert not list((root / "pyreg-ingest").iterdir())  # nothing left aside
