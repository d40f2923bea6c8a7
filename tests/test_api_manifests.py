"""Manifest endpoints: every kind, references checked, size limits, tags, catalog, deletes, referrers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import descriptor, image_manifest, push_blob, push_image, sha256
from tests.test_api_blobs import assert_error

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLATFORM = {"architecture": "amd64", "os": "linux"}


async def put(client: httpx.AsyncClient, name: str, ref: str, body: bytes, media_type: str | None,
              **params: Any) -> httpx.Response:
    headers = {"Content-Type": media_type} if media_type else {}
    return await client.put(f"/v2/{name}/manifests/{ref}", content=body, headers=headers, params=params)


async def test_docker_schema2_and_manifest_list(registry_client: httpx.AsyncClient) -> None:
    config, layer = b'{"os":"linux"}', b"docker layer"
    for blob in (config, layer):
        await push_blob(registry_client, "dock", blob)
    manifest = image_manifest(config, [layer], media_type=DOCKER_MANIFEST, config_type=DOCKER_CONFIG,
                              layer_type=DOCKER_LAYER)
    r = await put(registry_client, "dock", "img", manifest, DOCKER_MANIFEST)
    assert r.status_code == 201, r.text
    lst = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST,
                      "manifests": [descriptor(manifest, DOCKER_MANIFEST, platform=PLATFORM)]}).encode()
    r = await put(registry_client, "dock", "multi", lst, DOCKER_LIST)
    assert r.status_code == 201, r.text
    for ref, body, media_type in (("img", manifest, DOCKER_MANIFEST), ("multi", lst, DOCKER_LIST)):
        r = await registry_client.get(f"/v2/dock/manifests/{ref}")
        assert r.content == body and r.headers["Content-Type"] == media_type


async def test_oci_index_requires_children(registry_client: httpx.AsyncClient) -> None:
    _, manifest = await push_image(registry_client, "idx", "child")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(manifest, OCI_MANIFEST, platform=PLATFORM)]}).encode()
    r = await put(registry_client, "idx", "all", index, OCI_INDEX)
    assert r.status_code == 201, r.text
    missing = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(b"no such manifest", OCI_MANIFEST)]}).encode()
    r = await put(registry_client, "idx", "broken", missing, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    # an index in another repository does not see this repository's children
    r = await put(registry_client, "other", "all", index, OCI_INDEX)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_unknown_blobs_are_refused(registry_client: httpx.AsyncClient) -> None:
    await push_blob(registry_client, "refs", b"{}")
    manifest = image_manifest(b"{}", [b"never pushed"])
    r = await put(registry_client, "refs", "x", manifest, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert sha256(b"never pushed") in r.text
    # blobs in a different repository do not count
    await push_blob(registry_client, "elsewhere", b"never pushed")
    r = await put(registry_client, "refs", "x", manifest, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(await registry_client.get("/v2/refs/manifests/x"), 404, "MANIFEST_UNKNOWN")


async def test_artifact_with_subject_and_referrers(registry_client: httpx.AsyncClient) -> None:
    # the referrer comes first: its subject does not exist yet
    subject = image_manifest(b"{}", [b"subject layer"])
    subject_digest = sha256(subject)
    await push_blob(registry_client, "art", b"{}")
    await push_blob(registry_client, "art", b"signature")
    await push_blob(registry_client, "art", b"sbom")
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}

    def artifact(kind: str, blob: bytes, **extra: Any) -> bytes:
        return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
                           "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
                           "layers": [descriptor(blob, "application/octet-stream")],
                           "subject": subject_desc, **extra}).encode()

    sig = artifact("application/vnd.example.sig", b"signature", annotations={"who": "me"})
    r = await put(registry_client, "art", sha256(sig), sig, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject_digest
    sbom = artifact("application/vnd.example.sbom", b"sbom")
    r = await put(registry_client, "art", sha256(sbom), sbom, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject_digest
    # an index can be a referrer too
    idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                      "artifactType": "application/vnd.example.idx",
                      "manifests": [], "subject": subject_desc}).encode()
    r = await put(registry_client, "art", sha256(idx), idx, OCI_INDEX)
    assert r.status_code == 201, r.text

    r = await registry_client.get(f"/v2/art/referrers/{subject_digest}")
    assert r.status_code == 200 and r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in body["manifests"]}
    assert set(by_digest) == {sha256(sig), sha256(sbom), sha256(idx)}
    assert by_digest[sha256(sig)] == {"mediaType": OCI_MANIFEST, "digest": sha256(sig), "size": len(sig),
                                      "artifactType": "application/vnd.example.sig",
                                      "annotations": {"who": "me"}}
    assert by_digest[sha256(idx)]["mediaType"] == OCI_INDEX

    r = await registry_client.get(f"/v2/art/referrers/{subject_digest}",
                                  params={"artifactType": "application/vnd.example.sbom"})
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(sbom)]

    # the subject arrives later; the referrers stay
    await push_blob(registry_client, "art", b"subject layer")
    assert (await put(registry_client, "art", "subject", subject, OCI_MANIFEST)).status_code == 201
    r = await registry_client.get(f"/v2/art/referrers/{subject_digest}")
    assert len(r.json()["manifests"]) == 3

    # deleting a referrer removes it from the list
    assert (await registry_client.delete(f"/v2/art/manifests/{sha256(sbom)}")).status_code == 202
    r = await registry_client.get(f"/v2/art/referrers/{subject_digest}")
    assert {m["digest"] for m in r.json()["manifests"]} == {sha256(sig), sha256(idx)}

    # nothing refers to this one, and a bad digest is refused
    r = await registry_client.get(f"/v2/art/referrers/{sha256(b'lonely')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    assert_error(await registry_client.get("/v2/art/referrers/sha256:nope"), 400, "DIGEST_INVALID")


async def test_image_referrer_reports_config_media_type(registry_client: httpx.AsyncClient) -> None:
    subject_digest, _ = await push_image(registry_client, "cfg", "base")
    await push_blob(registry_client, "cfg", b"custom config")
    body = json.loads(image_manifest(b"custom config", [b"layer"], config_type="application/vnd.example.cfg"))
    body["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": 10}
    data = json.dumps(body).encode()
    assert (await put(registry_client, "cfg", sha256(data), data, OCI_MANIFEST)).status_code == 201
    r = await registry_client.get(f"/v2/cfg/referrers/{subject_digest}")
    assert r.json()["manifests"][0]["artifactType"] == "application/vnd.example.cfg"


async def test_push_by_digest_is_verified_and_multi_tag(registry_client: httpx.AsyncClient) -> None:
    _, manifest = await push_image(registry_client, "md", "first")
    digest = sha256(manifest)
    r = await put(registry_client, "md", sha256(manifest + b" "), manifest, OCI_MANIFEST)
    assert_error(r, 400, "DIGEST_INVALID")
    r = await registry_client.put(f"/v2/md/manifests/{digest}?tag=a&tag=b&tag=c", content=manifest,
                                  headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    assert r.headers.get_list("OCI-Tag") == ["a", "b", "c"] or \
        sorted(t.strip() for h in r.headers.get_list("OCI-Tag") for t in h.split(",")) == ["a", "b", "c"]
    assert r.headers["Location"] == f"/v2/md/manifests/{digest}"
    for tag in ("a", "b", "c"):
        assert (await registry_client.get(f"/v2/md/manifests/{tag}")).content == manifest
    r = await registry_client.put(f"/v2/md/manifests/{digest}?tag=ok&tag=-bad", content=manifest,
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "TAG_INVALID")
    assert_error(await registry_client.get("/v2/md/manifests/ok"), 404, "MANIFEST_UNKNOWN")


async def test_sha512_manifest(registry_client: httpx.AsyncClient) -> None:
    import hashlib

    _, manifest = await push_image(registry_client, "m512", "x")
    digest = "sha512:" + hashlib.sha512(manifest).hexdigest()
    r = await put(registry_client, "m512", digest, manifest, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    r = await registry_client.get(f"/v2/m512/manifests/{digest}")
    assert r.content == manifest and r.headers["Docker-Content-Digest"] == digest


async def test_manifest_size_limit(registry_client: httpx.AsyncClient) -> None:
    await push_blob(registry_client, "big", b"{}")
    await push_blob(registry_client, "big", b"layer")
    base = json.loads(image_manifest(b"{}", [b"layer"]))
    base["annotations"] = {"pad": ""}
    overhead = len(json.dumps(base).encode())
    base["annotations"]["pad"] = "x" * (4 * 1024 * 1024 - overhead)
    exact = json.dumps(base).encode()
    assert len(exact) == 4 * 1024 * 1024
    r = await put(registry_client, "big", "four-mib", exact, OCI_MANIFEST)
    assert r.status_code == 201, r.text[:300]
    assert (await registry_client.get("/v2/big/manifests/four-mib")).content == exact
    base["annotations"]["pad"] += "x"
    r = await put(registry_client, "big", "too-big", json.dumps(base).encode(), OCI_MANIFEST)
    assert_error(r, 413, "SIZE_INVALID")

    async def chunked() -> Any:  # no Content-Length: the limit applies while streaming
        body = json.dumps(base).encode()
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = await registry_client.put("/v2/big/manifests/too-big", content=chunked(),
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 413, "SIZE_INVALID")
    assert_error(await registry_client.get("/v2/big/manifests/too-big"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("body,media_type", [
    (b"{not json", OCI_MANIFEST),
    (b'"a string"', OCI_MANIFEST),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode(), OCI_MANIFEST),
    (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x/y"},
                 "layers": []}).encode(), OCI_MANIFEST),
    (json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(),
     "application/vnd.docker.distribution.manifest.v1+json"),
    (image_manifest(b"{}", []), OCI_INDEX),  # Content-Type disagrees with mediaType
    (image_manifest(b"{}", []), DOCKER_MANIFEST),
    (image_manifest(b"{}", [], media_type="application/x.weird"), "application/x.weird"),
])
async def test_invalid_manifests(registry_client: httpx.AsyncClient, body: bytes, media_type: str) -> None:
    await push_blob(registry_client, "inv", b"{}")
    assert_error(await put(registry_client, "inv", "t", body, media_type), 400, "MANIFEST_INVALID")
    assert_error(await registry_client.get("/v2/inv/manifests/t"), 404, "MANIFEST_UNKNOWN")


async def test_tags_list_pagination(registry_client: httpx.AsyncClient) -> None:
    tags = ["1.0", "1.1", "2.0", "latest", "a", "B"]
    _, manifest = await push_image(registry_client, "paged/repo", tags[0])
    for tag in tags[1:]:
        assert (await put(registry_client, "paged/repo", tag, manifest, OCI_MANIFEST)).status_code == 201
    expected = sorted(tags)
    r = await registry_client.get("/v2/paged/repo/tags/list")
    assert r.json() == {"name": "paged/repo", "tags": expected} and "Link" not in r.headers
    seen: list[str] = []
    url: str | None = "/v2/paged/repo/tags/list?n=4"
    while url:
        r = await registry_client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert 0 < len(page) <= 4
        seen += page
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('rel="next"')
    assert seen == expected
    r = await registry_client.get("/v2/paged/repo/tags/list", params={"n": "2", "last": "2.0"})
    assert r.json()["tags"] == expected[expected.index("2.0") + 1:][:2]
    r = await registry_client.get("/v2/paged/repo/tags/list", params={"n": "0"})
    assert r.json()["tags"] == []
    assert_error(await registry_client.get("/v2/paged/repo/tags/list", params={"n": "-1"}), 400,
                 "PAGINATION_NUMBER_INVALID")
    assert_error(await registry_client.get("/v2/nobody/tags/list"), 404, "NAME_UNKNOWN")


async def test_catalog_pagination(registry_client: httpx.AsyncClient) -> None:
    names = ["zeta", "alpha/one", "alpha/two", "beta", "deep/a/b/c"]
    for name in names:
        await push_image(registry_client, name, "t")
    await push_blob(registry_client, "blobs-only", b"x")  # no manifests: not a repository yet
    r = await registry_client.get("/v2/_catalog")
    assert r.json() == {"repositories": sorted(names)}
    seen: list[str] = []
    url: str | None = "/v2/_catalog?n=2"
    while url:
        r = await registry_client.get(url)
        seen += r.json()["repositories"]
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    assert seen == sorted(names)
    r = await registry_client.get("/v2/_catalog", params={"last": "beta"})
    assert r.json()["repositories"] == ["deep/a/b/c", "zeta"]


async def test_manifest_deletes(registry_client: httpx.AsyncClient) -> None:
    digest, manifest = await push_image(registry_client, "rm", "one")
    await put(registry_client, "rm", "two", manifest, OCI_MANIFEST)
    # delete a single tag: the other tag and the digest stay
    assert (await registry_client.delete("/v2/rm/manifests/one")).status_code == 202
    assert_error(await registry_client.get("/v2/rm/manifests/one"), 404, "MANIFEST_UNKNOWN")
    assert (await registry_client.get("/v2/rm/manifests/two")).status_code == 200
    assert_error(await registry_client.delete("/v2/rm/manifests/one"), 404, "MANIFEST_UNKNOWN")
    # delete by digest: the revision and every tag pointing at it go
    assert (await registry_client.delete(f"/v2/rm/manifests/{digest}")).status_code == 202
    assert_error(await registry_client.get(f"/v2/rm/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry_client.head(f"/v2/rm/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry_client.get("/v2/rm/manifests/two"), 404, "MANIFEST_UNKNOWN")
    assert (await registry_client.get("/v2/rm/tags/list")).json()["tags"] == []
    assert_error(await registry_client.delete(f"/v2/rm/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    # it can be pushed again
    assert (await put(registry_client, "rm", "three", manifest, OCI_MANIFEST)).status_code == 201


async def test_manifest_deletes_disabled(make_registry_client: Any) -> None:
    client = await make_registry_client({"storage": {"delete": {"enabled": False}}})
    digest, _ = await push_image(client, "keep", "t")
    assert_error(await client.delete(f"/v2/keep/manifests/{digest}"), 405, "UNSUPPORTED")
    assert_error(await client.delete("/v2/keep/manifests/t"), 405, "UNSUPPORTED")
    assert (await client.get("/v2/keep/manifests/t")).status_code == 200


async def test_tag_moves(registry_client: httpx.AsyncClient) -> None:
    first, _ = await push_image(registry_client, "mv", "latest", layers=(b"one",))
    second, _ = await push_image(registry_client, "mv", "latest", layers=(b"two",))
    assert first != second
    r = await registry_client.get("/v2/mv/manifests/latest")
    assert r.headers["Docker-Content-Digest"] == second
    assert (await registry_client.get(f"/v2/mv/manifests/{first}")).status_code == 200
