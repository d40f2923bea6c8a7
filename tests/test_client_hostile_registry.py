"""The client against a registry that tries to abuse it.

Each test serves a small hostile registry written here (a Starlette app under uvicorn, in a thread,
on a free loopback port) and, where credentials could leak, a second server on another port — a
different origin — that records every request it receives. Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fixtures.client import ClientEnv, mem_image, write_oci_layout
from tests.fixtures.registry import free_port

USER, PASSWORD = "alice", "s3cret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: bytes = b""


@dataclass
class Server:
    """One hostile (or recording) HTTP server on 127.0.0.1:<free port>."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()

        async def endpoint(request: Request) -> Response:
            body = await request.body() if request.method in ("PUT", "POST", "PATCH") else b""
            self.seen.append(Seen(request.method, request.url.path, request.headers.get("authorization"),
                                  body))
            return await self.handler(request)

        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            self.thread.join(0.01)
        assert self.server.started, "test server did not start"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def servers() -> Iterator[Callable[[Handler], Server]]:
    started: list[Server] = []

    def start(handler: Handler) -> Server:
        s = Server(handler)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def needs_basic(request: Request) -> Response | None:
    """A 401 Basic challenge unless the request carries the user's credentials."""
    if request.headers.get("authorization") != BASIC:
        return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="hostile"'})
    return None


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def endless(chunk: bytes = b"{" * 65536) -> AsyncIterator[bytes]:
    while True:
        yield chunk
        await asyncio.sleep(0)


