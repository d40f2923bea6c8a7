"""Bad input: names, tags, methods, traversal, read-only mode — each with the spec's status and code."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import RegistryServer, push_blob, push_image, sha256
from tests.test_api_blobs import assert_error

DIGEST = sha256(b"x")

BAD_NAMES = ["Upper/case", "a//b", "/lead", "trail/", "a/../b", "..", "a/./b", "-dash", "a_", "a..b",
             "x" * 256, "a/" + "b" * 254, "sp ace", "a%b", "ü"]


def endpoints(name: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{DIGEST}"),
        ("GET", f"/v2/{name}/blobs/{DIGEST}"),
        ("HEAD", f"/v2/{name}/blobs/{DIGEST}"),
        ("DELETE", f"/v2/{name}/blobs/{DIGEST}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/blobs/uploads/some-id"),
        ("PATCH", f"/v2/{name}/blobs/uploads/some-id"),
        ("PUT", f"/v2/{name}/blobs/uploads/some-id?digest={DIGEST}"),
        ("DELETE", f"/v2/{name}/blobs/uploads/some-id"),
        ("GET", f"/v2/{name}/referrers/{DIGEST}"),
    ]


def raw_request(host: str, request_line: str, body: bytes = b"", headers: dict[str, str] | None = None) -> \
        tuple[int, bytes]:
    """Send bytes exactly as given (no client normalises the path) and return (status, body)."""
    hostname, port = host.rsplit(":", 1)
    hdrs = {"Host": host, "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with socket.create_connection((hostname, int(port)), timeout=30) as s:
        s.sendall(head.encode() + body)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    response = b"".join(chunks)
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_names(registry_client: httpx.AsyncClient, name: str) -> None:
    from urllib.parse import quote

    # dot segments are percent-encoded so that httpx does not collapse them before sending
    path_name = "/".join(quote(part, safe="").replace(".", "%2E") if part in (".", "..") else quote(part)
                         for part in name.split("/"))
    for method, url in endpoints(path_name):
        r = await registry_client.request(method, url, content=b"{}" if method in ("PUT", "PATCH") else None)
        assert_error(r, 400, "NAME_INVALID")


async def test_invalid_tags(registry_client: httpx.AsyncClient) -> None:
    _, manifest = await push_image(registry_client, "tags", "good")
    for tag in ("-leading", ".dot", "a" * 129, "sp%20ace", "semi;colon", "ü"):
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        r = await registry_client.put(f"/v2/tags/manifests/{tag}", content=manifest, headers=headers)
        assert_error(r, 400, "TAG_INVALID")
        # neither a tag nor a digest names no manifest (Distribution, the conformance suite)
        assert_error(await registry_client.get(f"/v2/tags/manifests/{tag}"), 404, "MANIFEST_UNKNOWN")
    r = await registry_client.get("/v2/tags/tags/list")
    assert r.json()["tags"] == ["good"]
    # the longest valid tag works
    tag = "a" * 128
    r = await registry_client.put(f"/v2/tags/manifests/{tag}", content=manifest,
                                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201


async def test_unknown_methods_and_paths(registry_client: httpx.AsyncClient) -> None:
    digest = await push_blob(registry_client, "meth", b"data")
    for method, url in [("POST", "/v2/meth/manifests/latest"), ("PATCH", f"/v2/meth/blobs/{digest}"),
                        ("PUT", f"/v2/meth/blobs/{digest}"), ("POST", "/v2/meth/tags/list"),
                        ("DELETE", "/v2/_catalog"), ("PUT", "/v2/"), ("GET", "/v2/meth/blobs/uploads/"),
                        ("OPTIONS", f"/v2/meth/blobs/{digest}"), ("FOO", "/v2/meth/tags/list"),
                        ("POST", f"/v2/meth/referrers/{digest}")]:
        r = await registry_client.request(method, url)
        assert_error(r, 405, "UNSUPPORTED")
        assert r.headers["Allow"]
    r = await registry_client.get("/v2/meth/nothing/here")
    assert r.status_code == 404 and r.json()["errors"][0]["code"]


async def test_unknown_things_are_404(registry_client: httpx.AsyncClient) -> None:
    assert_error(await registry_client.get(f"/v2/ghost/blobs/{DIGEST}"), 404, "BLOB_UNKNOWN")
    assert_error(await registry_client.head(f"/v2/ghost/blobs/{DIGEST}"), 404, "BLOB_UNKNOWN")
    assert_error(await registry_client.get("/v2/ghost/manifests/latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry_client.get(f"/v2/ghost/manifests/{DIGEST}"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry_client.head("/v2/ghost/manifests/latest"), 404, "MANIFEST_UNKNOWN")
    assert_error(await registry_client.get("/v2/ghost/tags/list"), 404, "NAME_UNKNOWN")
    assert_error(await registry_client.delete(f"/v2/ghost/blobs/{DIGEST}"), 404, "BLOB_UNKNOWN")
    assert_error(await registry_client.delete("/v2/ghost/manifests/latest"), 404, "MANIFEST_UNKNOWN")


async def test_encoded_traversal(registry_client: httpx.AsyncClient) -> None:
    """Percent-encoded dot segments reach the app decoded and are refused as names."""
    for url in ("/v2/a/%2e%2e/%2e%2e/b/manifests/latest", "/v2/%2e%2e/blobs/uploads/",
                "/v2/a%2f..%2fb/tags/list", f"/v2/a/%2E%2E/blobs/{DIGEST}"):
        r = await registry_client.request("POST" if url.endswith("uploads/") else "GET", url)
        assert_error(r, 400, "NAME_INVALID")


def test_raw_traversal_on_a_real_server(registry_server: RegistryServer) -> None:
    for line in ("GET /v2/../../../etc/passwd HTTP/1.1",
                 "GET /v2/a/../../../../etc/manifests/passwd HTTP/1.1",
                 "POST /v2/a/../../../tmp/blobs/uploads/ HTTP/1.1",
                 f"GET /v2/a/b/../../blobs/{DIGEST} HTTP/1.1",
                 "GET /v2/a/%2e%2e/%2e%2e/x/tags/list HTTP/1.1"):
        status, body = raw_request(registry_server.host, line)
        assert 400 <= status < 500, (line, status, body)
    if registry_server.data_dir is not None:
        created = {p.name for p in registry_server.data_dir.rglob("*")}
        assert "tmp" not in created and "etc" not in created


async def test_readonly_mode(make_registry_client: Any, storage_config: dict[str, Any]) -> None:
    writable = await make_registry_client()
    digest, _ = await push_image(writable, "ro", "t")
    client = await make_registry_client({"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    assert (await client.get("/v2/ro/manifests/t")).status_code == 200
    assert (await client.head(f"/v2/ro/manifests/{digest}")).status_code == 200
    for method, url in [("POST", "/v2/ro/blobs/uploads/"), ("PUT", "/v2/ro/manifests/t2"),
                        ("DELETE", f"/v2/ro/manifests/{digest}"), ("PATCH", "/v2/ro/blobs/uploads/x")]:
        assert_error(await client.request(method, url, content=b"{}"), 405, "UNSUPPORTED")
    assert (await client.get("/v2/ro/manifests/t")).status_code == 200


async def test_hostile_input_never_500(registry_client: httpx.AsyncClient) -> None:
    """Odd bodies, headers and parameters: each gets a 4xx (or works), never a 500."""
    digest = await push_blob(registry_client, "odd", b"odd blob")
    location = (await registry_client.post("/v2/odd/blobs/uploads/")).headers["Location"]
    oci = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("PUT", "/v2/odd/manifests/t", {"content": b"[" * 100000, "headers": oci}),
        ("PUT", "/v2/odd/manifests/t", {"content": b"null", "headers": oci}),
        ("PUT", "/v2/odd/manifests/t", {"content": b"\xff\xfe\x00garbage", "headers": oci}),
        ("PUT", "/v2/odd/manifests/t", {"content": b'{"schemaVersion": 2, "config": {"size": 1e400}}',
                                        "headers": oci}),
        ("PUT", "/v2/odd/manifests/t", {"content": b"{}", "headers": {"Content-Type": b"\xe9/x"}}),
        ("GET", f"/v2/odd/blobs/{digest}", {"headers": {"Range": "bytes=abc-def"}}),
        ("GET", f"/v2/odd/blobs/{digest}", {"headers": {"Range": "bytes=99999999999999999999-"}}),
        ("GET", f"/v2/odd/blobs/{digest}", {"headers": {"Range": "bytes=5-2"}}),
        ("GET", f"/v2/odd/blobs/{digest}", {"headers": {"Range": "bytes=0-1,4-5"}}),
        ("PATCH", location, {"content": b"x", "headers": {"Content-Range": "99999999999999999999-0"}}),
        ("PATCH", location, {"content": b"x", "headers": {"Content-Range": "0-5"}}),
        ("PATCH", location, {"content": b"x", "headers": {"Content-Range": "-1-0"}}),
        ("PUT", location, {"params": {"digest": "sha256:\u00e9"}}),
        ("GET", "/v2/odd/tags/list", {"params": {"n": "99999999999999999999", "last": "\u00e9\x00"}}),
        ("GET", "/v2/odd/tags/list", {"params": {"n": "abc"}}),
        ("GET", "/v2/_catalog", {"params": {"n": "1.5"}}),
        ("GET", f"/v2/odd/referrers/{digest}", {"params": {"artifactType": "\x00"}}),
        ("POST", "/v2/odd/blobs/uploads/", {"params": {"mount": digest, "from": "x" * 1000}}),
        ("POST", "/v2/odd/blobs/uploads/", {"params": {"mount": "\u00e9", "from": "odd"}}),
        ("POST", "/v2/odd/blobs/uploads/", {"params": {"digest-algorithm": "\u00e9" * 100}}),
        ("GET", "/v2/odd/manifests/%00", {}),
        ("GET", "/v2/odd%00/manifests/t", {}),
        ("GET", "/v2/odd/blobs/uploads/%00", {}),
        ("GET", "/v2/odd/manifests/" + "a" * 5000, {}),
        ("GET", "/v2/" + "a/" * 2000 + "manifests/t", {}),
    ]
    for method, url, kwargs in cases:
        r = await registry_client.request(method, url, **kwargs)
        assert r.status_code < 500, (method, url, kwargs.get("headers"), r.text[:300])
        if r.status_code >= 400:
            assert r.json()["errors"][0]["code"]
