"""Pull, push and copy as graph copies (client/transfer.py over storage/content.py's copy_graph):
push mounts a blob from the repository it was pulled from, skips what the target has,
``pull --all-tags``, and the feedback a user gets from a rate-limiting or absent registry."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.client import ClientEnv
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage


def _access(server: Any) -> list[dict[str, Any]]:
    """The JSON access log lines of a stopped ``pyreg serve``."""
    server.stop()
    out = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "pyreg.access":
                out.append(entry)
    return out


def test_push_mounts_from_the_repository_a_blob_came_from(pyreg_factory: Any, client_env: ClientEnv,
                                                         skopeo: Skopeo, busybox_image: TestImage) -> None:
    server = pyreg_factory({"log": {"format": "json", "accesslog": {"disabled": False}}})
    host = server.host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "team/a", "1"))
    client_env.run("pull", "-q", f"{host}/team/a:1")
    # a local name on another registry: only the per-blob record can say where the blobs are
    client_env.run("tag", f"{host}/team/a:1", "elsewhere.example/bb:1")
    out = json.loads(client_env.run("push", "elsewhere.example/bb:1", f"{host}/team/b:1", "--json").stdout)
    assert out["digest"] == busybox_image.manifest_digest
    assert {b["status"] for b in out["blobs"]} == {"mounted"}
    assert len(out["blobs"]) == 1 + len(busybox_image.layer_digests)
    # pushed again: the repository has every blob now, nothing is sent
    again = json.loads(client_env.run("push", "elsewhere.example/bb:1", f"{host}/team/b:1", "--json").stdout)
    assert {b["status"] for b in again["blobs"]} == {"exists"}
    assert skopeo.digest(tagged(host, "team/b", "1")) == busybox_image.manifest_digest
    to_b = [e for e in _access(server) if e["path"].startswith("/v2/team/b/blobs/")]
    mounts = [e for e in to_b if e["method"] == "POST"]
    assert mounts and all("mount=" in e["query"] and "from=team%2Fa" in e["query"] and e["status"] == 201
                          for e in mounts), mounts
    assert not [e for e in to_b if e["method"] in ("PUT", "PATCH")]  # no blob bytes went up


def test_push_skips_blobs_the_repository_has(pyreg_factory: Any, client_env: ClientEnv,
                                            busybox_image: TestImage, five_layer_image: TestImage) -> None:
    host = pyreg_factory().host
    client_env.run("push", "-q", str(busybox_image.layout), f"{host}/team/base:1")
    # the five-layer image is busybox plus four layers: only what the repository lacks goes up
    out = json.loads(client_env.run("push", str(five_layer_image.layout), f"{host}/team/base:2",
                                    "--json").stdout)
    status = {b["digest"]: b["status"] for b in out["blobs"]}
    shared = set(busybox_image.layer_digests) & set(five_layer_image.layer_digests)
    assert shared and all(status[d] == "exists" for d in shared)
    assert {status[d] for d in set(five_layer_image.layer_digests) - shared} == {"pushed"}


def test_pull_all_tags(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                       busybox_image: TestImage, five_layer_image: TestImage) -> None:
    host = pyreg_factory().host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "team/many", "one"))
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "team/many", "two"))
    out = json.loads(client_env.run("pull", "--all-tags", f"{host}/team/many", "--json").stdout)
    assert [(r["reference"], r["digest"]) for r in out] == [
        (f"{host}/team/many:one", busybox_image.manifest_digest),
        (f"{host}/team/many:two", five_layer_image.manifest_digest)]
    listing = json.loads(client_env.run("images", "--json").stdout)
    assert sorted(r["tag"] for r in listing) == ["one", "two"]
    refused = client_env.run("pull", "-a", f"{host}/team/many:one", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == \
        "pyreg: tag can't be used with --all-tags/-a"


class _RateLimited(http.server.BaseHTTPRequestHandler):
    """A registry that answers everything with 429 and a long Retry-After."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "30")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


@pytest.fixture
def rate_limited() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RateLimited)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rate_limit_is_said_before_the_wait(rate_limited: str, client_env: ClientEnv) -> None:
    """The notice comes while the client waits out Retry-After (30 s), not after: the test reads
    it from the running process, then stops it."""
    proc = client_env.popen("tags", f"{rate_limited}/team/app")
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == f"pyreg: rate limited by {rate_limited}, retrying in 30 s"
        assert proc.poll() is None  # still waiting: told at once
    finally:
        proc.kill()
        proc.wait()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_absent_registry_is_named_without_errno(client_env: ClientEnv) -> None:
    port = _closed_port()
    for ref, reason in [(f"127.0.0.1:{port}/team/app:1", "connection refused"),
                        ("no-such-registry.invalid/team/app:1", "unknown host")]:
        proc = client_env.run("pull", ref, check=False, timeout=60)
        host = ref.split("/")[0]
        assert proc.returncode == 1
        assert proc.stderr.strip().startswith(f"pyreg: cannot reach registry {host}: {reason}"), proc.stderr
        assert "Errno" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
