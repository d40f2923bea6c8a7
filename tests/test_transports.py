"""``pyreg copy`` between every transport, with skopeo as the reference for each format.

Each format pyreg writes is read by skopeo into ``oci:``, and each format skopeo writes is read by
pyreg, digests compared. Where a digest legitimately changes it is said at the assertion: a
docker-archive holds no manifest, so reading one makes a Docker schema 2 manifest around the
config and the *uncompressed* layers (digest = diff ID), as docker and skopeo do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import ClientEnv
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage, TestIndex, read_layout

pytestmark = pytest.mark.peers


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def diff_ids(image: TestImage) -> list[str]:
    return list(image.config_json["rootfs"]["diff_ids"])  # type: ignore[index]


def layout_manifest(layout: Path, name: str) -> tuple[bytes, dict[str, Any]]:
    """(manifest bytes, manifest JSON) of the entry ``name`` of a layout (any manifest type)."""
    index = json.loads((layout / "index.json").read_bytes())
    (entry,) = [m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name]
    data = (layout / "blobs" / entry["digest"].replace(":", "/")).read_bytes()
    assert sha(data) == entry["digest"]
    return data, json.loads(data)


def assert_docker_archive_graph(doc: dict[str, Any], image: TestImage) -> None:
    """A graph read from a docker-archive: the same config; layers uncompressed, by diff ID."""
    assert doc["config"]["digest"] == image.config_digest
    assert [layer["digest"] for layer in doc["layers"]] == diff_ids(image)
    assert {layer["mediaType"] for layer in doc["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar"}


def assert_same_content(layout: Path, doc: dict[str, Any], image: TestImage) -> None:
    """The same config, and layers whose content (compressed or not, skopeo recompresses what it
    read from a docker-archive when it writes oci:) hashes to the image's diff IDs."""
    assert doc["config"]["digest"] == image.config_digest
    got = []
    for layer in doc["layers"]:
        data = (layout / "blobs" / layer["digest"].replace(":", "/")).read_bytes()
        got.append(sha(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data))
    assert got == diff_ids(image)


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive", "dir", "oci"])
def test_skopeo_reads_what_pyreg_wrote(client_env: ClientEnv, skopeo: Skopeo, five_layer_image: TestImage,
                                       tmp_path: Path, kind: str) -> None:
    out = tmp_path / ("out.tar" if kind.endswith("archive") else "out")
    name = {"dir": "", "oci": ":v1"}.get(kind, ":example.com/five:1")
    client_env.run("copy", f"oci:{five_layer_image.layout}:latest", f"{kind}:{out}{name}")
    skopeo.copy(f"{kind}:{out}{name}", f"oci:{tmp_path / 'back'}:x")
    if kind == "docker-archive":
        # skopeo reads manifest.json: a made-up manifest (new digest), the same config and layer
        # content (skopeo recompresses the layers: new layer digests too)
        _, doc = layout_manifest(tmp_path / "back", "x")
        assert_same_content(tmp_path / "back", doc, five_layer_image)
        # ... and the OCI layout in the same tar (docker 25+'s readers) keeps the image as it was
        skopeo.copy(f"oci-archive:{out}:example.com/five:1", f"oci:{tmp_path / 'back2'}:x")
        assert read_layout(tmp_path / "back2", "x").manifest_digest == five_layer_image.manifest_digest
    else:
        back = read_layout(tmp_path / "back", "x")
        assert back.manifest_digest == five_layer_image.manifest_digest
        assert back.config_digest == five_layer_image.config_digest
        assert back.layer_digests == five_layer_image.layer_digests
    # and pyreg reads skopeo's copy back again, byte for byte
    client_env.run("copy", f"oci:{tmp_path / 'back'}:x", f"dir:{tmp_path / 'again'}")
    assert (tmp_path / "again" / "manifest.json").read_bytes() == layout_manifest(tmp_path / "back", "x")[0]


@pytest.mark.parametrize("kind", ["oci-archive", "docker-archive", "dir"])
def test_pyreg_reads_what_skopeo_wrote(client_env: ClientEnv, skopeo: Skopeo, five_layer_image: TestImage,
                                       tmp_path: Path, kind: str) -> None:
    src = tmp_path / ("in.tar" if kind.endswith("archive") else "in")
    name = {"dir": "", "docker-archive": ":example.com/five:1"}.get(kind, ":five")
    skopeo.copy(five_layer_image.oci_ref, f"{kind}:{src}{name}")
    client_env.run("copy", f"{kind}:{src}{name}", f"oci:{tmp_path / 'out'}:x")
    data, doc = layout_manifest(tmp_path / "out", "x")
    if kind == "docker-archive":
        assert_docker_archive_graph(doc, five_layer_image)
        assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        # pyreg's own docker-archive of the same image reads back as the very same graph
        mine = tmp_path / "mine.tar"
        client_env.run("copy", five_layer_image.oci_ref, f"docker-archive:{mine}:example.com/five:1")
        client_env.run("copy", f"docker-archive:{mine}", f"oci:{tmp_path / 'out'}:mine")
        assert layout_manifest(tmp_path / "out", "mine")[0] == data
        # skopeo's archive links layers (<id>/layer.tar -> ../<diffid>.tar): followed inside the tar
    else:
        assert sha(data) == five_layer_image.manifest_digest
    # every blob pyreg wrote is what its name says
    for blob in (tmp_path / "out" / "blobs" / "sha256").iterdir():
        assert sha(blob.read_bytes()) == f"sha256:{blob.name}"


