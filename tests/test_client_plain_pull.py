"""A fresh pull from a loopback registry over the bare-socket plain-HTTP path
(storage/remote/plain.py, plainstore.py): no httpx, no ssl, one kept-alive connection — and the
full pull for every answer that is not a plain anonymous 200."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import ClientEnv
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage
from tests.test_client_present import _access, _imports

# (not certifi: this machine's site hook imports it into every interpreter)
# (concurrent.futures and logging: storage/content.py's run_parallel uses plain threads)
HEAVY = ("httpx", "httpcore", "h11", "ssl", "_ssl", "http", "email", "concurrent", "logging")


def test_fresh_pull_from_loopback_imports_no_http_client_nor_ssl(
        pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo, five_layer_image: TestImage) -> None:
    server = pyreg_factory({"log": {"format": "json", "accesslog": {"disabled": False}}})
    host = server.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "team/five", "1"))
    before = len(_access(server))
    server.start()
    proc, modules = _imports(client_env, "pull", "--json", "--no-extract", f"{host}/team/five:1")
    out = json.loads(proc.stdout)
    assert out["digest"] == five_layer_image.manifest_digest
    assert sorted(b["digest"] for b in out["blobs"]) == sorted(five_layer_image.layer_digests)
    assert {b["status"] for b in out["blobs"]} == {"pulled"}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, sorted(modules)
    assert "dataclasses" not in modules  # storage/frozen.py: the store's model without it
    index = json.loads((client_env.store / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [five_layer_image.manifest_digest]
    # no /v2/ ping, no HEAD: the manifest, then the config, then each layer
    requests = [(e["method"], e["path"]) for e in _access(server)[before:]
                if e.get("user_agent", "").startswith("pyreg/")]
    assert requests[0] == ("GET", "/v2/team/five/manifests/1")
    assert {m for m, _ in requests} == {"GET"}
    assert len(requests) == 2 + len(set(five_layer_image.layer_digests))
    # the same image extracted: the blobs are there, each layer is extracted
    server.start()
    proc, modules = _imports(client_env, "pull", "--json", f"{host}/team/five:1")
    assert {b["status"] for b in json.loads(proc.stdout)["blobs"]} == {"exists"}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, sorted(modules)
    layers = list((client_env.store / "layers" / "sha256").iterdir())
    assert len(layers) == len(five_layer_image.layer_digests)
    assert all((d / "diff").is_dir() for d in layers)


class _Canned:
    """A loopback server answering each request with the next canned response; counts
    connections and records request lines."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn, conn.makefile("rb") as rfile:
                while self.answers:
                    line = rfile.readline()
                    if not line:
                        break
                    self.requests.append(line.decode().strip())
                    while rfile.readline() not in (b"\r\n", b""):
                        pass
                    answer = self.answers.pop(0)
                    try:
                        conn.sendall(answer)
                    except OSError:
                        break  # the client hung up on an answer it would not read
                    if not answer.startswith(b"HTTP/"):
                        break  # a TLS server hangs up after its alert

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canned() -> Iterator[Any]:
    servers: list[_Canned] = []

    def start(*answers: bytes) -> _Canned:
        servers.append(_Canned(list(answers)))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_plain_store_keeps_one_connection_and_verifies(canned: Any, tmp_path: Path) -> None:
    from pyreg.storage.digest import Digest, DigestMismatchError
    from pyreg.storage.remote.plain import PlainHTTP
    from pyreg.storage.remote.plainstore import PlainStore

    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + "0" * 64, "size": 2},
                           "layers": []}).encode()
    config = b"{}"
    server = canned(_answer(manifest, "Content-Type: application/vnd.oci.image.manifest.v1+json"),
                    _answer(config), _answer(b"{x}"))
    with PlainHTTP(server.host) as http:
        store = PlainStore(http, "team/x")
        desc = store.resolve("1")
        assert desc.digest == Digest.of(manifest)
        assert store.blob_bytes(Digest.of(config), 2, 100) == config
        with pytest.raises(DigestMismatchError):  # wrong bytes are an error, not a fallback
            store.blob_bytes(Digest.of(config), 3, 100)
    assert server.connections == 1
    assert server.requests == ["GET /v2/team/x/manifests/1 HTTP/1.1",
                               f"GET /v2/team/x/blobs/{Digest.of(config)} HTTP/1.1",
                               f"GET /v2/team/x/blobs/{Digest.of(config)} HTTP/1.1"]


