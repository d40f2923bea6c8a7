"""storage.manifest: every manifest kind, what it references, and clear errors for bad ones."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pyreg.storage import mediatypes as mt
from pyreg.storage.manifest import Descriptor, ManifestError, parse_manifest, sniff_media_type

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
D3 = "sha512:" + "c" * 128


def desc(media_type: str, digest: str = D1, size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


OM, OI = mt.OCI_MANIFEST, mt.OCI_INDEX
CFG = {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10}


def doc(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_oci_manifest() -> None:
    m = parse_manifest(doc(schemaVersion=2, mediaType=mt.OCI_MANIFEST, config=desc(mt.OCI_CONFIG, D1),
                           layers=[desc(mt.OCI_LAYER_GZIP, D2), desc(mt.OCI_LAYER_ZSTD, D3)],
                           annotations={"a": "b"}), mt.OCI_MANIFEST)
    assert m.media_type == mt.OCI_MANIFEST and not m.is_index
    assert m.config is not None and str(m.config.digest) == D1
    assert [str(d.digest) for d in m.blobs] == [D1, D2, D3]
    assert m.effective_artifact_type == mt.OCI_CONFIG
    assert m.annotations == {"a": "b"} and m.subject is None


def test_oci_manifest_without_media_type_field_takes_header_or_shape() -> None:
    body = doc(schemaVersion=2, config=desc(mt.OCI_CONFIG), layers=[])
    assert parse_manifest(body, mt.OCI_MANIFEST).media_type == mt.OCI_MANIFEST
    assert parse_manifest(body).media_type == mt.OCI_MANIFEST
    index = doc(schemaVersion=2, manifests=[])
    assert parse_manifest(index).media_type == mt.OCI_INDEX


def test_oci_index_and_docker_list() -> None:
    platform = {"architecture": "amd64", "os": "linux"}
    m = parse_manifest(doc(schemaVersion=2, mediaType=mt.OCI_INDEX,
                           manifests=[desc(OM, D1, platform=platform), desc(OM, D2)]))
    assert m.is_index and [str(d.digest) for d in m.manifests] == [D1, D2]
    assert m.blobs == () and len(m.references) == 2
    assert m.manifests[0].platform == platform
    lst = parse_manifest(doc(schemaVersion=2, mediaType=mt.DOCKER_MANIFEST_LIST,
                             manifests=[desc(mt.DOCKER_MANIFEST, D1, platform=platform)]),
                         mt.DOCKER_MANIFEST_LIST)
    assert lst.is_index and lst.media_type == mt.DOCKER_MANIFEST_LIST
    with pytest.raises(ManifestError, match="platform"):
        parse_manifest(doc(schemaVersion=2, mediaType=mt.DOCKER_MANIFEST_LIST,
                           manifests=[desc(mt.DOCKER_MANIFEST, D1)]))


def test_docker_schema2() -> None:
    m = parse_manifest(doc(schemaVersion=2, mediaType=mt.DOCKER_MANIFEST, config=desc(mt.DOCKER_CONFIG),
                           layers=[desc(mt.DOCKER_LAYER_GZIP, D2)]), mt.DOCKER_MANIFEST)
    assert m.media_type == mt.DOCKER_MANIFEST and len(m.layers) == 1
    with pytest.raises(ManifestError, match="mediaType"):
        parse_manifest(doc(schemaVersion=2, config=desc(mt.DOCKER_CONFIG), layers=[]), mt.DOCKER_MANIFEST)


def test_artifact_with_empty_config_and_subject() -> None:
    m = parse_manifest(doc(schemaVersion=2, mediaType=mt.OCI_MANIFEST, artifactType="application/x.sig",
                           config=desc(mt.OCI_EMPTY, D1, 2), layers=[desc("application/x.sig.data", D2)],
                           subject=desc(mt.OCI_MANIFEST, D3)))
    assert m.artifact_type == "application/x.sig" == m.effective_artifact_type
    assert m.subject is not None and str(m.subject.digest) == D3
    assert D3 not in [str(d.digest) for d in m.references]  # the subject need not exist


def test_descriptor_roundtrip() -> None:
    raw = desc(mt.OCI_MANIFEST, D1, 5, artifactType="a/b", annotations={"k": "v"}, urls=["http://x"])
    d = Descriptor.from_json(raw)
    assert d.to_json() == raw


@pytest.mark.parametrize("body,content_type,match", [
    (b"not json", None, "not valid JSON"),
    (b"[]", None, "JSON object"),
    (doc(schemaVersion=1, name="x", tag="y", fsLayers=[]), None, "schema 1"),
    (doc(schemaVersion=3, mediaType=OM, config=CFG, layers=[]), None, "schemaVersion"),
    (doc(mediaType=OM, config=CFG, layers=[]), None, "schemaVersion"),
    (doc(schemaVersion=2, mediaType=OM, layers=[]), None, "config"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG), None, "layers"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers={}), None, "layers"),
    (doc(schemaVersion=2, mediaType=OM, config=desc(mt.OCI_CONFIG, "sha256:zz"), layers=[]),
     None, "config.digest"),
    (doc(schemaVersion=2, mediaType=OM, config=desc(mt.OCI_CONFIG, "md5:" + "a" * 32), layers=[]),
     None, "unsupported"),
    (doc(schemaVersion=2, mediaType=OM, config=desc(mt.OCI_CONFIG, size=-1), layers=[]),
     None, "config.size"),
    (doc(schemaVersion=2, mediaType=OM, config=desc(mt.OCI_CONFIG, size="1"), layers=[]),
     None, "config.size"),
    (doc(schemaVersion=2, mediaType=OM, config=desc("notatype"), layers=[]), None, "mediaType"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[42]), None, "layers\\[0\\]"),
    (doc(schemaVersion=2, mediaType=OI, manifests="x"), None, "manifests"),
    (doc(schemaVersion=2, mediaType=OI, manifests=[], config=CFG), None, "must not"),
    (doc(schemaVersion=2, mediaType="application/x.unknown", config=CFG, layers=[]), None,
     "unsupported manifest media type"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[]), mt.OCI_INDEX,
     "does not match"),
    (doc(schemaVersion=2, mediaType=mt.DOCKER_MANIFEST, config=desc(mt.DOCKER_CONFIG), layers=[]),
     mt.OCI_MANIFEST, "does not match"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[],
         subject={"digest": D1}), None, "subject.mediaType"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[],
         annotations={"a": 1}), None, "annotations"),
    (doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[], artifactType=5),
     None, "artifactType"),
])
def test_invalid_manifests(body: bytes, content_type: str | None, match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(body, content_type)


def test_generic_content_type_is_ignored() -> None:
    body = doc(schemaVersion=2, mediaType=OM, config=CFG, layers=[])
    for ct in ("application/json", "application/octet-stream", "", None, f"{mt.OCI_MANIFEST}; charset=utf-8"):
        assert parse_manifest(body, ct).media_type == mt.OCI_MANIFEST


def test_sniff_never_raises() -> None:
    assert sniff_media_type(b"\xff\xfe") == "application/octet-stream"
    assert sniff_media_type(doc(schemaVersion=1, signatures=[])) == mt.DOCKER_SCHEMA1_SIGNED
    assert sniff_media_type(doc(schemaVersion=2, manifests=[])) == mt.OCI_INDEX
    assert sniff_media_type(doc(mediaType=mt.DOCKER_MANIFEST)) == mt.DOCKER_MANIFEST
