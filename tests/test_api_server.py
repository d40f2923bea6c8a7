"""A real ``pyreg serve``: restarts between chunks, concurrent pushes, truncated bodies, workers, memory."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import RegistryServer, image_manifest, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def no_tracebacks(server: RegistryServer) -> None:
    log = server.log()
    assert "Traceback" not in log and " 500 " not in log, log[-5000:]


def push_blob(c: httpx.Client, name: str, data: bytes) -> None:
    r = c.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201, r.text


def test_restart_between_chunks_loses_nothing(registry_server: RegistryServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    parts = [data[:1024 * 1024], data[1024 * 1024:2 * 1024 * 1024], data[2 * 1024 * 1024:]]
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        r = c.post("/v2/restart/me/blobs/uploads/")
        location = r.headers["Location"]
        r = c.patch(location, content=parts[0], headers={"Content-Range": f"0-{len(parts[0]) - 1}"})
        assert r.status_code == 202
    registry_server.restart()
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        r = c.get(location)
        assert r.status_code == 204 and r.headers["Range"] == f"0-{len(parts[0]) - 1}"
        offset = len(parts[0])
        end = offset + len(parts[1]) - 1
        r = c.patch(location, content=parts[1], headers={"Content-Range": f"{offset}-{end}"})
        assert r.status_code == 202
    registry_server.restart()
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        r = c.put(location, params={"digest": sha256(data)}, content=parts[2])
        assert r.status_code == 201, r.text
        r = c.get(f"/v2/restart/me/blobs/{sha256(data)}")
        assert r.content == data
    no_tracebacks(registry_server)


def test_concurrent_pushes_of_the_same_blob_and_tag(make_registry_server: Any) -> None:
    server = make_registry_server(workers=2)
    blob = os.urandom(2 * 1024 * 1024)
    config = b'{"architecture":"amd64","os":"linux"}'
    barrier = threading.Barrier(8)

    def push(i: int) -> tuple[int, str]:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            barrier.wait()
            push_blob(c, "race/repo", config)
            if i % 2:
                push_blob(c, "race/repo", blob)
            else:
                location = c.post("/v2/race/repo/blobs/uploads/").headers["Location"]
                r = c.patch(location, content=blob[:1000000], headers={"Content-Range": "0-999999"})
                assert r.status_code == 202, r.text
                r = c.put(location, params={"digest": sha256(blob)}, content=blob[1000000:])
                assert r.status_code == 201, r.text
            # each client pushes its own manifest (an annotation differs) to the same tag
            manifest = image_manifest(config, [blob], annotations={"client": str(i)})
            r = c.put("/v2/race/repo/manifests/latest", content=manifest,
                      headers={"Content-Type": OCI_MANIFEST})
            return r.status_code, sha256(manifest)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(8)))
    assert [status for status, _ in results] == [201] * 8
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.get("/v2/race/repo/manifests/latest")
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] in {d for _, d in results}
        for _, digest in results:
            assert c.get(f"/v2/race/repo/manifests/{digest}").status_code == 200
        assert c.get(f"/v2/race/repo/blobs/{sha256(blob)}").content == blob
        assert c.get("/v2/race/repo/tags/list").json()["tags"] == ["latest"]
    if server.data_dir is not None:
        assert not [p for p in server.data_dir.rglob("*") if p.name.endswith(".tmp")]
    no_tracebacks(server)


def send_truncated(host: str, request_line: str, declared: int, sent: bytes) -> None:
    hostname, port = host.rsplit(":", 1)
    with socket.create_connection((hostname, int(port)), timeout=30) as s:
        s.sendall(f"{request_line}\r\nHost: {host}\r\nContent-Length: {declared}\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode() + sent)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(30)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass


def test_truncated_uploads_store_nothing(registry_server: RegistryServer) -> None:
    data = os.urandom(200000)
    digest = sha256(data)
    # a monolithic POST that stops half way
    send_truncated(registry_server.host, f"POST /v2/trunc/blobs/uploads/?digest={digest} HTTP/1.1",
                   len(data), data[:100000])
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        assert c.head(f"/v2/trunc/blobs/{digest}").status_code == 404
        # a final PUT that stops half way: the session keeps what arrived, the blob does not exist
        location = c.post("/v2/trunc/blobs/uploads/").headers["Location"]
    send_truncated(registry_server.host, f"PUT {location}?digest={digest} HTTP/1.1", len(data), data[:50000])
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        assert c.head(f"/v2/trunc/blobs/{digest}").status_code == 404
        status = c.get(location)
        if status.status_code == 204:  # the client can resume from what the server holds
            held = int(status.headers["Range"].split("-")[1]) + 1 if status.headers["Range"] != "0-0" else 0
            r = c.put(location, params={"digest": digest}, content=data[held:],
                      headers={"Content-Range": f"{held}-{len(data) - 1}"} if held < len(data) else {})
            assert r.status_code == 201, r.text
            assert c.get(f"/v2/trunc/blobs/{digest}").content == data
        # a truncated manifest PUT stores nothing either
        manifest = image_manifest(b"{}", [])
    send_truncated(registry_server.host, "PUT /v2/trunc/manifests/t HTTP/1.1", len(manifest), manifest[:20])
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        assert c.get("/v2/trunc/manifests/t").status_code == 404
        assert c.get("/v2/").status_code == 200
    no_tracebacks(registry_server)


def test_chunk_cut_short_across_write_batches_keeps_every_byte(registry_server: RegistryServer) -> None:
    """The server hashes and writes a body in batches of several MiB off the event loop; a PATCH
    cut off part-way through a batch must still store every byte that arrived, in order, so the
    client resumes from the status and the digest comes out right."""
    data = os.urandom(13 * 1024 * 1024 + 12345)
    digest = sha256(data)
    sent = 9 * 1024 * 1024 + 777  # two full 4 MiB batches and a partial one
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        location = c.post("/v2/batch/blobs/uploads/").headers["Location"]
    send_truncated(registry_server.host, f"PATCH {location} HTTP/1.1", len(data), data[:sent])
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        for _ in range(300):  # 416 while the cut-off request still holds the session (S3: writing)
            status = c.get(location)
            if status.status_code != 416:
                break
            time.sleep(0.1)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{sent - 1}"
        r = c.patch(location, content=data[sent:len(data) - 100],
                    headers={"Content-Range": f"{sent}-{len(data) - 101}",
                             "Content-Type": "application/octet-stream"})
        assert r.status_code == 202, r.text
        r = c.put(r.headers["Location"], params={"digest": digest}, content=data[len(data) - 100:])
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/batch/blobs/{digest}").content == data
    no_tracebacks(registry_server)


def test_several_workers_share_upload_state(make_registry_server: Any) -> None:
    server = make_registry_server(workers=3)
    data = os.urandom(600000)
    with httpx.Client(base_url=server.url, timeout=60) as setup:
        location = setup.post("/v2/workers/blobs/uploads/").headers["Location"]
    offset = 0
    for i in range(6):  # a new connection per chunk: the chunks land on different workers
        chunk = data[i * 100000:(i + 1) * 100000]
        with httpx.Client(base_url=server.url, timeout=60) as c:
            end = offset + len(chunk) - 1
            r = c.patch(location, content=chunk, headers={"Content-Range": f"{offset}-{end}"})
            assert r.status_code == 202, r.text
            offset += len(chunk)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.put(location, params={"digest": sha256(data)}).status_code == 201
        assert c.get(f"/v2/workers/blobs/{sha256(data)}").content == data
    no_tracebacks(server)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.filesystem_only  # moto_server would hold the whole GiB in its own memory
@pytest.mark.timeout(1200)
def test_one_gib_blob_streams_in_bounded_memory(registry_server: RegistryServer) -> None:
    size = 1024 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    digest = "sha256:" + expected.hexdigest()

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    assert registry_server.pid is not None
    with httpx.Client(base_url=registry_server.url, timeout=600) as c:
        location = c.post("/v2/huge/blobs/uploads/").headers["Location"]
        r = c.patch(location, content=body())
        assert r.status_code == 202, r.text
        assert c.put(location, params={"digest": digest}).status_code == 201
        got = hashlib.sha256()
        n = 0
        with c.stream("GET", f"/v2/huge/blobs/{digest}") as r:
            assert r.status_code == 200 and r.headers["Content-Length"] == str(size)
            for chunk in r.iter_bytes():
                got.update(chunk)
                n += len(chunk)
        assert n == size and "sha256:" + got.hexdigest() == digest
    peak = peak_rss_kib(registry_server.pid)
    print(f"server peak RSS after 1 GiB push + pull: {peak / 1024:.1f} MiB")
    assert peak < 100 * 1024, f"server peak RSS {peak / 1024:.1f} MiB"
    no_tracebacks(registry_server)


def test_manifest_served_bytes_are_exact(registry_server: RegistryServer) -> None:
    """Whitespace and key order survive: the digest is of the bytes as pushed."""
    with httpx.Client(base_url=registry_server.url) as c:
        push_blob(c, "exact", b"{}")
        body = json.dumps(json.loads(image_manifest(b"{}", [])), indent=7).encode() + b"\n\n"
        r = c.put("/v2/exact/manifests/v", content=body, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha256(body)
        assert c.get("/v2/exact/manifests/v").content == body


def test_client_leaving_mid_download(registry_server: RegistryServer) -> None:
    data = os.urandom(8 * 1024 * 1024)
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        push_blob(c, "leave", data)
    hostname, port = registry_server.host.rsplit(":", 1)
    for _ in range(5):
        with socket.create_connection((hostname, int(port)), timeout=30) as s:
            s.sendall(f"GET /v2/leave/blobs/{sha256(data)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    with httpx.Client(base_url=registry_server.url, timeout=60) as c:
        assert c.get(f"/v2/leave/blobs/{sha256(data)}").content == data
    no_tracebacks(registry_server)
