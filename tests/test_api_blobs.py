"""Blob endpoints: Range pulls, every push flow, upload status/cancel, mount, sha512, bad input."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import push_blob, sha256


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def data_dir(storage_config: dict[str, Any]) -> Path | None:
    fs = storage_config.get("filesystem")
    return Path(fs["rootdirectory"]) if fs else None


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    if r.request.method != "HEAD":
        body = r.json()
        assert body["errors"][0]["code"] == code, body
        assert body["errors"][0]["message"]


async def start_upload(client: httpx.AsyncClient, name: str, **params: str) -> str:
    r = await client.post(f"/v2/{name}/blobs/uploads/", params=params)
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-0" and r.headers["Content-Length"] == "0"
    assert r.headers["Docker-Upload-UUID"]
    location = r.headers["Location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    return location


async def test_range_requests(registry_client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 40
    digest = await push_blob(registry_client, "r", data)
    url = f"/v2/r/blobs/{digest}"
    end = len(data) - 1
    cases = {"bytes=0-9": (0, 9), "bytes=100-": (100, end), "bytes=-16": (end - 15, end),
             "bytes=10-99999999": (10, end)}
    for header, (start, end) in cases.items():
        r = await registry_client.get(url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == data[start:end + 1]
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
        assert r.headers["Content-Length"] == str(end - start + 1)
        assert r.headers["Docker-Content-Digest"] == digest
    r = await registry_client.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert_error(r, 416, "BLOB_UNKNOWN")
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = await registry_client.get(url, headers={"Range": "pages=1-2"})
    assert r.status_code == 200 and r.content == data
    r = await registry_client.head(url, headers={"Range": "bytes=0-0"})
    assert r.status_code == 206 and r.headers["Content-Length"] == "1"


async def test_empty_blob(registry_client: httpx.AsyncClient) -> None:
    digest = await push_blob(registry_client, "e", b"")
    r = await registry_client.get(f"/v2/e/blobs/{digest}")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


async def test_post_then_put_monolithic(registry_client: httpx.AsyncClient) -> None:
    data = b"monolithic body"
    location = await start_upload(registry_client, "m")
    r = await registry_client.put(location, params={"digest": sha256(data)}, content=data,
                                  headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/m/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data) and r.headers["Content-Length"] == "0"
    assert (await registry_client.get(r.headers["Location"])).content == data


async def test_streamed_patch(registry_client: httpx.AsyncClient) -> None:
    parts = [b"a" * 1000, b"b" * 5000, b"c" * 3]

    async def body() -> Any:
        for p in parts:
            yield p

    location = await start_upload(registry_client, "s")
    r = await registry_client.patch(location, content=body())
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == "0-6002" and r.headers["Location"] == location
    data = b"".join(parts)
    r = await registry_client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201, r.text
    assert (await registry_client.get(f"/v2/s/blobs/{sha256(data)}")).content == data


async def test_chunked_upload_with_content_range(registry_client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 100
    chunks = [data[:1000], data[1000:20000], data[20000:]]
    location = await start_upload(registry_client, "team/chunked")
    offset = 0
    for chunk in chunks[:-1]:
        r = await registry_client.patch(location, content=chunk, headers={
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["Range"] == f"0-{offset - 1}"
        assert r.headers["Location"] == location
        status = await registry_client.get(location)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{offset - 1}"
        assert status.headers["Location"] == location and status.headers["Docker-Upload-UUID"]
    # a gap and a repeat both get 416 with Range and Location; the stored data is unchanged
    for bad_start in (offset + 1, 0):
        r = await registry_client.patch(location, content=b"xx", headers={
            "Content-Range": f"{bad_start}-{bad_start + 1}"})
        assert_error(r, 416, "BLOB_UPLOAD_INVALID")
        assert r.headers["Range"] == f"0-{offset - 1}" and r.headers["Location"] == location
    r = await registry_client.patch(location, content=b"xx", headers={"Content-Range": "garbage"})
    assert_error(r, 416, "BLOB_UPLOAD_INVALID")
    assert r.headers["Range"] == f"0-{offset - 1}"
    # the last chunk comes with the PUT
    last = chunks[-1]
    r = await registry_client.put(location, params={"digest": sha256(data)}, content=last, headers={
        "Content-Range": f"{offset}-{offset + len(last) - 1}"})
    assert r.status_code == 201, r.text
    r = await registry_client.get(f"/v2/team/chunked/blobs/{sha256(data)}")
    assert r.content == data
    # the session is gone once finished
    assert_error(await registry_client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_upload_cancel(registry_client: httpx.AsyncClient, storage_config: dict[str, Any]) -> None:
    location = await start_upload(registry_client, "c")
    r = await registry_client.patch(location, content=b"partial")
    assert r.status_code == 202
    r = await registry_client.delete(location)
    assert r.status_code == 204
    assert_error(await registry_client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry_client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry_client.patch(location, content=b"x"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await registry_client.put(location, params={"digest": sha256(b"x")}, content=b"x"),
                 404, "BLOB_UPLOAD_UNKNOWN")
    root = data_dir(storage_config)
    if root is not None:
        assert list((root / "docker/registry/v2/repositories/c/_uploads").iterdir()) == []


@pytest.mark.parametrize("upload_id", ["does-not-exist", "0123456789abcdef", "..", "a.b", "x" * 300])
async def test_unknown_upload_ids(registry_client: httpx.AsyncClient, upload_id: str) -> None:
    base = f"/v2/u/blobs/uploads/{upload_id}"
    for method in ("GET", "PATCH", "DELETE"):
        r = await registry_client.request(method, base, content=b"x" if method == "PATCH" else None)
        if upload_id == "..":  # httpx normalises the dot segment away: a different endpoint
            continue
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = await registry_client.put(base, params={"digest": sha256(b"")})
    if upload_id != "..":
        assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_wrong_digest_stores_nothing(registry_client: httpx.AsyncClient,
                                           storage_config: dict[str, Any]) -> None:
    data, claimed = b"the real bytes", sha256(b"other bytes")
    r = await registry_client.post("/v2/w/blobs/uploads/", params={"digest": claimed}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    location = await start_upload(registry_client, "w")
    await registry_client.patch(location, content=data)
    r = await registry_client.put(location, params={"digest": claimed})
    assert_error(r, 400, "DIGEST_INVALID")
    for digest in (claimed, sha256(data)):
        assert_error(await registry_client.head(f"/v2/w/blobs/{digest}"), 404, "BLOB_UNKNOWN")
        assert_error(await registry_client.get(f"/v2/w/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    root = data_dir(storage_config)
    if root is not None:
        assert not (root / "docker/registry/v2/blobs").exists() or \
            not any(p.name == "data" for p in (root / "docker/registry/v2/blobs").rglob("*"))


@pytest.mark.parametrize("digest", ["sha256:abc", "sha256:" + "G" * 64, "nocolon", "md5:" + "a" * 32,
                                    "sha256:" + "A" * 64, "sha512:" + "a" * 64])
async def test_bad_digests(registry_client: httpx.AsyncClient, digest: str) -> None:
    assert_error(await registry_client.get(f"/v2/d/blobs/{digest}"), 400, "DIGEST_INVALID")
    assert_error(await registry_client.head(f"/v2/d/blobs/{digest}"), 400, "DIGEST_INVALID")
    r = await registry_client.post("/v2/d/blobs/uploads/", params={"digest": digest}, content=b"x")
    assert_error(r, 400, "DIGEST_INVALID")
    location = await start_upload(registry_client, "d")
    assert_error(await registry_client.put(location, params={"digest": digest}), 400, "DIGEST_INVALID")
    assert_error(await registry_client.put(location), 400, "DIGEST_INVALID")  # no digest at all


async def test_sha512_blobs(registry_client: httpx.AsyncClient) -> None:
    data = b"hashed with sha512" * 100
    r = await registry_client.post("/v2/h/blobs/uploads/", params={"digest": sha512(data)}, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha512(data)
    r = await registry_client.get(f"/v2/h/blobs/{sha512(data)}")
    assert r.content == data and r.headers["Docker-Content-Digest"] == sha512(data)
    # a session announced as sha512, fed in chunks
    other = data + b"!"
    location = await start_upload(registry_client, "h", **{"digest-algorithm": "sha512"})
    await registry_client.patch(location, content=other[:500], headers={"Content-Range": "0-499"})
    await registry_client.patch(location, content=other[500:])
    r = await registry_client.put(location, params={"digest": sha512(other)})
    assert r.status_code == 201, r.text
    # the announced algorithm is a hint: a sha256 digest still verifies
    location = await start_upload(registry_client, "h", **{"digest-algorithm": "sha512"})
    r = await registry_client.put(location, params={"digest": sha256(b"xyz")}, content=b"xyz")
    assert r.status_code == 201, r.text
    r = await registry_client.post("/v2/h/blobs/uploads/", params={"digest-algorithm": "md5"})
    assert_error(r, 400, "DIGEST_INVALID")


async def test_cross_repo_mount(registry_client: httpx.AsyncClient) -> None:
    data = b"shared layer"
    digest = await push_blob(registry_client, "src/repo", data)
    r = await registry_client.post("/v2/dst/repo/blobs/uploads/",
                                   params={"mount": digest, "from": "src/repo"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/dst/repo/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert (await registry_client.get(f"/v2/dst/repo/blobs/{digest}")).content == data
    # cannot mount: unknown blob, a repository that does not link it, a bad or missing from
    missing = sha256(b"nobody has this")
    for params in ({"mount": missing, "from": "src/repo"}, {"mount": digest, "from": "elsewhere"},
                   {"mount": digest, "from": "BAD//name"}, {"mount": digest}):
        r = await registry_client.post("/v2/third/blobs/uploads/", params=params)
        assert r.status_code == 202, (params, r.text)
        assert r.headers["Location"].startswith("/v2/third/blobs/uploads/")
        assert (await registry_client.get(r.headers["Location"])).status_code == 204
    assert_error(await registry_client.head(f"/v2/third/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    r = await registry_client.post("/v2/third/blobs/uploads/",
                                   params={"mount": "sha256:bad", "from": "src/repo"})
    assert_error(r, 400, "DIGEST_INVALID")


async def test_repository_serves_only_linked_blobs(registry_client: httpx.AsyncClient) -> None:
    digest = await push_blob(registry_client, "owner", b"private bytes")
    assert (await registry_client.head(f"/v2/owner/blobs/{digest}")).status_code == 200
    assert_error(await registry_client.head(f"/v2/stranger/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(await registry_client.get(f"/v2/stranger/blobs/{digest}"), 404, "BLOB_UNKNOWN")


async def test_blob_delete(registry_client: httpx.AsyncClient) -> None:
    digest = await push_blob(registry_client, "del/a", b"to delete")
    await push_blob(registry_client, "del/b", b"to delete")
    r = await registry_client.delete(f"/v2/del/a/blobs/{digest}")
    assert r.status_code == 202
    assert_error(await registry_client.head(f"/v2/del/a/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(await registry_client.delete(f"/v2/del/a/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert (await registry_client.get(f"/v2/del/b/blobs/{digest}")).content == b"to delete"


async def test_deletes_disabled(make_registry_client: Any) -> None:
    client = await make_registry_client({"storage": {"delete": {"enabled": False}}})
    digest = await push_blob(client, "nd", b"kept")
    assert_error(await client.delete(f"/v2/nd/blobs/{digest}"), 405, "UNSUPPORTED")
    assert (await client.get(f"/v2/nd/blobs/{digest}")).content == b"kept"
    # cancelling an upload is not a delete of content: still allowed
    r = await client.post("/v2/nd/blobs/uploads/")
    assert (await client.delete(r.headers["Location"])).status_code == 204


async def test_concurrent_pushes_of_the_same_blob(registry_client: httpx.AsyncClient) -> None:
    data = b"same content from many clients" * 5000
    digest = sha256(data)

    async def push(i: int) -> int:
        if i % 2:
            r = await registry_client.post("/v2/conc/blobs/uploads/", params={"digest": digest}, content=data)
            return r.status_code
        r = await registry_client.post("/v2/conc/blobs/uploads/")
        location = r.headers["Location"]
        await registry_client.patch(location, content=data[:70000], headers={"Content-Range": "0-69999"})
        r = await registry_client.put(location, params={"digest": digest}, content=data[70000:])
        return r.status_code

    assert await asyncio.gather(*(push(i) for i in range(8))) == [201] * 8
    r = await registry_client.get(f"/v2/conc/blobs/{digest}")
    assert r.content == data


async def test_location_honours_forwarded_headers(make_registry_client: Any) -> None:
    client = await make_registry_client({"proxy": {"trustforwarded": True}})
    r = await client.post("/v2/p/blobs/uploads/", headers={"X-Forwarded-Proto": "https",
                                                           "X-Forwarded-Host": "reg.example.com"})
    assert r.headers["Location"].startswith("https://reg.example.com/v2/p/blobs/uploads/")
    plain = await make_registry_client()
    r = await plain.post("/v2/p/blobs/uploads/", headers={"X-Forwarded-Host": "evil.example.com"})
    assert r.headers["Location"].startswith("/v2/p/blobs/uploads/")


async def test_xaccel_redirect(make_registry_client: Any) -> None:
    client = await make_registry_client(
        {"proxy": {"xaccelredirect": {"enabled": True, "internalprefix": "/_b"}}})
    digest = await push_blob(client, "x", b"served by nginx")
    r = await client.get(f"/v2/x/blobs/{digest}")
    if r.headers.get("X-Accel-Redirect"):  # only for the filesystem driver
        path = f"/_b/docker/registry/v2/blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
        assert r.headers["X-Accel-Redirect"] == path
        assert r.content == b"" and r.headers["Docker-Content-Digest"] == digest
