"""Protocol correctness as the OCI conformance suite and Distribution see it, on a real server.

- every error answer is framed by its own body (Content-Length), so a keep-alive connection
  survives it: checked byte for byte on ONE raw socket across many error paths;
- a retried chunk gets 416 and the same connection goes on to finish the upload;
- a manifest reference that is neither a tag nor a digest is 404 MANIFEST_UNKNOWN on GET/HEAD/
  DELETE, and 400 TAG_INVALID on PUT;
- sparse manifests (``validation.manifests``) and the per-request caps.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import RegistryServer, descriptor, image_manifest, push_blob, push_image, sha256
from tests.test_api_blobs import assert_error

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
AS_MANIFEST = {"Content-Type": OCI_MANIFEST}
AS_INDEX = {"Content-Type": OCI_INDEX}


# -- a strict HTTP/1.1 client on one socket --------------------------------------------------------


class FramingError(AssertionError):
    """The server's bytes do not parse as the next response: a body did not match its length."""


class RawConnection:
    """One keep-alive TCP connection; each response is read exactly as its headers frame it.

    Nothing is read past a response's announced length, so the next response must start right
    there: a body longer than its Content-Length shows up as a broken status line, a shorter one
    as a read that never ends (the socket timeout), a dropped connection as EOF.
    """

    def __init__(self, host: str, timeout: float = 30) -> None:
        hostname, port = host.rsplit(":", 1)
        self.host = host
        self.sock = socket.create_connection((hostname, int(port)), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, method: str, path: str, headers: dict[str, str] | None = None,
             body: bytes = b"") -> None:
        hdrs = {"Host": self.host, **(headers or {})}
        if body or method in ("POST", "PUT", "PATCH"):
            hdrs.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.sock.sendall(head.encode("latin-1") + body)

    def read_response(self, method: str) -> tuple[int, dict[str, str], bytes]:
        status_line = self._read_line()
        if not status_line.startswith(b"HTTP/1.1 "):
            raise FramingError(f"expected a status line, got {status_line[:200]!r}")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while True:
            line = self._read_line()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            k = key.strip().lower()
            headers[k] = f"{headers[k]}, {value.strip()}" if k in headers else value.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self._read_exact(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():
                        pass
                    return status, headers, body
                body += self._read_exact(size)
                self._read_exact(2)
        raise FramingError(f"{status} response has neither Content-Length nor chunked encoding")

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        self.send(method, path, headers, body)
        return self.read_response(method)


# -- servers -----------------------------------------------------------------------------------------


def start_server(workdir: Path, extra: dict[str, Any] | None = None) -> RegistryServer:
    config: dict[str, Any] = {
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "log": {"accesslog": {"disabled": True}},
        **(extra or {}),
    }
    server = RegistryServer(config, workdir)
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """One real ``pyreg serve`` (uvicorn + httptools) for the module."""
    srv = start_server(tmp_path_factory.mktemp("conformance"))
    try:
        yield srv
    finally:
        srv.stop()


def no_tracebacks(server: RegistryServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-5000:]


def push(c: httpx.Client, name: str, data: bytes) -> str:
    r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text
    return sha256(data)


def client_port(r: httpx.Response) -> int:
    """The local port of the connection that carried ``r`` (the same port: the same connection)."""
    return int(r.extensions["network_stream"].get_extra_info("client_addr")[1])


# -- Content-Length of every error ---------------------------------------------------------------


def test_every_error_is_framed_by_its_body_on_one_connection(server: RegistryServer) -> None:
    """Walk error paths of every endpoint on ONE connection: each Content-Length is the body's.

    Before the fix each 416 said ``content-length: 0`` and sent a JSON body; uvicorn then
    dropped the connection and the next request on it was reset.
    """
    blob = b"conformance blob"
    config = b'{"architecture":"amd64","os":"linux"}'
    with httpx.Client(base_url=server.url, timeout=30) as c:
        push(c, "cl/repo", blob)
        push(c, "cl/repo", config)
        manifest = image_manifest(config, [blob])
        assert c.put("/v2/cl/repo/manifests/v1", content=manifest,
                     headers={"Content-Type": OCI_MANIFEST}).status_code == 201
        upload = c.post("/v2/cl/repo/blobs/uploads/").headers["Location"]
        assert c.patch(upload, content=b"0123456789", headers={"Content-Range": "0-9"}).status_code == 202
    unknown = sha256(b"not pushed")
    huge = "9" * 5000
    cases: list[tuple[str, str, dict[str, str], bytes, int]] = [
        ("PATCH", upload, {"Content-Range": "0-9"}, b"0123456789", 416),  # the retried chunk
        ("PATCH", upload, {"Content-Range": "20-29"}, b"0123456789", 416),  # a gap
        ("PATCH", upload, {"Content-Range": "garbage"}, b"0123456789", 416),
        ("PATCH", upload, {"Content-Range": f"10-{huge}"}, b"0123456789", 416),
        ("PUT", f"{upload}?digest={unknown}", {"Content-Range": "0-9"}, b"0123456789", 416),
        ("GET", upload, {}, b"", 204),  # still usable: 10 bytes
        ("PUT", f"{upload}?digest={unknown}", {}, b"", 400),  # digest mismatch
        ("PATCH", "/v2/cl/repo/blobs/uploads/no-such-upload", {}, b"x", 404),
        ("GET", "/v2/cl/repo/blobs/uploads/no-such-upload", {}, b"", 404),
        ("DELETE", "/v2/cl/repo/blobs/uploads/no-such-upload", {}, b"", 404),
        ("POST", f"/v2/cl/repo/blobs/uploads/?digest={unknown}", {}, b"other bytes", 400),
        ("POST", "/v2/cl/repo/blobs/uploads/?digest=sha256:zz", {}, b"", 400),
        ("GET", f"/v2/cl/repo/blobs/{sha256(blob)}", {"Range": "bytes=1000-"}, b"", 416),
        ("HEAD", f"/v2/cl/repo/blobs/{sha256(blob)}", {"Range": "bytes=1000-"}, b"", 416),
        ("GET", f"/v2/cl/repo/blobs/{sha256(blob)}", {"Range": f"bytes={huge}-"}, b"", 416),
        ("GET", f"/v2/cl/repo/blobs/{unknown}", {}, b"", 404),
        ("HEAD", f"/v2/cl/repo/blobs/{unknown}", {}, b"", 404),
        ("GET", "/v2/cl/repo/blobs/sha256:short", {}, b"", 400),
        ("DELETE", f"/v2/cl/repo/blobs/{unknown}", {}, b"", 404),
        ("GET", "/v2/cl/repo/manifests/missing", {}, b"", 404),
        ("HEAD", "/v2/cl/repo/manifests/missing", {}, b"", 404),
        ("GET", "/v2/cl/repo/manifests/.INVALID_MANIFEST_NAME", {}, b"", 404),
        ("PUT", "/v2/cl/repo/manifests/.bad", {"Content-Type": OCI_MANIFEST}, manifest, 400),
        ("PUT", "/v2/cl/repo/manifests/v2", {"Content-Type": OCI_MANIFEST}, b"{not json", 400),
        ("PUT", "/v2/cl/repo/manifests/v2", {"Content-Type": OCI_MANIFEST},
         image_manifest(config, [b"never pushed"]), 400),
        ("PUT", "/v2/cl/repo/manifests/v2", {"Content-Type": OCI_MANIFEST}, b" " * (5 * 1024 * 1024), 413),
        ("DELETE", "/v2/cl/repo/manifests/missing", {}, b"", 404),
        ("GET", "/v2/Upper/manifests/v1", {}, b"", 400),
        ("GET", "/v2/cl/nothing/tags/list", {}, b"", 404),
        ("GET", "/v2/cl/repo/tags/list?n=abc", {}, b"", 400),
        ("GET", f"/v2/cl/repo/tags/list?n={huge}", {}, b"", 400),
        ("GET", "/v2/_catalog?n=-1", {}, b"", 400),
        ("GET", "/v2/cl/repo/referrers/sha256:bad", {}, b"", 400),
        ("POST", "/v2/cl/repo/manifests/v1", {}, b"", 405),
        ("HEAD", "/v2/cl/repo/manifests/v1", {}, b"", 200),
        ("GET", "/v2/cl/repo/nowhere/at/all", {}, b"", 404),
        ("GET", "/v2/", {}, b"", 200),
    ]
    with RawConnection(server.host) as conn:
        for method, path, headers, body, want in cases:
            status, got_headers, got = conn.request(method, path, headers, body)
            where = f"{method} {path[:80]}"
            assert status == want, (where, status, got[:300])
            assert "content-length" in got_headers or status in (204,), (where, got_headers)
            if method != "HEAD" and status >= 400:
                assert int(got_headers["content-length"]) == len(got), where
                assert json.loads(got)["errors"][0]["code"], where
            if method == "HEAD" and status >= 400:
                # HEAD announces the length the GET body has
                _, _, get_body = conn.request("GET", path, headers)
                assert int(got_headers["content-length"]) == len(get_body), where
        # and the connection is still good for a normal pull
        status, _, got = conn.request("GET", f"/v2/cl/repo/blobs/{sha256(blob)}")
        assert (status, got) == (200, blob)
    no_tracebacks(server)


def test_retried_chunk_gets_416_and_the_connection_stays_usable(server: RegistryServer) -> None:
    """The conformance suite's chunked upload with a retried chunk, on one persistent connection."""
    data = os.urandom(3000)
    chunks = [data[:1000], data[1000:2000], data[2000:]]
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
    with httpx.Client(base_url=server.url, timeout=30, transport=transport) as c:
        r = c.post("/v2/chunked/retry/blobs/uploads/")
        assert r.status_code == 202
        port = client_port(r)
        location = r.headers["Location"]
        r = c.patch(location, content=chunks[0], headers={"Content-Range": "0-999"})
        assert r.status_code == 202 and r.headers["Range"] == "0-999"
        location = r.headers["Location"]
        for _ in range(3):  # the client retries the chunk it already sent
            r = c.patch(location, content=chunks[0], headers={"Content-Range": "0-999"})
            assert_error(r, 416, "BLOB_UPLOAD_INVALID")
            assert r.headers["Range"] == "0-999"
            assert r.headers["Content-Length"] == str(len(r.content))
            assert client_port(r) == port, "the 416 closed the connection"
        r = c.patch(location, content=chunks[1], headers={"Content-Range": "1000-1999"})
        assert r.status_code == 202, r.text
        assert client_port(r) == port
        r = c.put(r.headers["Location"], params={"digest": sha256(data)}, content=chunks[2],
                  headers={"Content-Range": "2000-2999"})
        assert r.status_code == 201, r.text
        r = c.get(f"/v2/chunked/retry/blobs/{sha256(data)}")
        assert r.content == data and client_port(r) == port


# -- references that are neither a tag nor a digest ------------------------------------------------


def test_invalid_manifest_reference_is_unknown(server: RegistryServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for reference in (".INVALID_MANIFEST_NAME", "-dash", "a" * 129, "sha256:zz", "semi;colon"):
            assert_error(c.get(f"/v2/ref/repo/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
            r = c.head(f"/v2/ref/repo/manifests/{reference}")
            assert r.status_code == 404 and r.content == b""
            assert_error(c.delete(f"/v2/ref/repo/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
        push(c, "ref/repo", b"{}")
        push(c, "ref/repo", b"layer")
        manifest = image_manifest(b"{}", [b"layer"])
        r = c.put("/v2/ref/repo/manifests/.INVALID_MANIFEST_NAME", content=manifest,
                  headers={"Content-Type": OCI_MANIFEST})
        assert_error(r, 400, "TAG_INVALID")
        r = c.put(f"/v2/ref/repo/manifests/{sha256(manifest)}?tag=ok&tag=.bad", content=manifest,
                  headers={"Content-Type": OCI_MANIFEST})
        assert_error(r, 400, "TAG_INVALID")
        assert_error(c.get("/v2/ref/repo/manifests/ok"), 404, "MANIFEST_UNKNOWN")


# -- sparse manifests ----------------------------------------------------------------------------------


def _index(children: list[tuple[bytes, str, str]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(m, OCI_MANIFEST, platform={"architecture": arch, "os": os_}) for m, arch, os_ in children
    ]}).encode()


SPARSE = {"validation": {"manifests": {"indexes": {"platforms": "none"}, "layers": {"allowmissing": True}}}}


async def test_sparse_manifests_are_refused_by_default(registry_client: httpx.AsyncClient) -> None:
    await push_blob(registry_client, "sparse/default", b"{}")
    manifest = image_manifest(b"{}", [b"layer never pushed"])
    r = await registry_client.put("/v2/sparse/default/manifests/img", content=manifest,
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    r = await registry_client.put("/v2/sparse/default/manifests/idx", headers=AS_INDEX,
                                  content=_index([(manifest, "amd64", "linux")]))
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_sparse_manifests_work_like_any_other(make_registry_client: Any) -> None:
    client = await make_registry_client(SPARSE)
    await push_blob(client, "sparse/repo", b"{}")
    amd64 = image_manifest(b"{}", [b"amd64 layer, not pushed"])
    arm64 = image_manifest(b"{}", [b"arm64 layer, not pushed"], annotations={"a": "arm64"})
    r = await client.put("/v2/sparse/repo/manifests/amd64", content=amd64, headers=AS_MANIFEST)
    assert r.status_code == 201, r.text
    index = _index([(amd64, "amd64", "linux"), (arm64, "arm64", "linux")])  # arm64 never pushed
    r = await client.put("/v2/sparse/repo/manifests/multi", content=index, headers=AS_INDEX)
    assert r.status_code == 201, r.text
    digest = r.headers["Docker-Content-Digest"]
    r = await client.put(f"/v2/sparse/repo/manifests/{digest}?tag=again", content=index,
                         headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201, r.text
    assert (await client.get("/v2/sparse/repo/tags/list")).json()["tags"] == ["again", "amd64", "multi"]
    for ref in ("multi", "again", digest):
        r = await client.get(f"/v2/sparse/repo/manifests/{ref}", headers={"Accept": OCI_INDEX})
        assert r.status_code == 200 and r.content == index
        assert r.headers["Docker-Content-Digest"] == digest
        r = await client.head(f"/v2/sparse/repo/manifests/{ref}")
        assert r.status_code == 200 and r.headers["Content-Length"] == str(len(index))
    r = await client.get("/v2/sparse/repo/manifests/amd64")
    assert r.status_code == 200 and r.content == amd64
    # the config is still required: the image needs it to be usable at all
    r = await client.put("/v2/sparse/repo/manifests/noconf", content=image_manifest(b"no config", []),
                         headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_index_platform_list(make_registry_client: Any) -> None:
    """``platforms: list``: only the listed platforms (and children without one) must exist."""
    client = await make_registry_client({"validation": {"manifests": {"indexes": {
        "platforms": "list", "platformlist": [{"architecture": "amd64", "os": "linux"}]}}}})
    _, amd64 = await push_image(client, "plist/repo", "amd64", layers=(b"amd64",))
    arm64 = image_manifest(b"{}", [b"arm64"])
    r = await client.put("/v2/plist/repo/manifests/ok", headers={"Content-Type": OCI_INDEX},
                         content=_index([(amd64, "amd64", "linux"), (arm64, "arm64", "linux")]))
    assert r.status_code == 201, r.text
    r = await client.put("/v2/plist/repo/manifests/bad", headers={"Content-Type": OCI_INDEX},
                         content=_index([(arm64, "amd64", "linux")]))  # a listed platform, missing
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    # layers are still checked under the default
    r = await client.put("/v2/plist/repo/manifests/img", content=arm64, headers=AS_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_validation_config_keys() -> None:
    from pyreg.registry.config import ConfigError, load_config

    config = load_config(environ={"PYREG_VALIDATION_MANIFESTS_INDEXES_PLATFORMS": "None",
                                  "PYREG_VALIDATION_MANIFESTS_LAYERS_ALLOWMISSING": "true"})
    assert config.validation.manifests.indexes.platforms == "none"
    assert config.validation.manifests.layers.allowmissing
    default = load_config(environ={})
    assert default.validation.manifests.indexes.platforms == "all"
    assert not default.validation.manifests.layers.allowmissing
    for bad, key in [({"indexes": {"platforms": "some"}}, "validation.manifests.indexes.platforms"),
                     ({"indexes": {"platforms": "list"}}, "validation.manifests.indexes.platformlist"),
                     ({"indexes": {"platforms": "list", "platformlist": [{"os": "linux"}]}},
                      "platformlist[0]"),
                     ({"layers": {"allowmissing": "perhaps"}}, "validation.manifests.layers.allowmissing")]:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_config(data={"validation": {"manifests": bad}}, environ={})


# -- per-request caps ------------------------------------------------------------------------------------


async def test_tag_parameters_per_put_are_capped(registry_client: httpx.AsyncClient) -> None:
    from pyreg.registry.routes.manifests import MAX_TAGS_PER_PUT

    _, manifest = await push_image(registry_client, "caps/tags", "base")
    digest = sha256(manifest)
    tags: list[str] = [f"t{i}" for i in range(MAX_TAGS_PER_PUT + 1)]
    r = await registry_client.put(f"/v2/caps/tags/manifests/{digest}", params={"tag": tags}, content=manifest,
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "TAG_INVALID")
    assert (await registry_client.get("/v2/caps/tags/tags/list")).json()["tags"] == ["base"]
    r = await registry_client.put(f"/v2/caps/tags/manifests/{digest}", params={"tag": tags[:-1]},
                                  content=manifest, headers=AS_MANIFEST)
    assert r.status_code == 201, r.text
    assert len((await registry_client.get("/v2/caps/tags/tags/list")).json()["tags"]) == MAX_TAGS_PER_PUT + 1


async def test_distinct_references_per_manifest_are_capped(registry_client: httpx.AsyncClient) -> None:
    from pyreg.registry.routes.manifests import MAX_MANIFEST_REFERENCES

    await push_blob(registry_client, "caps/refs", b"{}")
    layers = [str(i).encode() for i in range(MAX_MANIFEST_REFERENCES)]  # + the config: one too many
    r = await registry_client.put("/v2/caps/refs/manifests/big", content=image_manifest(b"{}", layers),
                                  headers={"Content-Type": OCI_MANIFEST})
    assert_error(r, 400, "MANIFEST_INVALID")
    assert "at most" in r.json()["errors"][0]["message"]
    # the same layer many times is one reference
    same = image_manifest(b"{}", [b"x"] * (MAX_MANIFEST_REFERENCES + 10))
    await push_blob(registry_client, "caps/refs", b"x")
    r = await registry_client.put("/v2/caps/refs/manifests/same", content=same, headers=AS_MANIFEST)
    assert r.status_code == 201, r.text


async def test_referrers_are_paginated(registry_client: httpx.AsyncClient,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pyreg.registry.routes import listing

    monkeypatch.setattr(listing, "MAX_REFERRERS", 3)
    subject, _ = await push_image(registry_client, "caps/referrers", "subject")
    await push_blob(registry_client, "caps/referrers", b"{}")
    pushed = []
    for i in range(7):
        body = json.loads(image_manifest(b"{}", [], artifactType="application/vnd.example+type",
                                         annotations={"i": str(i)}))
        body["config"] = descriptor(b"{}", "application/vnd.oci.empty.v1+json")
        body["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1}
        data = json.dumps(body).encode()
        r = await registry_client.put(f"/v2/caps/referrers/manifests/{sha256(data)}", content=data,
                                      headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        pushed.append(sha256(data))
    seen: list[str] = []
    url: str | None = f"/v2/caps/referrers/referrers/{subject}"
    pages = 0
    while url:
        r = await registry_client.get(url)
        assert r.status_code == 200
        page = [m["digest"] for m in r.json()["manifests"]]
        assert len(page) <= 3
        seen += page
        pages += 1
        link = r.headers.get("Link")
        url = link.split(";")[0].strip("<>") if link else None
    assert pages == 3 and sorted(seen) == sorted(pushed) and len(seen) == len(set(seen))
    # n= asks for smaller pages, and the artifactType filter carries over to the next link
    r = await registry_client.get(f"/v2/caps/referrers/referrers/{subject}",
                                  params={"n": "2", "artifactType": "application/vnd.example+type"})
    assert len(r.json()["manifests"]) == 2 and "artifactType=" in r.headers["Link"]