def login(client_env: ClientEnv, host: str) -> None:
    client_env.docker_config.write_text(json.dumps(
        {"auths": {host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))


def one_line(proc: Any) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyreg: "), proc.stderr
    return str(lines[0])


# ------------------------------------------------------------------------------ credentials


def test_link_to_another_host_gets_no_credentials(servers: Any, client_env: ClientEnv) -> None:
    """A Link naming another host: only its path is followed, on the registry itself."""
    other = servers(lambda request: _json({"name": "r", "tags": ["stolen"]}))

    async def registry(request: Request) -> Response:
        if (denied := needs_basic(request)) is not None:
            return denied
        if request.url.path == "/v2/":
            return _plain({})
        if request.url.query == "":
            return JSONResponse({"name": "team/app", "tags": ["a", "b"]}, headers={
                "Link": f'<http://{other.host}/v2/team/app/tags/list?last=b&n=2>; rel="next"'})
        assert request.query_params["last"] == "b"
        return JSONResponse({"name": "team/app", "tags": ["c"]})

    reg = servers(registry)
    login(client_env, reg.host)
    proc = client_env.run("tags", f"{reg.host}/team/app", "--json")
    assert json.loads(proc.stdout)["tags"] == ["a", "b", "c"]
    assert other.seen == []  # the other origin got nothing: no request, no credentials
    assert [s.authorization for s in reg.seen if "last=" in s.path or s.path.endswith("/list")]


def test_upload_location_on_another_host_gets_no_credentials(
        servers: Any, client_env: ClientEnv, tmp_path: Path) -> None:
    """An absolute upload Location on another origin: the blob goes there, the credentials don't."""

    async def sink(request: Request) -> Response:
        return Response(status_code=201)

    other = servers(sink)

    async def registry(request: Request) -> Response:
        if (denied := needs_basic(request)) is not None:
            return denied
        path = request.url.path
        if path == "/v2/":
            return _plain({})
        if "/blobs/uploads/" in path and request.method == "POST":
            return Response(status_code=202, headers={"Location": f"http://{other.host}/upload/1"})
        if "/blobs/" in path:
            return Response(status_code=404)
        if "/manifests/" in path and request.method == "PUT":
            body = await request.body()
            return Response(status_code=201, headers={"Docker-Content-Digest": digest(body)})
        return Response(status_code=404)

    reg = servers(registry)
    login(client_env, reg.host)
    layout = write_oci_layout(tmp_path / "layout", mem_image({"hello.txt": b"hi\n"}))
    client_env.run("push", f"{layout}:latest", f"{reg.host}/team/app:1", "-q")
    puts = [s for s in other.seen if s.method == "PUT"]
    assert len(puts) == 2  # config and layer
    assert all(s.authorization is None for s in other.seen), other.seen
    assert any(s.authorization == BASIC for s in reg.seen)


def test_blob_redirect_to_storage_works_without_the_registry_credentials(
        servers: Any, client_env: ClientEnv) -> None:
    """A 307 to S3 (another origin) is legitimate: followed, without the registry's Authorization."""
    image = mem_image({"etc/motd": b"hello\n"})
    blobs = image.blobs()

    async def storage(request: Request) -> Response:
        return Response(blobs[request.url.path.rsplit("/", 1)[1]])

    other = servers(storage)

    async def registry(request: Request) -> Response:
        if (denied := needs_basic(request)) is not None:
            return denied
        path = request.url.path
        if path == "/v2/":
            return _plain({})
        if "/manifests/" in path:
            return Response(image.manifest, media_type=OCI_MANIFEST,
                            headers={"Docker-Content-Digest": image.manifest_digest})
        if "/blobs/" in path:
            return Response(status_code=307,
                            headers={"Location": f"http://{other.host}/s3/{path.rsplit('/', 1)[1]}"})
        return Response(status_code=404)

    reg = servers(registry)
    login(client_env, reg.host)
    proc = client_env.run("pull", f"{reg.host}/team/app:1", "--json", "--no-extract")
    assert json.loads(proc.stdout)["digest"] == image.manifest_digest
    assert len(other.seen) == 2 and all(s.authorization is None for s in other.seen), other.seen


def test_plain_http_realm_on_another_host_gets_no_credentials() -> None:
    """A Bearer challenge naming a plain-HTTP realm on a non-loopback host: the flow stops before
    any request to it is made (no traffic: the generator is driven by hand)."""
    import httpx

    from pyreg.client.credentials import Credentials
    from pyreg.storage.remote.auth import AuthError, RegistryAuth

    def challenge(realm: str) -> Any:
        auth = RegistryAuth(Credentials(USER, PASSWORD), "registry.example:5000")
        flow = auth.auth_flow(httpx.Request("GET", "https://registry.example:5000/v2/r/manifests/1"))
        first = next(flow)
        assert "authorization" not in first.headers
        return flow.send(httpx.Response(401, headers={
            "WWW-Authenticate": f'Bearer realm="{realm}",service="x",scope="repository:r:pull"'}))

    with pytest.raises(AuthError, match="plain HTTP on another host"):
        challenge("http://auth.example/token")
    # https on another host is Docker's design (auth.docker.io): the token request is made
    token_request = challenge("https://auth.example/token")
    assert token_request.url.host == "auth.example" and token_request.headers["authorization"] == BASIC
    with pytest.raises(AuthError, match="invalid token realm"):
        challenge("file:///etc/passwd")
    # an upload Location on another origin: passed through bare, its challenges unanswered
    auth = RegistryAuth(Credentials(USER, PASSWORD), "registry.example:5000")
    auth.scheme = "basic"
    flow = auth.auth_flow(httpx.Request("PUT", "https://elsewhere.example/upload"))
    assert "authorization" not in next(flow).headers
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'}))


# ------------------------------------------------------------------------------ bounded bodies


def _json(doc: Any) -> Awaitable[Response]:
    async def make() -> Response:
        return JSONResponse(doc)

    return make()


def _plain(doc: Any) -> Response:
    return JSONResponse(doc)


@pytest.mark.parametrize("endless_part", ["manifest", "config", "error", "tags", "token"])
def test_endless_bodies_stop_at_their_limit(servers: Any, client_env: ClientEnv, endless_part: str) -> None:
    """Each body the client reads into memory stops at its bound, with one line naming it."""
    config_desc_size = 1000
    realm: dict[str, str] = {}

    async def token(request: Request) -> Response:
        return StreamingResponse(endless(), media_type="application/json")

    async def registry(request: Request) -> Response:
        path = request.url.path
        if endless_part == "token" and request.headers.get("authorization") is None:
            return Response(status_code=401, headers={
                "WWW-Authenticate": f'Bearer realm="{realm["url"]}",service="s"'})
        if path == "/v2/":
            return _plain({})
        if endless_part == "error":
            return StreamingResponse(endless(), status_code=400, media_type="application/json")
        if endless_part == "tags" and path.endswith("/tags/list"):
            return StreamingResponse(endless(b'{"tags": [' + b'"a",' * 16384), media_type="application/json")
        if "/manifests/" in path:
            if endless_part == "manifest":
                return StreamingResponse(endless(), media_type=OCI_MANIFEST)
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "a" * 64, "size": config_desc_size}, "layers": []}).encode()
            return Response(manifest, media_type=OCI_MANIFEST)
        if "/blobs/" in path:
            return StreamingResponse(endless())
        return Response(status_code=404)

    if endless_part == "token":
        tok = servers(token)
        realm["url"] = f"http://{tok.host}/token"
    reg = servers(registry)
    args = ("tags", f"{reg.host}/team/app") if endless_part == "tags" else \
        ("pull", f"{reg.host}/team/app:1", "--no-extract")
    line = one_line(client_env.run(*args, check=False, timeout=120))
    expected = {"manifest": "4 MiB", "config": "1000 B", "error": "400", "tags": "16 MiB",
                "token": "4 MiB"}[endless_part]
    assert expected in line, line
    if endless_part != "error":
        assert "more than" in line