def test_index_through_every_transport(client_env: ClientEnv, skopeo: Skopeo, index_image: TestIndex,
                                       tmp_path: Path) -> None:
    """A two-platform index keeps its digest through oci-archive, dir and oci, written by pyreg and
    read by skopeo (``--all``) and the other way round."""
    src = f"oci:{index_image.layout}:{index_image.tag}"
    client_env.run("copy", src, f"oci-archive:{tmp_path / 'i.tar'}:m")
    client_env.run("copy", f"oci-archive:{tmp_path / 'i.tar'}:m", f"dir:{tmp_path / 'd'}")
    written = sorted(p.name for p in (tmp_path / "d").iterdir() if p.name.endswith("manifest.json"))
    children = [f"{c.manifest_digest.split(':')[1]}.manifest.json" for c in index_image.children]
    assert written == sorted([*children, "manifest.json"])
    skopeo.copy(f"dir:{tmp_path / 'd'}", f"oci:{tmp_path / 'sk'}:m", "--all")
    assert layout_manifest(tmp_path / "sk", "m")[0] == index_image.index
    skopeo.copy(src, f"dir:{tmp_path / 'skd'}", "--all")
    client_env.run("copy", f"dir:{tmp_path / 'skd'}", f"oci:{tmp_path / 'py'}:m")
    assert layout_manifest(tmp_path / "py", "m")[0] == index_image.index
    # a docker-archive of an index: manifest.json lists this host's image, the layout the whole index
    client_env.run("copy", src, f"docker-archive:{tmp_path / 'd.tar'}:example.com/multi:1")
    skopeo.copy(f"docker-archive:{tmp_path / 'd.tar'}", f"oci:{tmp_path / 'dd'}:x")
    assert read_layout(tmp_path / "dd", "x").config_digest == index_image.children[0].config_digest
    skopeo.copy(f"oci-archive:{tmp_path / 'd.tar'}:example.com/multi:1", f"oci:{tmp_path / 'do'}:m", "--all")
    assert layout_manifest(tmp_path / "do", "m")[0] == index_image.index
    # one platform out of it
    native = index_image.children[0]
    arch = native.config_json["architecture"]
    client_env.run("copy", "--platform", f"linux/{arch}", src, f"oci:{tmp_path / 'one'}:n")
    assert sha(layout_manifest(tmp_path / "one", "n")[0]) == native.manifest_digest


def test_registry_both_ways(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                            five_layer_image: TestImage, tmp_path: Path) -> None:
    host = pyreg_factory().host
    archive = tmp_path / "five.tar"
    skopeo.copy(five_layer_image.oci_ref, f"docker-archive:{archive}:example.com/five:1")
    out = json.loads(client_env.run("copy", f"docker-archive:{archive}", f"docker://{host}/da/five:1",
                                    "--json").stdout)
    inspected = skopeo.inspect(tagged(host, "da/five", "1"))
    # docker-archive -> registry: the manifest is the one made from manifest.json (a new digest,
    # Docker schema 2), its layers the uncompressed tars by diff ID, the config unchanged
    assert inspected["Digest"] == out["digest"] != five_layer_image.manifest_digest
    raw = json.loads(skopeo.inspect_raw(tagged(host, "da/five", "1")))
    assert_docker_archive_graph(raw, five_layer_image)
    # registry -> every file transport, read back by skopeo with the digests the registry has
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "oci/five", "1"))
    kinds = (("oci", ":x"), ("oci-archive", ":x"), ("dir", ""), ("docker-archive", ":a.example/b:1"))
    for kind, name in kinds:
        dest = tmp_path / f"from-registry-{kind}"
        client_env.run("copy", f"docker://{host}/oci/five:1", f"{kind}:{dest}{name}", "-q")
        skopeo.copy(f"{kind}:{dest}{name}", f"oci:{tmp_path / 'check'}:{kind}")
        _, doc = layout_manifest(tmp_path / "check", kind)
        if kind == "docker-archive":
            assert_same_content(tmp_path / "check", doc, five_layer_image)
        else:
            assert sha(layout_manifest(tmp_path / "check", kind)[0]) == five_layer_image.manifest_digest
    # a layout straight to the registry, and registry to registry
    client_env.run("copy", str(five_layer_image.layout), f"{host}/bare/five:1", "-q")
    assert skopeo.digest(tagged(host, "bare/five", "1")) == five_layer_image.manifest_digest
    client_env.run("copy", f"docker://{host}/bare/five:1", f"docker://{host}/copied/five:2", "-q")
    assert skopeo.digest(tagged(host, "copied/five", "2")) == five_layer_image.manifest_digest


def test_bad_sources_say_what_is_wrong(client_env: ClientEnv, tmp_path: Path) -> None:
    (tmp_path / "plain-dir").mkdir()
    (tmp_path / "plain-dir" / "x").write_text("x")
    cases = [
        ([str(tmp_path / "nothing-here"), "oci:/tmp/x"], "no such file or directory"),
        ([str(tmp_path / "plain-dir"), "oci:/tmp/x"], "not an OCI image layout"),
        ([f"oci:{tmp_path / 'plain-dir'}", "oci:/tmp/x"], "not an OCI image layout"),
        ([f"dir:{tmp_path / 'plain-dir'}", "oci:/tmp/x"], "not a dir: image"),
        ([f"oci-archive:{tmp_path / 'nothing.tar'}", "oci:/tmp/x"], "no such file"),
        ([f"oci:{tmp_path / 'plain-dir'}", f"oci:{tmp_path / 'plain-dir'}:x"], "not an OCI image layout"),
    ]
    for args, needle in cases:
        proc = client_env.run("copy", *args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and needle in lines[0], (args, proc.stderr)
        assert "image not known locally" not in lines[0]
