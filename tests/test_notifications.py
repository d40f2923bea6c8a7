"""Webhooks (registry/notifications.py) from a real ``pyreg serve`` to a real HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.config import ConfigError, load_config
from tests.fixtures.registry import free_port, image_manifest, sha256

pytestmark = pytest.mark.filesystem_only  # about HTTP, not storage

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EVENTS = "application/vnd.docker.distribution.events.v1+json"
BLOB = "application/octet-stream"

RECEIVER = textwrap.dedent('''
    """A webhook receiver: appends every POST as a JSON line; fails the first N; can hold requests."""
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, out, fail, gate = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen[0] += 1
            failing = seen[0] <= fail
            while gate and not os.path.exists(gate):
                time.sleep(0.05)
            with open(out, "a") as f:
                f.write(json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": json.loads(body), "failed": failing}) + "\\n")
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
''')


class Receiver:
    def __init__(self, workdir: Path, fail: int = 0, gated: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.out = workdir / "received.jsonl"
        self.gate = workdir / "open" if gated else None
        script = workdir / "receiver.py"
        script.write_text(RECEIVER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.port), str(self.out), str(fail),
                                      str(self.gate or "")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("webhook receiver did not start") from None
                time.sleep(0.05)

    def requests(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests() if not r["failed"] for e in r["body"]["events"]]

    def wait_for(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.events()) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.events()

    def open_gate(self) -> None:
        assert self.gate is not None
        self.gate.touch()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**kw: Any) -> Receiver:
        r = Receiver(tmp_path / f"receiver-{len(started)}", **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def push_image(http: httpx.Client, name: str, ref: str, seed: str, params: Any = None) -> bytes:
    config, layer = f'{{"seed":"{seed}"}}'.encode(), f"layer {seed}".encode()
    for blob in (config, layer):
        r = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        assert r.status_code == 201, r.text
    manifest = image_manifest(config, [layer])
    r = http.put(f"/v2/{name}/manifests/{ref}", params=params, content=manifest,
                 headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
    return manifest


def metrics(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def endpoint(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    """Manifest events only, unless ``ignoredmediatypes`` says otherwise (blob events: see
    test_blob_push_mount_and_pull_events)."""
    return {"name": "test", "url": receiver.url, "timeout": "10s", "threshold": 2, "backoff": "200ms",
            "ignoredmediatypes": [BLOB], **extra}


def test_push_and_delete_events(make_registry_server: Callable[..., Any],
                                receivers: Callable[..., Receiver]) -> None:
    hook = receivers()
    server = make_registry_server({"notifications": {"endpoints": [
        endpoint(hook, headers={"Authorization": ["Bearer hook-secret"], "X-Hook": "plain string"})]}})
    http = httpx.Client(base_url=server.url, timeout=30, headers={"User-Agent": "webhook-test/1"})
    manifest = push_image(http, "team/app", "v1", "one")
    digest = sha256(manifest)
    other = push_image(http, "team/app", sha256(image_manifest(b'{"seed":"two"}', [b"layer two"])), "two",
                       params=[("tag", "a"), ("tag", "b")])
    assert http.get("/v2/team/app/manifests/v1").status_code == 200  # no pull events by default
    assert http.delete("/v2/team/app/manifests/v1").status_code == 202
    assert http.delete(f"/v2/team/app/manifests/{sha256(other)}").status_code == 202

    events = hook.wait_for(5)
    assert [(e["action"], e["target"].get("tag")) for e in events] == [
        ("push", "v1"), ("push", "a"), ("push", "b"), ("delete", "v1"), ("delete", None)]
    for r in hook.requests():
        assert r["headers"]["content-type"] == EVENTS
        assert r["headers"]["authorization"] == "Bearer hook-secret"  # Distribution's list form
        assert r["headers"]["x-hook"] == "plain string"
    push = events[0]
    assert push["target"] == {"mediaType": OCI_MANIFEST, "size": len(manifest), "length": len(manifest),
                              "digest": digest, "repository": "team/app", "tag": "v1",
                              "url": f"{server.url}/v2/team/app/manifests/{digest}"}
    assert push["request"]["method"] == "PUT" and push["request"]["useragent"] == "webhook-test/1"
    assert push["request"]["host"] == server.host and push["request"]["addr"].startswith("127.0.0.1:")
    assert push["request"]["id"] and push["id"] and push["timestamp"].endswith("Z")
    assert push["actor"] == {}
    assert len({e["source"]["instanceID"] for e in events}) == 1
    assert len({e["id"] for e in events}) == 5
    assert events[1]["target"]["digest"] == events[2]["target"]["digest"] == sha256(other)
    assert events[3]["target"] == {"repository": "team/app", "tag": "v1", "digest": digest}
    assert events[4]["target"] == {"repository": "team/app", "digest": sha256(other)}


def test_retries_until_delivered(make_registry_server: Callable[..., Any],
                                 receivers: Callable[..., Receiver]) -> None:
    hook = receivers(fail=3)
    server = make_registry_server({"notifications": {"endpoints": [endpoint(hook)]}})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        push_image(http, "team/app", "v1", "retry")
    events = hook.wait_for(1)
    assert [e["action"] for e in events] == ["push"]
    attempts = hook.requests()
    assert [a["failed"] for a in attempts] == [True, True, True, False]
    assert len({a["body"]["events"][0]["id"] for a in attempts}) == 1  # the same event each time
    assert "endpoint test failed (status 500)" in server.log()
    delivered = ("pyreg_notifications_events_total", (("endpoint", "test"), ("outcome", "delivered")))
    deadline = time.monotonic() + 30  # the receiver logs before it answers: the count follows
    while (found := metrics(server)).get(delivered) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found[delivered] == 1
    assert found[("pyreg_notifications_failures_total", (("endpoint", "test"),))] == 3
    assert found[("pyreg_notifications_pending", (("endpoint", "test"),))] == 0


def test_slow_endpoint_never_delays_pushes(make_registry_server: Callable[..., Any],
                                           receivers: Callable[..., Receiver]) -> None:
    """The receiver holds every request until the test lets it answer: pushes go on regardless,
    the bounded queue drops what does not fit, and the rest arrives once the receiver answers."""
    hook = receivers(gated=True)
    server = make_registry_server({"notifications": {"endpoints": [
        endpoint(hook, timeout="120s", queuesize=2)]}})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(6):
            push_image(http, "team/app", f"t{i}", f"slow{i}")  # each answered 201 while the hook hangs
        assert http.get("/v2/team/app/tags/list").json()["tags"] == [f"t{i}" for i in range(6)]
    assert hook.events() == []
    hook.open_gate()
    events = hook.wait_for(3)
    tags = [e["target"]["tag"] for e in events]
    assert 1 <= len(tags) < 6 and tags == [f"t{i}" for i in range(len(tags))]  # the oldest, in order
    assert "event(s) dropped so far (queuesize 2)" in server.log()
    found = metrics(server)
    dropped = found[("pyreg_notifications_events_total", (("endpoint", "test"), ("outcome", "dropped")))]
    assert dropped >= 1 and dropped + len(tags) <= 6


def test_filters_pulls_and_two_endpoints(make_registry_server: Callable[..., Any],
                                         receivers: Callable[..., Receiver]) -> None:
    picky, everything = receivers(), receivers()
    server = make_registry_server({"notifications": {"endpoints": [
        endpoint(picky, name="picky", events=["push", "pull", "delete"], ignore={"actions": ["delete"]},
                 ignoredmediatypes=[OCI_INDEX, BLOB]),
        endpoint(everything, name="all"),
        {"name": "off", "url": "http://127.0.0.1:9/never", "disabled": True},
    ]}})
    with httpx.Client(base_url=server.url, timeout=30) as http:
        manifest = push_image(http, "team/app", "v1", "img")
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
             "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
        r = http.put("/v2/team/app/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 201
        assert http.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
        assert http.head("/v2/team/app/manifests/v1").status_code == 200  # HEAD is no pull
        assert http.delete("/v2/team/app/manifests/multi").status_code == 202
    all_events = everything.wait_for(3)
    assert [(e["action"], e["target"].get("mediaType")) for e in all_events] == [
        ("push", OCI_MANIFEST), ("push", OCI_INDEX), ("delete", None)]
    picked = picky.wait_for(2)
    assert [(e["action"], e["target"]["mediaType"]) for e in picked] == [
        ("push", OCI_MANIFEST), ("pull", OCI_MANIFEST)]
    pull = picked[1]
    assert pull["target"]["tag"] == "v1" and pull["target"]["digest"] == sha256(manifest)
    assert pull["target"]["size"] == len(manifest) and pull["request"]["method"] == "GET"


def test_actor_is_the_user(make_registry_server: Callable[..., Any], receivers: Callable[..., Receiver],
                           htpasswd_users: Path) -> None:
    hook = receivers()
    server = make_registry_server({"auth": {"htpasswd": {"path": str(htpasswd_users)}},
                                   "notifications": {"endpoints": [endpoint(hook)]}})
    with httpx.Client(base_url=server.url, timeout=30, auth=("alice", "alice-pw")) as http:
        push_image(http, "team/app", "v1", "auth", params={"x": "1"})
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        r = anonymous.put("/v2/team/app/manifests/v2", content=b"{}", headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 401  # refused by auth: no event
    events = hook.wait_for(1)
    assert [(e["action"], e["actor"]) for e in events] == [("push", {"name": "alice"})]


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"notifications\.endpoints\[0\]\.url"):
        load_config(data={"notifications": {"endpoints": [{"url": "ftp://x"}]}}, environ={})
    with pytest.raises(ConfigError, match="unknown action"):
        load_config(data={"notifications": {"endpoints": [{"url": "http://x", "events": ["mount"]}]}},
                    environ={})
    config = load_config(data={"notifications": {"endpoints": [{"url": "http://x", "timeout": "500ms"}]}},
                         environ={})
    (only,) = config.notifications.endpoints
    assert only.name == "endpoint0" and only.timeout == 0.5 and only.threshold == 3


def test_no_endpoints_no_middleware() -> None:
    from pyreg.registry.app import build_middleware

    plain = build_middleware(load_config(environ={}))
    hooked = build_middleware(load_config(data={"notifications": {"endpoints": [{"url": "http://x"}]}},
                                          environ={}))
    assert len(hooked) == len(plain) + 1


def test_blob_push_mount_and_pull_events(make_registry_server: Callable[..., Any],
                                         receivers: Callable[..., Receiver]) -> None:
    """Layers have events as in Distribution: push when an upload finishes (monolithic or
    chunked), mount with fromRepository, pull on GET; and no httpx log line per delivery."""
    hook = receivers()
    server = make_registry_server({"notifications": {"endpoints": [
        endpoint(hook, events=["push", "pull", "delete"], ignoredmediatypes=[])]}})
    one, two = b"blob one" * 100, b"blob two" * 300
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/v2/team/a/blobs/uploads/", params={"digest": sha256(one)}, content=one)
        assert r.status_code == 201
        r = http.post("/v2/team/a/blobs/uploads/")
        assert r.status_code == 202
        r = http.patch(r.headers["Location"], content=two[:1000],
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        r = http.put(r.headers["Location"], params={"digest": sha256(two)}, content=two[1000:])
        assert r.status_code == 201
        r = http.post("/v2/team/b/blobs/uploads/", params={"mount": sha256(two), "from": "team/a"})
        assert r.status_code == 201
        assert http.get(f"/v2/team/b/blobs/{sha256(two)}").content == two
        assert http.head(f"/v2/team/b/blobs/{sha256(two)}").status_code == 200  # HEAD is no pull
        assert http.get(f"/v2/team/b/blobs/{sha256(one)}").status_code == 404  # not linked: nothing
    events = hook.wait_for(4)
    assert [(e["action"], e["target"]["repository"], e["target"]["digest"]) for e in events] == [
        ("push", "team/a", sha256(one)), ("push", "team/a", sha256(two)),
        ("mount", "team/b", sha256(two)), ("pull", "team/b", sha256(two))]
    for e, blob in zip(events, (one, two, two, two), strict=True):
        assert e["target"]["mediaType"] == BLOB
        assert e["target"]["size"] == e["target"]["length"] == len(blob)
        assert e["target"]["url"] == f"{server.url}/v2/{e['target']['repository']}/blobs/{sha256(blob)}"
    assert events[2]["target"]["fromRepository"] == "team/a"
    assert "fromRepository" not in events[1]["target"]
    assert [e["request"]["method"] for e in events] == ["POST", "PUT", "POST", "GET"]
    assert "HTTP Request:" not in server.log()  # httpx's INFO line per delivery stays out