@pytest.mark.parametrize("answer", [
    _answer(b"{}", "WWW-Authenticate: Basic realm=x", status="401 Unauthorized"),
    _answer(b"", "Location: http://127.0.0.1:1/elsewhere", status="307 Temporary Redirect"),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    _answer(b"{}", "Content-Encoding: gzip"),
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\n\r\n{}",                      # no length: read to close, not done here
    b"\x15\x03\x01\x00\x02\x02\x46",                   # a TLS alert: a TLS server
    _answer(b"x" * (5 << 20)),                         # over the manifest bound
], ids=["401", "redirect", "chunked", "gzip", "two-lengths", "no-length", "tls", "too-big"])
def test_anything_unusual_is_left_to_the_full_path(canned: Any, answer: bytes) -> None:
    from pyreg.storage.remote.plain import PlainHTTP, Unsupported
    from pyreg.storage.remote.plainstore import PlainStore

    server = canned(answer)
    with PlainHTTP(server.host) as http, pytest.raises(Unsupported):
        PlainStore(http, "team/x").resolve("1")


def test_nobody_listening_is_left_to_the_full_path() -> None:
    from pyreg.storage.remote.plain import PlainHTTP, Unsupported

    sock = socket.create_server(("127.0.0.1", 0))
    host = f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    with PlainHTTP(host) as http, pytest.raises(Unsupported):
        http.request("GET", "/v2/")


def test_run_parallel_keeps_order_and_raises_the_first_failure() -> None:
    import threading
    import time

    from pyreg.storage.content import run_parallel

    def job(i: int, fail: bool = False) -> int:
        time.sleep(0.01 * (5 - i))  # later jobs finish first
        if fail:
            raise ValueError(f"job {i}")
        return i * 10

    assert run_parallel([lambda i=i: job(i) for i in range(5)], 3) == [0, 10, 20, 30, 40]
    with pytest.raises(ValueError, match="job 1"):
        run_parallel([lambda i=i: job(i, fail=i in (1, 3)) for i in range(5)], 4)
    started: list[int] = []
    gate = threading.Event()

    def slow(i: int) -> int:
        started.append(i)
        if i == 0:
            raise ValueError("first")
        gate.wait(0.5)
        return i

    with pytest.raises(ValueError, match="first"):
        run_parallel([lambda i=i: slow(i) for i in range(50)], 2)
    gate.set()
    assert len(started) < 50  # jobs not started when one failed are dropped


# modules a plain pull / push does without (start-up CPU): typing and the storage protocols
# (annotations only); pathlib, with urllib.parse and ipaddress under it (the stores work on str
# file names, their Path API builds Paths when asked); socket.py, with selectors and its enum
# conversions (storage/remote/plain.py uses _socket); hashlib.py (digest.py takes OpenSSL's
# constructor from _hashlib)
NOT_ON_THE_PLAIN_PATH = {"typing", "pyreg.storage.contentproto", "pathlib", "urllib.parse", "ipaddress",
                         "fnmatch", "socket", "selectors", "hashlib"}


def test_plain_pull_and_push_start_without_typing_and_protocols(
        pyreg_factory: Any, client_env: ClientEnv, five_layer_image: TestImage) -> None:
    """Started as a wheel's console script starts (``python -S``: no site hook, which imports
    typing itself here), a plain push and a fresh plain pull import no ``typing``: the storage
    protocols (storage/contentproto.py) and every annotation-only name stay unimported; nor
    ``pathlib`` nor ``socket`` (NOT_ON_THE_PLAIN_PATH says why)."""
    import os
    import site
    import subprocess
    import sys

    from tests.fixtures.client import REPO_ROOT

    server = pyreg_factory({})
    img = five_layer_image
    env = {**client_env.env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *site.getsitepackages()])}

    def imports(*args: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "pyreg", *args], env=env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}

    pushed = imports("push", "-q", f"{img.layout}:{img.tag}", f"{server.host}/team/five:1")
    pulled = imports("pull", "-q", "--no-extract", f"{server.host}/team/five:1")
    assert "pyreg.storage.remote.plainpush" in pushed and "pyreg.storage.remote.plainstore" in pulled
    for modules in (pushed, pulled):
        assert not NOT_ON_THE_PLAIN_PATH & modules, sorted(NOT_ON_THE_PLAIN_PATH & modules)
    # and the store the pull wrote is whole: index.json names the image, every blob is there
    index = json.loads((client_env.store / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [img.manifest_digest]
    for digest in {img.manifest_digest, *img.layer_digests}:
        assert (client_env.store / "blobs" / "sha256" / digest.split(":")[1]).is_file()
