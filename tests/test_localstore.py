"""The local store: OCI layout that skopeo reads, chain-ID layers, locks, atomicity, rmi/prune."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from pyreg.runtime.extract import extract_layer
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.localstore import ImageNotFoundError, LocalStore, StoreError, chain_ids
from tests.fixtures.client import MemImage, mem_image
from tests.fixtures.peers import Skopeo

NAME = "localhost:5000/library/demo:latest"


def store_image(store: LocalStore, image: MemImage, name: str = NAME) -> None:
    with store.writing():
        for digest, data in image.blobs().items():
            store.put_blob(data, digest)
        store.tag(name, image.manifest_digest, "application/vnd.oci.image.manifest.v1+json",
                  len(image.manifest))


def test_layout_and_lookup(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert store.images() == []
    image = mem_image({"a.txt": b"a"})
    store_image(store, image)
    record = store.lookup("demo")
    assert str(record.digest) == image.manifest_digest and record.name == NAME
    assert store.lookup(f"demo@{image.manifest_digest}") == record
    assert store.lookup(image.config_digest.split(":")[1][:12]) == record
    assert store.image_id(record) == Digest.parse(image.config_digest)
    with pytest.raises(ImageNotFoundError):
        store.lookup("other")
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == NAME


def test_empty_layout_files_left_by_a_crash_are_written_again(tmp_path: Path) -> None:
    """A new store's oci-layout and empty index.json are written unsynced (they hold nothing);
    what a crash can leave of them is an empty file, which the next open writes again."""
    LocalStore(tmp_path / "s")
    for name in ("oci-layout", "index.json"):
        (tmp_path / "s" / name).write_bytes(b"")
    store = LocalStore(tmp_path / "s")
    assert store.images() == []
    assert json.loads((tmp_path / "s" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((tmp_path / "s" / "index.json").read_text())["manifests"] == []
    store_image(store, mem_image({"a.txt": b"a"}))
    assert [r.name for r in LocalStore(tmp_path / "s").images()] == [NAME]


def test_store_works_on_str_names_and_answers_paths(tmp_path: Path) -> None:
    """The store's file work is done on str names (``rootdir``: a pull imports no pathlib), and
    its API still answers Paths, the same whether the root was given as a str or a Path."""
    from pyreg.client import origins
    from pyreg.storage.content import LayoutStore

    as_str, as_path = LocalStore(str(tmp_path / "s")), LocalStore(tmp_path / "s")
    image = mem_image({"a.txt": b"a"})
    store_image(as_str, image)
    digest = Digest.parse(image.manifest_digest)
    for store in (as_str, as_path):
        assert store.rootdir == str(tmp_path / "s")
        assert isinstance(store.root, Path) and store.root == tmp_path / "s"
        assert store.blob_path(digest) == tmp_path / "s" / "blobs" / "sha256" / digest.hex
        assert isinstance(store.blob_file(digest), Path) and isinstance(store.layer_dir(str(digest)), Path)
        assert store.lookup("demo").digest == digest and store.read_blob(digest) == image.manifest
        assert store.info(digest) is not None and store.has_blob(digest)
    with as_str.blob_writer(Digest.of(b"x"), 1) as w:
        w.write(b"x")
        assert w.commit() == str(tmp_path / "s" / "blobs" / "sha256" / Digest.of(b"x").hex)
    desc = as_path.lookup("demo")
    first = as_str.read_manifest(desc.digest, desc.media_type).layers[0]
    origins.record(as_str.rootdir, [first], "r.example", "team/a")
    layer = first.digest
    assert origins.lookup(as_path.root, layer, "r.example") == ["team/a"]
    layout = LayoutStore(str(tmp_path / "s"))
    assert layout.blob_file(digest) == as_path.blob_path(digest) and layout.info(digest) is not None


@pytest.mark.peers
def test_skopeo_reads_the_store(tmp_path: Path, skopeo: Skopeo) -> None:
    store = LocalStore(tmp_path / "s")
    image = mem_image({"a.txt": b"a"}, {"b.txt": b"b"})
    store_image(store, image)
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700  # owner-only (issue 10), skopeo still reads
    out = tmp_path / "copy"
    skopeo.run("copy", f"oci:{store.root}:{NAME}", f"oci:{out}:x")
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest
    inspected = json.loads(skopeo.run("inspect", f"oci:{store.root}:{NAME}").stdout)
    assert inspected["Digest"] == image.manifest_digest


def test_digest_mismatch_keeps_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    digest = Digest.of(b"right")
    with store.blob_writer(digest, 5) as w, pytest.raises(DigestMismatchError):
        w.write(b"wrong")
        w.commit()
    assert not store.has_blob(digest)
    assert list((store.root / "ingest").iterdir()) == []


def test_interrupted_blob_is_invisible_and_resumes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = bytes(range(256)) * 1000
    digest = Digest.of(data)
    with store.blob_writer(digest, len(data)) as w:
        w.write(data[:1000])
        # the "connection drops" here: no commit
    assert not store.has_blob(digest)
    with store.blob_writer(digest, len(data)) as w:
        assert w.offset == 1000
        w.write(data[1000:])
        w.commit()
    assert store.read_blob(digest) == data


def test_layers_extracted_once_shared_and_verified(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    base = {"bin/x": b"x"}
    one = mem_image(base, {"one": b"1"})
    two = mem_image(base, {"two": b"2"})
    store_image(store, one, "localhost:5000/r/one:1")
    store_image(store, two, "localhost:5000/r/two:1")
    calls: list[Path] = []

    def counting(blob: Path, dest: Path, media_type: str) -> object:
        calls.append(dest)
        return extract_layer(blob, dest, media_type)

    a = store.resolve("localhost:5000/r/one:1", extractor=counting)
    b = store.resolve("localhost:5000/r/two:1", extractor=counting)
    assert len(calls) == 3  # the shared base once
    assert a.layer_dirs[0] == b.layer_dirs[0]
    assert (a.layer_dirs[0] / "bin" / "x").read_bytes() == b"x"
    assert (a.layer_dirs[1] / "one").read_bytes() == b"1"
    diff_ids = json.loads(one.config)["rootfs"]["diff_ids"]
    assert a.layer_dirs[1].parent.name == chain_ids(diff_ids)[1].split(":")[1]
    assert a.config["config"]["Cmd"] == ["sh"]


def test_extractor_diff_id_mismatch_leaves_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    image = mem_image({"a": b"a"})
    config = json.loads(image.config)
    config["rootfs"]["diff_ids"] = [str(Digest.of(b"not the layer"))]
    bad_config = json.dumps(config).encode()
    manifest = json.loads(image.manifest)
    manifest["config"] = {**manifest["config"], "digest": str(Digest.of(bad_config)), "size": len(bad_config)}
    forged = MemImage(json.dumps(manifest).encode(), bad_config, image.layers)
    store_image(store, forged)
    with pytest.raises(DigestMismatchError):
        store.resolve("demo", extractor=extract_layer)
    assert list((store.root / "layers" / "sha256").iterdir()) == []
    with pytest.raises(StoreError):
        store.resolve("demo")  # no extractor, not extracted


def _resolve_in_child(root: str, name: str) -> int:
    store = LocalStore(root)
    return len(store.resolve(name, extractor=extract_layer).layer_dirs)


def test_concurrent_resolves_share_layers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    shared = {f"f{i}": bytes([i]) * 10000 for i in range(50)}
    for i in range(4):
        store_image(store, mem_image(shared, {f"own{i}": b"o"}), f"localhost:5000/r/img{i}:1")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_resolve_in_child, [(str(store.root), f"localhost:5000/r/img{i}:1")
                                                    for i in range(4)])
    assert results == [2, 2, 2, 2]
    assert len(list((store.root / "layers" / "sha256").iterdir())) == 5
    assert list((store.root / "layers" / ".ingest").iterdir()) == []


def test_rmi_and_prune_remove_only_unused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    base = {"base": b"b"}
    one = mem_image(base, {"one": b"1"})
    two = mem_image(base, {"two": b"2"})
    store_image(store, one, "localhost:5000/r/one:1")
    store_image(store, two, "localhost:5000/r/two:1")
    store.resolve("r/one:1", extractor=extract_layer)
    store.resolve("r/two:1", extractor=extract_layer)
    # leftovers of an interrupted pull
    with store.blob_writer(Digest.of(b"partial"), 7) as w:
        w.write(b"par")
    record, removed = store.rmi("r/one:1")
    assert record.name == "localhost:5000/r/one:1"
    assert removed["blobs"] == 3 and removed["layers"] == 1 and removed["ingest"] == 1
    for digest in two.blobs():
        assert store.has_blob(digest)
    assert not store.has_blob(one.manifest_digest)
    assert store.resolve("r/two:1").layer_dirs[0].is_dir()  # shared base kept
    store.rmi("r/two:1")
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert list((store.root / "layers" / "sha256").iterdir()) == []


def test_prune_keeps_an_image_whose_config_is_not_an_object(tmp_path: Path) -> None:
    """A stored image whose config is JSON but not an object (or has no usable rootfs) names no
    layers to keep; prune keeps its blobs and goes on, instead of failing on it."""
    store = LocalStore(tmp_path / "s")
    config = b"[]"
    media_type = "application/vnd.oci.image.manifest.v1+json"
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": str(Digest.of(config)), "size": len(config)}, "layers": []}
    manifest = json.dumps(doc).encode()
    with store.writing():
        store.put_blob(config)
        digest = store.put_blob(manifest)
        store.tag(NAME, digest, media_type, len(manifest))
    stray = store.put_blob(b"stray")
    assert store.prune()["blobs"] == 1
    assert store.has_blob(digest) and store.has_blob(Digest.of(config)) and not store.has_blob(stray)


def test_a_moved_name_leaves_its_image_unnamed(tmp_path: Path) -> None:
    """The index re-points a name once for every command: the image it leaves with no name stays
    as an unnamed entry (docker's ``<none>``) until prune, never unreachable; one with another
    name left is not dangling; re-pointing at the same image changes nothing."""
    store = LocalStore(tmp_path / "s")
    one, two = mem_image({"one": b"1"}), mem_image({"two": b"2"})
    store_image(store, one, NAME)
    store_image(store, one, NAME)
    assert [r.dangling for r in store.images()] == [False]
    store_image(store, one, "localhost:5000/library/other:1")
    store_image(store, two, NAME)  # one keeps other:1
    assert not any(r.dangling for r in store.images())
    store_image(store, two, "localhost:5000/library/other:1")  # one's last name moves
    unnamed = [r for r in store.images() if r.dangling]
    assert [str(r.digest) for r in unnamed] == [one.manifest_digest]
    assert store.lookup(one.config_digest) == unnamed[0]  # by ID
    index = json.loads((tmp_path / "s" / "index.json").read_text())["manifests"]
    assert sorted("annotations" in m for m in index) == [False, True, True]
    assert store.prune()["blobs"] == 0  # rmi's sweep keeps it
    assert store.prune(dangling=True)["images"] == 1
    assert not store.has_blob(one.manifest_digest)
    assert [r.name for r in store.images()] == [NAME, "localhost:5000/library/other:1"]