def test_config_larger_than_the_limit_is_refused_before_reading(
        servers: Any, client_env: ClientEnv) -> None:
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "b" * 64,
        "size": 10 << 30}, "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": "sha256:" + "c" * 64, "size": 10}]}).encode()

    async def registry(request: Request) -> Response:
        if request.url.path == "/v2/":
            return _plain({})
        if "/manifests/" in request.url.path:
            return Response(manifest, media_type=OCI_MANIFEST)
        return StreamingResponse(endless())

    reg = servers(registry)
    env = dict(client_env.env, PYREG_MAX_CONFIG_SIZE="64k")
    client_env.env = env
    line = one_line(client_env.run("pull", f"{reg.host}/team/app:1", "--no-extract", check=False))
    assert "max_config_size" in line and "64 KiB" in line, line
    # not even asked for, nor the layer (the config is otherwise fetched beside the layers)
    assert not [s for s in reg.seen if "/blobs/" in s.path]


@pytest.mark.parametrize("extract", [False, True])
def test_config_naming_too_many_layers_tags_nothing(servers: Any, client_env: ClientEnv,
                                                    extract: bool) -> None:
    """The config's diff IDs must match the manifest's layers: it is checked by the copy's first
    job (the config is fetched beside the layers), and the pull fails in one line, untagged."""
    manifest, config, layer, diff_id = _bomb_image(tarfile.TarInfo("empty"), b"")
    doc = json.loads(config)
    doc["rootfs"]["diff_ids"] = [diff_id, diff_id]
    config = json.dumps(doc).encode()
    manifest_doc = json.loads(manifest)
    manifest_doc["config"].update(digest=digest(config), size=len(config))
    reg = _serve_image(servers, json.dumps(manifest_doc).encode(), config, layer)
    flags = [] if extract else ["--no-extract"]
    line = one_line(client_env.run("pull", *flags, f"{reg.host}/team/app:1", check=False))
    assert "image config lists 2 diff IDs for 1 layers" in line, line
    assert client_env.run("images", "--format", "{{.Repository}}").stdout.strip() == ""
    layers = client_env.store / "layers" / "sha256"
    assert not layers.exists() or not [p for p in layers.iterdir() if not p.name.startswith(".")]


def test_compressed_answer_cannot_unfold_past_the_limit(servers: Any, client_env: ClientEnv) -> None:
    """Content-Encoding: gzip of 256 MiB of spaces (~250 KiB on the wire) as a manifest."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        block = b" " * (1 << 20)
        for _ in range(256):
            gz.write(block)
    bomb = buf.getvalue()

    async def registry(request: Request) -> Response:
        if request.url.path == "/v2/":
            return _plain({})
        return Response(bomb, media_type=OCI_MANIFEST, headers={"Content-Encoding": "gzip"})

    reg = servers(registry)
    line = one_line(client_env.run("inspect", "--remote", f"{reg.host}/team/app:1", check=False))
    assert "more than 4 MiB" in line, line


def test_link_loop_and_foreign_paths_end_with_an_error(servers: Any, client_env: ClientEnv) -> None:
    async def registry(request: Request) -> Response:
        if request.url.path == "/v2/":
            return _plain({})
        if request.url.path == "/v2/loop/tags/list":
            return JSONResponse({"tags": ["a"]}, headers={"Link": '</v2/loop/tags/list?n=1>; rel="next"'})
        return JSONResponse({"tags": ["a"]}, headers={"Link": '</admin/secrets>; rel="next"'})

    reg = servers(registry)
    assert "already read" in one_line(client_env.run("tags", f"{reg.host}/loop", "--page-size", "1",
                                                     check=False))
    assert "leaves /v2/" in one_line(client_env.run("tags", f"{reg.host}/other", check=False))
    assert not [s for s in reg.seen if s.path.startswith("/admin")]


# ------------------------------------------------------------------------------ decompression bombs


def _bomb_image(member: tarfile.TarInfo, data: bytes | None) -> tuple[bytes, bytes, bytes, str]:
    """(manifest, config, layer blob, diff id) of a one-layer image whose layer holds ``member``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(data) if data is not None else None)
    tar_bytes = raw.getvalue()
    return _image_around(tar_bytes, gzip.compress(tar_bytes, 9))


