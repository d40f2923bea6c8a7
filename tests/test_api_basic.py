"""The registry's core: /v2/, blob push and pull, manifest push and pull, over ASGI and a real server."""

from __future__ import annotations

import json

import httpx

from tests.fixtures.registry import RegistryServer, image_manifest, push_blob, push_image, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def test_api_root(registry_client: httpx.AsyncClient) -> None:
    for path in ("/v2/", "/v2"):
        r = await registry_client.get(path)
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert r.json() == {}
    r = await registry_client.head("/v2/")
    assert r.status_code == 200


async def test_blob_push_pull(registry_client: httpx.AsyncClient) -> None:
    data = b"some blob bytes"
    digest = await push_blob(registry_client, "library/x", data)
    r = await registry_client.get(f"/v2/library/x/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(data))
    r = await registry_client.head(f"/v2/library/x/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_manifest_push_pull_by_tag_and_digest(registry_client: httpx.AsyncClient) -> None:
    digest, manifest = await push_image(registry_client, "team/app", "v1")
    assert digest == sha256(manifest)
    for ref in ("v1", digest):
        r = await registry_client.get(f"/v2/team/app/manifests/{ref}")
        assert r.status_code == 200
        assert r.content == manifest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Content-Length"] == str(len(manifest))
        r = await registry_client.head(f"/v2/team/app/manifests/{ref}")
        assert r.status_code == 200 and r.content == b""
        assert r.headers["Content-Length"] == str(len(manifest))
        assert r.headers["Docker-Content-Digest"] == digest


def test_real_server_roundtrip(registry_server: RegistryServer) -> None:
    with httpx.Client(base_url=registry_server.url) as c:
        r = c.get("/v2/")
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer data" * 1000
        for blob in (config, layer):
            r = c.post("/v2/a/b/c/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
            assert r.status_code == 201, r.text
        manifest = image_manifest(config, [layer])
        r = c.put("/v2/a/b/c/manifests/latest", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        r = c.get("/v2/a/b/c/manifests/latest")
        assert r.content == manifest
        r = c.get(f"/v2/a/b/c/blobs/{sha256(layer)}")
        assert r.content == layer
    if registry_server.data_dir is not None:  # the filesystem driver (storage_config also runs S3)
        blob_path = registry_server.data_dir / "docker/registry/v2/blobs/sha256" / sha256(layer)[7:9] / \
            sha256(layer)[7:] / "data"
        assert blob_path.read_bytes() == layer
    registry_server.restart()
    with httpx.Client(base_url=registry_server.url) as c:
        r = c.get("/v2/a/b/c/manifests/latest")
        assert r.status_code == 200 and json.loads(r.content)["layers"][0]["digest"] == sha256(layer)


async def test_healthz(registry_client: httpx.AsyncClient) -> None:
    r = await registry_client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert (await registry_client.head("/healthz")).status_code == 200
