"""Blob upload bodies a thread receives straight from the socket (registry/directbody.py through
registry/http_protocol.py's ``pyreg.directbody`` extension), on a real ``pyreg serve``: the
upload's rules hold (lock, digest, resume after a cut), the connection stays right for the next
request, a stalled body is cut off, and TLS keeps the stream path (chunked bodies:
tests/test_direct_chunked.py)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.auth import CertificateAuthority
from tests.fixtures.registry import RegistryServer, ServerPool

MiB = 1 << 20
BLOBS = "docker/registry/v2/blobs"


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """The direct path is the filesystem driver's (S3 keeps the stream): filesystem only."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def connect(server: RegistryServer) -> socket.socket:
    host, port = server.host.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=30)


def head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    fields = [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines = [f"{method} {path} HTTP/1.1", "Host: registry", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Reader:
    """HTTP/1.1 answers read off one socket, in order (Content-Length bodies only)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"closed; unread: {self.buf[:200]!r}")
        self.buf += chunk

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._more()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        status = int(status_line.split()[1])
        if status == 100:
            return self.answer()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body


def start_upload(server: RegistryServer, name: str) -> str:
    r = httpx.post(f"{server.url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["location"]


def blob_file(root: Path, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return root / BLOBS / "sha256" / hexpart[:2] / hexpart / "data"


def wait_for(check: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def test_monolithic_put_then_a_pipelined_request_on_the_same_connection(make_registry_server: Any,
                                                                          tmp_path: Path) -> None:
    server = make_registry_server()
    data = os.urandom(9 * MiB + 123)
    digest = digest_of(data)
    where = start_upload(server, "direct/pipe")
    with connect(server) as s:
        # The PUT's body and the next request leave together: the thread must stop at the body's end.
        s.sendall(head("PUT", f"{where}?digest={digest}", {"Content-Length": str(len(data))}) + data
                  + head("GET", f"/v2/direct/pipe/blobs/{digest}"))
        reader = Reader(s)
        status, headers, _ = reader.answer()
        assert status == 201, reader.buf[:300]
        assert headers["docker-content-digest"] == digest
        status, _, body = reader.answer()
        assert status == 200 and body == data
        # And the connection still takes requests after that: a chunked PATCH, then its PUT.
        more = os.urandom(3 * MiB)
        where = start_upload(server, "direct/pipe")
        s.sendall(head("PATCH", where, {"Content-Length": str(len(more))}) + more)
        status, headers, _ = reader.answer()
        assert status == 202 and headers["range"] == f"0-{len(more) - 1}"
        s.sendall(head("PUT", f"{headers['location']}?digest={digest_of(more)}", {"Content-Length": "0"}))
        status, _, _ = reader.answer()
        assert status == 201
    assert blob_file(tmp_path / "registry-data", digest).read_bytes() == data
    # The bytes a thread received count in the metrics as the stream's did.
    received = sum(sample.value for family in text_string_to_metric_families(
        httpx.get(f"{server.url}/metrics").text) for sample in family.samples
        if sample.name == "pyreg_http_received_bytes_total" and sample.labels.get("route") == "upload")
    assert received == len(data) + len(more)


def test_chunks_then_put_with_expect_continue(make_registry_server: Any) -> None:
    server = make_registry_server()
    parts = [os.urandom(5 * MiB), os.urandom(4 * MiB + 7), os.urandom(2 * MiB)]
    whole = b"".join(parts)
    where = start_upload(server, "direct/chunks")
    offset = 0
    with connect(server) as s:
        reader = Reader(s)
        for part in parts[:2]:
            s.sendall(head("PATCH", where, {"Content-Length": str(len(part)), "Expect": "100-continue",
                                            "Content-Range": f"{offset}-{offset + len(part) - 1}"}))
            s.sendall(part)
            status, headers, _ = reader.answer()
            assert status == 202, headers
            offset += len(part)
            assert headers["range"] == f"0-{offset - 1}"
            where = headers["location"]
        s.sendall(head("PUT", f"{where}?digest={digest_of(whole)}", {"Content-Length": str(len(parts[2]))})
                  + parts[2])
        status, _, _ = reader.answer()
        assert status == 201
    r = httpx.get(f"{server.url}/v2/direct/chunks/blobs/{digest_of(whole)}")
    assert r.content == whole


def test_second_request_on_a_busy_upload_is_refused(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(8 * MiB)
    where = start_upload(server, "direct/race")
    with connect(server) as first:
        first.sendall(head("PATCH", where, {"Content-Length": str(len(data))}) + data[:MiB])
        wait_for(lambda: httpx.get(f"{server.url}{where}").status_code == 416)
        r = httpx.patch(f"{server.url}{where}", content=b"x" * 1000)
        assert r.status_code == 416 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        first.sendall(data[MiB:])
        status, headers, _ = Reader(first).answer()
        assert status == 202 and headers["range"] == f"0-{len(data) - 1}"
    r = httpx.put(f"{server.url}{where}?digest={digest_of(data)}")
    assert r.status_code == 201, r.text


def test_body_cut_short_keeps_what_arrived_and_the_client_resumes(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(10 * MiB)
    sent = 6 * MiB + 5
    where = start_upload(server, "direct/cut")
    with connect(server) as s:
        s.sendall(head("PUT", f"{where}?digest={digest_of(data)}", {"Content-Length": str(len(data))})
                  + data[:sent])

    def stored() -> int | None:
        r = httpx.get(f"{server.url}{where}")
        return int(r.headers["range"].split("-")[1]) + 1 if r.status_code == 204 else None
    wait_for(lambda: stored() == sent)
    r = httpx.patch(f"{server.url}{where}", content=data[sent:],
                    headers={"Content-Range": f"{sent}-{len(data) - 1}"})
    assert r.status_code == 202, r.text
    r = httpx.put(f"{server.url}{r.headers['location']}?digest={digest_of(data)}")
    assert r.status_code == 201, r.text
    assert httpx.get(f"{server.url}/v2/direct/cut/blobs/{digest_of(data)}").content == data


def test_stalled_body_is_closed_by_the_deadline(make_registry_server: Any) -> None:
    server = make_registry_server({"http": {"headertimeout": "2s"}})
    data = os.urandom(6 * MiB)
    where = start_upload(server, "direct/stall")
    with connect(server) as s:
        s.sendall(head("PATCH", where, {"Content-Length": str(len(data))}) + data[:3 * MiB])
        s.settimeout(60)  # the server closes after 2 s without a byte; 60 s means it never did
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        assert b" 202 " not in answer
    wait_for(lambda: httpx.get(f"{server.url}{where}").status_code == 204)  # free again (lock released)
    r = httpx.get(f"{server.url}{where}")  # and it holds what arrived
    assert r.headers["range"] == f"0-{3 * MiB - 1}"


def test_wrong_digest_is_digest_invalid_and_stores_nothing(make_registry_server: Any, tmp_path: Path) -> None:
    server = make_registry_server()
    data = os.urandom(7 * MiB)
    claimed = digest_of(b"something else")
    where = start_upload(server, "direct/wrong")
    with connect(server) as s:
        s.sendall(head("PUT", f"{where}?digest={claimed}", {"Content-Length": str(len(data))}) + data)
        status, _, body = Reader(s).answer()
    assert status == 400 and b"DIGEST_INVALID" in body
    root = tmp_path / "registry-data"
    assert not blob_file(root, claimed).exists() and not blob_file(root, digest_of(data)).exists()
    assert httpx.get(f"{server.url}{where}").status_code == 404  # the session is gone too


def written_bytes(pid: int) -> int:
    """Bytes the process handed to write() calls so far (/proc/PID/io ``wchar``)."""
    with open(f"/proc/{pid}/io", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


@pytest.mark.parametrize("how", ["put", "post"])
def test_stored_trusted_digest_pushed_again_is_hashed_not_written(make_registry_server: Any,
                                                                   how: str) -> None:
    server = make_registry_server()  # one worker: the server process is the one that writes
    data = os.urandom(16 * MiB)
    digest = digest_of(data)

    def push(name: str, body: bytes, claimed: str) -> httpx.Response:
        if how == "post":
            return httpx.post(f"{server.url}/v2/{name}/blobs/uploads/?digest={claimed}", content=body)
        return httpx.put(f"{server.url}{start_upload(server, name)}?digest={claimed}", content=body)

    assert push("direct/first", data, digest).status_code == 201
    time.sleep(0.2)  # a file changed in the last 50 ms has no version token yet (storage/filesystem.py)
    assert httpx.get(f"{server.url}/v2/direct/first/blobs/{digest}").content == data  # verified: trusted
    assert server.pid is not None
    before = written_bytes(server.pid)
    assert push("direct/again", data, digest).status_code == 201
    assert written_bytes(server.pid) - before < len(data) // 4
    assert httpx.get(f"{server.url}/v2/direct/again/blobs/{digest}").content == data
    # A wrong body under the stored digest is still refused, and links nothing.
    wrong = bytearray(data)
    wrong[-1] ^= 1
    r = push("direct/wrong", bytes(wrong), digest)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    assert httpx.head(f"{server.url}/v2/direct/wrong/blobs/{digest}").status_code == 404


def test_chunked_transfer_encoding_then_a_pipelined_request(make_registry_server: Any) -> None:
    server = make_registry_server()
    data = os.urandom(3 * MiB + 11)
    where = start_upload(server, "direct/te")
    with connect(server) as s:
        s.sendall(head("PATCH", where, {"Transfer-Encoding": "chunked"}))
        for i in range(0, len(data), MiB):
            piece = data[i:i + MiB]
            s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        s.sendall(b"0\r\n\r\n" + head("GET", "/v2/"))
        reader = Reader(s)
        status, headers, _ = reader.answer()
        assert status == 202 and headers["range"] == f"0-{len(data) - 1}"
        assert reader.answer()[0] == 200
    assert httpx.put(f"{server.url}{where}?digest={digest_of(data)}").status_code == 201


class _TLSServer(RegistryServer):
    def __init__(self, config: dict[str, Any], workdir: Path, ca: CertificateAuthority) -> None:
        super().__init__(config, workdir)
        self.url = f"https://{self.host}"
        self.ca = ca

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert))


def test_tls_upload_keeps_the_stream_path(make_registry_config: Any, auth_ca: CertificateAuthority,
                                          tmp_path: Path) -> None:
    issued = auth_ca.issue("server")
    config = make_registry_config({"tls": {"certificate": str(issued.cert), "key": str(issued.key)}})
    pool = ServerPool()
    try:
        server = pool.start(_TLSServer(config, tmp_path / "tls", auth_ca))
        data = os.urandom(9 * MiB)
        with httpx.Client(verify=server.context()) as client:
            r = client.post(f"{server.url}/v2/direct/tls/blobs/uploads/")
            r = client.patch(f"{server.url}{r.headers['location']}", content=data[:5 * MiB])
            assert r.status_code == 202
            r = client.put(f"{server.url}{r.headers['location']}?digest={digest_of(data)}",
                           content=data[5 * MiB:])
            assert r.status_code == 201, r.text
            assert client.get(f"{server.url}/v2/direct/tls/blobs/{digest_of(data)}").content == data
    finally:
        pool.stop_all()


def test_only_a_body_with_one_plain_content_length_is_offered() -> None:
    from pyreg.registry.http_protocol import _plain_length

    assert _plain_length([(b"host", b"x"), (b"content-length", b"1048576")]) == 1 << 20
    assert _plain_length([(b"content-length", b"10"), (b"transfer-encoding", b"chunked")]) == 0
    assert _plain_length([(b"content-length", b"10"), (b"content-length", b"10")]) == 0
    assert _plain_length([(b"content-length", b"0"), (b"content-length", b"10")]) == 0
    assert _plain_length([(b"content-length", b"+10")]) == 0
    assert _plain_length([(b"content-length", b"0")]) == 0
    assert _plain_length([]) == 0