def _image_around(tar_bytes: bytes, layer: bytes) -> tuple[bytes, bytes, bytes, str]:
    diff_id = digest(tar_bytes)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
        "size": len(config)}, "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                          "digest": digest(layer), "size": len(layer)}]}).encode()
    return manifest, config, layer, diff_id


def _serve_image(servers: Any, manifest: bytes, config: bytes, layer: bytes) -> Server:
    blobs = {digest(config): config, digest(layer): layer}

    async def registry(request: Request) -> Response:
        path = request.url.path
        if path == "/v2/":
            return _plain({})
        if "/manifests/" in path:
            return Response(manifest, media_type=OCI_MANIFEST)
        found = blobs.get(path.rsplit("/", 1)[1])
        return Response(found) if found is not None else Response(status_code=404)

    return servers(registry)


def _sparse_tar(realsize: int) -> bytes:
    """A PAX (GNU 1.0) sparse entry: ``realsize`` bytes of file, one data byte, the rest a hole."""
    sparse_map = f"1\n{realsize - 1}\n1\n".encode().ljust(512, b"\0")
    body = sparse_map + b"x"
    member = tarfile.TarInfo("GNUSparseFile.0/hole")
    member.size = len(body)
    member.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                          "GNU.sparse.name": "hole", "GNU.sparse.realsize": str(realsize)}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member, io.BytesIO(body))
    return raw.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "sparse"])
def test_decompression_bomb_layer_is_refused(servers: Any, client_env: ClientEnv, kind: str) -> None:
    """A layer that unfolds past the configured bound: refused, nothing extracted, one line.
    (Bounds lowered to 8 MiB so that the test writes at most a few MiB if the defence regressed.)"""
    if kind == "gzip":
        member = tarfile.TarInfo("zeros")
        member.size = 24 << 20
        manifest, config, layer, _ = _bomb_image(member, bytes(member.size))
    else:
        tar_bytes = _sparse_tar(24 << 20)
        manifest, config, layer, _ = _image_around(tar_bytes, gzip.compress(tar_bytes))
    reg = _serve_image(servers, manifest, config, layer)
    (client_env.root / "pyreg-config.json").write_text(json.dumps({"layer_max_size": "8M"}))
    line = one_line(client_env.run("pull", f"{reg.host}/team/app:1", check=False))
    assert "decompression bomb" in line and "layer_max_size" in line, line
    layers = client_env.store / "layers" / "sha256"
    assert not layers.exists() or not [p for p in layers.iterdir() if not p.name.startswith(".")]
    # the same image within the bound pulls and extracts
    (client_env.root / "pyreg-config.json").write_text(json.dumps({"layer_max_size": "64M"}))
    client_env.run("pull", f"{reg.host}/team/app:1")


def test_other_hosts_get_their_own_verified_tls_context() -> None:
    """``--insecure`` for the registry does not turn off verification of the hosts it sends us to
    (a token realm, a blob redirect): each other host gets its own context (no traffic)."""
    import ssl

    import httpx

    from pyreg.storage.remote.transport import SchemeTransport

    asked: list[str] = []
    mine = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def other(host: str) -> ssl.SSLContext:
        asked.append(host)
        return ssl.create_default_context()

    t = SchemeTransport(lambda: mine, httpx.Limits(), "registry.example:5000", other)
    try:
        own = t._transport(httpx.URL("https://registry.example:5000/v2/"))
        assert t._transport(httpx.URL("https://registry.example:5000/v2/x")) is own and asked == []
        s3 = t._transport(httpx.URL("https://s3.example/bucket/blob"))
        assert s3 is not own and asked == ["s3.example"]
    finally:
        t.close()
