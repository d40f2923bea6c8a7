"""A hostile-input sweep of every endpoint of a real ``pyreg serve``.

Oversized, malformed and racing requests on every route. The server must answer each with a
4xx (or a success), never a 500; its memory must stay bounded (RSS read from /proc before and
after, peak from VmHWM); and afterwards it must still serve a normal pull.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.fixtures.registry import RegistryServer, descriptor, image_manifest, sha256
from tests.test_protocol_conformance import RawConnection, start_server

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MiB = 1024 * 1024

NAME = "hostile/repo"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"layer bytes " * 1000
ARABIC_DIGITS = "\u0661-\u0662"  # "1-2" in Arabic-Indic digits: Unicode \\d, not HTTP DIGIT


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def server_pid(server: RegistryServer) -> int:
    """The process that serves requests (``pyreg serve`` with one worker runs uvicorn in itself)."""
    assert server.pid is not None
    return server.pid


@pytest.fixture
def server(tmp_path: Any) -> Iterator[RegistryServer]:
    srv = start_server(tmp_path / "hostile")
    try:
        yield srv
    finally:
        srv.stop()


def tracebacks(server: RegistryServer) -> str:
    """The server log's tracebacks, shortened to the lines that say where and what."""
    keep = [line for line in server.log().splitlines()
            if "ERROR" in line or line.startswith(("  File", "Traceback")) or "Error" in line[:60]]
    return "\n".join(keep[-60:])


class Sweep:
    """Sends requests and records every answer; a 500 or a dropped good request is a finding."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        if "headers" in kwargs:  # non-ASCII header values go out as their UTF-8 bytes
            kwargs["headers"] = {k: v.encode() for k, v in kwargs["headers"].items()}
        try:
            r = self.client.request(method, url, **kwargs)
        except httpx.RemoteProtocolError:
            # the server refused the request at the HTTP layer (e.g. a header limit): no 500
            with self.lock:
                self.seen.append((f"{method} {url[:100]}", 0))
            return None
        with self.lock:
            self.seen.append((f"{method} {url[:100]}", r.status_code))
        return r

    def server_errors(self) -> list[tuple[str, int]]:
        return [(what, status) for what, status in self.seen if status >= 500]


def push_image(c: httpx.Client) -> bytes:
    for blob in (CONFIG, LAYER):
        r = c.post(f"/v2/{NAME}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        assert r.status_code == 201, r.text
    manifest = image_manifest(CONFIG, [LAYER])
    r = c.put(f"/v2/{NAME}/manifests/stable", content=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return manifest


def normal_pull(c: httpx.Client, manifest: bytes) -> None:
    r = c.get(f"/v2/{NAME}/manifests/stable", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == manifest
    for d in [json.loads(manifest)["config"], *json.loads(manifest)["layers"]]:
        r = c.get(f"/v2/{NAME}/blobs/{d['digest']}")
        assert r.status_code == 200 and sha256(r.content) == d["digest"]


def malformed_numbers(sweep: Sweep, upload: str) -> None:
    blob = f"/v2/{NAME}/blobs/{sha256(LAYER)}"
    for n in ("abc", "-1", "+5", " 5", "5 ", "1_000", "²", ARABIC_DIGITS, "0x10", "1e3", "9" * 19,
              "9" * 5000, ""):
        for url in (f"/v2/{NAME}/tags/list", "/v2/_catalog", f"/v2/{NAME}/referrers/{sha256(b'x')}"):
            sweep("GET", url, params={"n": n, "last": n})
    for last in ("\u00ff" * 1000, "z" * 8000, "..", "%00", "sha256:" + "0" * 64):
        sweep("GET", f"/v2/{NAME}/tags/list", params={"last": last, "n": "2"})
        sweep("GET", f"/v2/{NAME}/referrers/{sha256(b'x')}", params={"last": last})
    for value in ("bytes=", "bytes=-", "bytes=5-1", "bytes=--1", "bytes=1-2,3-4", "bytes=²-",
                  "bytes=" + ARABIC_DIGITS,
                  "bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000,
                  "bytes=-0", "items=0-1", "bytes=0-0", "bytes=" + "0" * 30 + "1-"):
        sweep("GET", blob, headers={"Range": value})
        sweep("HEAD", blob, headers={"Range": value})
    for value in ("", "-", "5-", "-5", "a-b", "0-" + "9" * 5000, "9" * 5000 + "-" + "9" * 5001,
                  ARABIC_DIGITS, "0-4/²", "bytes 0-4/*", "0-4/" + "9" * 5000, "4-0",
                  "0-999999999999999999999"):
        sweep("PATCH", upload, content=b"12345", headers={"Content-Range": value})
        sweep("PUT", upload, params={"digest": sha256(b"12345")}, content=b"12345",
              headers={"Content-Range": value})


def malformed_names_and_references(sweep: Sweep) -> None:
    digest = sha256(LAYER)
    names = ["A", "a" * 300, "a/" * 200 + "b", "..", "a/../b", "%2e%2e", "a\u00e9", "-a", "_catalog"]
    references = [".INVALID_MANIFEST_NAME", "a" * 5000, "sha256:" + "g" * 64, "sha256:" + "0" * 5000,
                  "md5:abc", "sha512:" + "0" * 64, ":", "sha256:", "tag%00", "\u00e9"]
    for name in names:
        sweep("GET", f"/v2/{name}/tags/list")
        sweep("GET", f"/v2/{name}/manifests/latest")
        sweep("POST", f"/v2/{name}/blobs/uploads/")
        sweep("GET", f"/v2/{name}/blobs/{digest}")
    for ref in references:
        for method in ("GET", "HEAD", "DELETE"):
            sweep(method, f"/v2/{NAME}/manifests/{ref}")
        sweep("PUT", f"/v2/{NAME}/manifests/{ref}", content=b"{}", headers={"Content-Type": OCI_MANIFEST})
        for method in ("GET", "HEAD", "DELETE"):
            sweep(method, f"/v2/{NAME}/blobs/{ref}")
        sweep("GET", f"/v2/{NAME}/referrers/{ref}")
        sweep("POST", f"/v2/{NAME}/blobs/uploads/", params={"digest": ref}, content=b"x")
        sweep("POST", f"/v2/{NAME}/blobs/uploads/", params={"mount": ref, "from": "a" * 5000})
        sweep("GET", f"/v2/{NAME}/blobs/uploads/{ref}")
        sweep("PATCH", f"/v2/{NAME}/blobs/uploads/{ref}", content=b"x")
        sweep("PUT", f"/v2/{NAME}/blobs/uploads/{ref}", params={"digest": digest})
        sweep("DELETE", f"/v2/{NAME}/blobs/uploads/{ref}")
    sweep("POST", f"/v2/{NAME}/blobs/uploads/", params={"digest-algorithm": "x" * 5000})
    for method in ("OPTIONS", "TRACE", "CONNECT2", "PROPFIND"):
        sweep(method, f"/v2/{NAME}/manifests/stable")


def hostile_manifests(sweep: Sweep) -> None:
    config = descriptor(CONFIG, "application/vnd.oci.image.config.v1+json")
    bodies: list[bytes] = [
        b"[" * 100000 + b"]" * 100000,  # nesting deeper than any parser's recursion
        b'{"schemaVersion": 2, "config": ' + b'{"a":' * 50000 + b"1" + b"}" * 50000 + b"}",
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(str(i).encode()),
             "size": 1} for i in range(20000)]}).encode(),  # far more references than allowed
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            descriptor(str(i).encode(), OCI_MANIFEST) for i in range(20000)]}).encode(),
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {"mediaType": '
        b'"a/b", "digest": "' + sha256(CONFIG).encode() + b'", "size": ' + b"9" * 5000 + b'}, "layers": []}',
        b'{"schemaVersion": 1e999}', b"\xff\xfe\x00{", b"", b"null", b'"string"',
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [],
                    "annotations": {"k": "v" * (3 * MiB)}}).encode(),  # big, but under the limit
        b" " * (4 * MiB + 1),  # over the limit
    ]
    for body in bodies:
        sweep("PUT", f"/v2/{NAME}/manifests/hostile", content=body, headers={"Content-Type": OCI_MANIFEST})
    tags = "&".join(f"tag=t{i}" for i in range(2000))
    sweep("PUT", f"/v2/{NAME}/manifests/{sha256(b'{}')}?{tags}", content=b"{}",
          headers={"Content-Type": OCI_MANIFEST})
    # a body that never matches what its Content-Length promised is the HTTP layer's to refuse
    for length in ("abc", "-1", "9" * 30, "5, 6"):
        with RawConnection(sweep.client.base_url.netloc.decode()) as conn:
            try:
                status, _, _ = conn.request("PUT", f"/v2/{NAME}/manifests/raw", {"Content-Length": length},
                                            b"{}")
            except (ConnectionError, OSError):
                status = 0
            with sweep.lock:
                sweep.seen.append((f"PUT raw Content-Length {length[:20]}", status))


def oversized_headers(sweep: Sweep) -> None:
    sweep("GET", f"/v2/{NAME}/manifests/stable", headers={"Accept": ",".join(["a/b"] * 1500)})
    sweep("GET", f"/v2/{NAME}/blobs/{sha256(LAYER)}", headers={"Range": "bytes=" + "0-1," * 1500 + "0-1"})
    sweep("GET", f"/v2/{NAME}/tags/list", headers={"X-Forwarded-Host": "h" * 6000})


def race_round(sweep: Sweep, c: httpx.Client, manifest: bytes) -> None:
    """Requests that fight over one upload session, one tag, one blob link."""
    data = b"race data " * 10000
    location = c.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    barrier = threading.Barrier(8)

    def patch(i: int) -> None:
        barrier.wait()
        sweep("PATCH", location, content=data, headers={"Content-Range": f"0-{len(data) - 1}"})
        sweep("GET", location)
        if i % 2:
            sweep("PUT", location, params={"digest": sha256(data)})
        else:
            sweep("DELETE", location)

    def tag_fight(i: int) -> None:
        barrier.wait()
        other = image_manifest(CONFIG, [LAYER], annotations={"i": str(i)})
        sweep("PUT", f"/v2/{NAME}/manifests/fight", content=other, headers={"Content-Type": OCI_MANIFEST})
        sweep("GET", f"/v2/{NAME}/manifests/fight")
        sweep("DELETE", f"/v2/{NAME}/manifests/fight")
        sweep("DELETE", f"/v2/{NAME}/manifests/{sha256(other)}")
        sweep("GET", f"/v2/{NAME}/tags/list")

    def blob_fight(i: int) -> None:
        blob = b"short-lived blob"
        barrier.wait()
        sweep("POST", f"/v2/{NAME}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        sweep("DELETE", f"/v2/{NAME}/blobs/{sha256(blob)}")
        sweep("GET", f"/v2/{NAME}/blobs/{sha256(blob)}")
        sweep("POST", f"/v2/{NAME}/blobs/uploads/", params={"mount": sha256(blob), "from": NAME})

    for job in (patch, tag_fight, blob_fight):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(job, range(8)))
        barrier.reset()


def races(sweep: Sweep, c: httpx.Client, manifest: bytes, rounds: int = 3) -> None:
    for _ in range(rounds):  # each round is a fresh chance for the interleavings that break
        race_round(sweep, c, manifest)


def test_hostile_sweep_no_500_bounded_memory_still_serves(server: RegistryServer) -> None:
    pid = server_pid(server)
    transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=16))
    with httpx.Client(base_url=server.url, timeout=60, transport=transport) as c:
        manifest = push_image(c)
        normal_pull(c, manifest)
        before = rss_kib(pid)
        sweep = Sweep(c)
        upload = c.post(f"/v2/{NAME}/blobs/uploads/").headers["Location"]
        steps: list[Callable[[], None]] = [
            lambda: malformed_numbers(sweep, upload),
            lambda: malformed_names_and_references(sweep),
            lambda: hostile_manifests(sweep),
            lambda: oversized_headers(sweep),
            lambda: races(sweep, c, manifest),
        ]
        for step in steps:
            step()
        after, peak = rss_kib(pid), rss_kib(pid, "VmHWM")
        print(f"hostile sweep: {len(sweep.seen)} requests; server RSS {before / 1024:.1f} MiB before, "
              f"{after / 1024:.1f} MiB after, peak {peak / 1024:.1f} MiB")
        assert sweep.server_errors() == [], (sweep.server_errors()[:20], tracebacks(server))
        assert "Traceback" not in server.log(), tracebacks(server)
        # the sweep sends 4 MiB bodies and 20000-entry manifests: memory stays within a few of those
        assert after - before < 64 * 1024, (before, after)
        assert peak < 256 * 1024, peak
        normal_pull(c, manifest)
    with httpx.Client(base_url=server.url, timeout=60) as fresh:  # and on a new connection too
        normal_pull(fresh, manifest)


async def test_filesystem_deletes_and_writes_race_without_errors(tmp_path: Any) -> None:
    """The driver-level race behind the sweep's 500s: deletes of one tree beside writes into it.

    Each delete either removes the tree or finds it gone (PathNotFoundError); each write lands
    (it came after the delete); nothing else may escape.
    """
    import asyncio
    import contextlib

    from pyreg.storage.errors import PathNotFoundError
    from pyreg.storage.filesystem import FilesystemDriver

    driver = FilesystemDriver(str(tmp_path / "root"))
    unexpected: list[BaseException] = []

    async def delete(path: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await driver.delete(path)

    for round_ in range(100):  # the replaced-directory race shows about once in 150 rounds
        for i in range(20):
            await driver.put_content(f"/tree/{i}/deep/link", b"x")
        results = await asyncio.gather(
            *(delete("/tree") for _ in range(4)),
            *(driver.put_content(f"/tree/{i}/deep/link", b"new") for i in range(4)),
            *(delete(f"/tree/{i}") for i in range(4)),
            return_exceptions=True)
        unexpected += [r for r in results if isinstance(r, BaseException)]
        assert not unexpected, (round_, unexpected)
