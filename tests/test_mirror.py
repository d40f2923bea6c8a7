"""The pull-through cache against real upstreams: Debian's docker-registry (Distribution 2.8)
with htpasswd auth and its access log, and a second ``pyreg serve`` with token auth."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.auth import htpasswd
from tests import images
from tests.fixtures.auth import SigningKey
from tests.fixtures.peers import DistributionRegistry, Skopeo, tagged
from tests.images import TestImage

ACCEPT = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json, "
          "application/vnd.docker.distribution.manifest.list.v2+json")
USER, PASSWORD = "mirror", "mirror-pw"


class AuthDistribution(DistributionRegistry):
    """Distribution with htpasswd auth and its access log on (one line per request, in the log)."""

    def __init__(self, root: Path, workdir: Path, htpasswd_path: Path) -> None:
        super().__init__(root, workdir)
        self.htpasswd_path = htpasswd_path

    def write_config(self) -> None:
        super().write_config()
        config = json.loads(self.config_path.read_text())
        config["auth"] = {"htpasswd": {"realm": "upstream", "path": str(self.htpasswd_path)}}
        config["log"]["accesslog"] = {"disabled": False}
        self.config_path.write_text(json.dumps(config))

    def blob_gets(self, digest: str, expect: int = 0) -> int:
        """How many times the blob was served (GET answered 200).

        Distribution writes its access-log line after the last byte left, which can be after
        the mirror has passed that byte on to the client: with ``expect``, wait (up to 10 s)
        for at least that many lines before counting, so a slow log line is not a miss.
        """
        pattern = re.compile(rf'"GET /v2/[^ ]+/blobs/{re.escape(digest)} HTTP/1\.1" 200 ')
        deadline = time.monotonic() + 10
        while True:
            count = len(pattern.findall(self.log_path.read_text(errors="replace")))
            if count >= expect or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    return {"filesystem": {"rootdirectory": str(tmp_path / "mirror-data")}}


@pytest.fixture
def upstream(tmp_path: Path) -> Any:
    users = tmp_path / "upstream-htpasswd"
    htpasswd.set_user(users, USER, PASSWORD, cost=4)
    reg = AuthDistribution(tmp_path / "upstream-root", tmp_path / "upstream", users)
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture
def medium_image(test_images_dir: Path) -> TestImage:
    """busybox plus a 24 MiB random layer: big enough to be streamed in many chunks."""
    return images.build_random_image(test_images_dir / "mirror-medium", 24 << 20)


def push_upstream(skopeo: Skopeo, upstream: AuthDistribution, image: TestImage, repo: str,
                  tag: str = "v1") -> None:
    skopeo.copy(image.oci_ref, tagged(upstream.host, repo, tag), "--dest-creds", f"{USER}:{PASSWORD}")


def mirror_config(upstream: AuthDistribution, **extra: Any) -> dict[str, Any]:
    entry = {"url": upstream.url, "namespace": "up/*", "username": USER, "password": PASSWORD, **extra}
    return {"mirror": {"upstreams": [entry], "local": ["up/local/*"]},
            "storage": {"delete": {"enabled": True}}}


def get_manifest(base: str, repo: str, ref: str, client: httpx.Client | None = None) -> httpx.Response:
    c = client or httpx
    return c.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=60)


def pull_all(base: str, repo: str, ref: str) -> dict[str, str]:
    """GET the manifest and every blob; digest -> sha256 of the bytes received."""
    got: dict[str, str] = {}
    with httpx.Client(timeout=120) as client:
        r = get_manifest(base, repo, ref, client)
        r.raise_for_status()
        manifest = r.json()
        for desc in [manifest["config"], *manifest["layers"]]:
            h = hashlib.sha256()
            with client.stream("GET", f"{base}/v2/{repo}/blobs/{desc['digest']}") as b:
                b.raise_for_status()
                for chunk in b.iter_bytes():
                    h.update(chunk)
            got[desc["digest"]] = "sha256:" + h.hexdigest()
    return got


def test_skopeo_pulls_through_the_mirror_each_blob_fetched_once(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        five_layer_image: TestImage, tmp_path: Path) -> None:
    push_upstream(skopeo, upstream, five_layer_image, "team/five")
    mirror = make_registry_server(mirror_config(upstream))
    ref = tagged(mirror.host, "up/team/five", "v1")
    assert skopeo.digest(ref) == five_layer_image.manifest_digest
    assert skopeo.inspect_raw(ref) == five_layer_image.manifest  # stored as is: same digest
    for round_ in range(2):  # the second pull is served from the cache
        skopeo.copy(ref, f"oci:{tmp_path / f'out{round_}'}:v1")
        for digest in five_layer_image.blob_digests:
            assert upstream.blob_gets(digest, expect=1) == 1, digest
    blob_dir = tmp_path / "mirror-data/docker/registry/v2/blobs/sha256"
    for digest in five_layer_image.blob_digests:
        assert (blob_dir / digest[7:9] / digest[7:] / "data").read_bytes() == five_layer_image.blob(digest)
    metrics = httpx.get(f"{mirror.url}/metrics").text
    assert re.search(r'pyreg_mirror_hits_total\{kind="blob",upstream="127\.0\.0\.1:\d+"\} [1-9]', metrics)
    assert re.search(r'pyreg_mirror_upstream_bytes_total\{upstream="127\.0\.0\.1:\d+"\} [1-9]', metrics)


def test_eight_clients_two_workers_one_upstream_fetch(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        medium_image: TestImage) -> None:
    push_upstream(skopeo, upstream, medium_image, "big")
    mirror = make_registry_server(mirror_config(upstream), workers=2)
    results: list[dict[str, str] | BaseException] = []

    def one() -> None:
        try:
            results.append(pull_all(mirror.url, "up/big", "v1"))
        except BaseException as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 8
    for result in results:
        assert isinstance(result, dict), result
        assert result == {d: d for d in medium_image.blob_digests}
    for digest in medium_image.blob_digests:
        assert upstream.blob_gets(digest, expect=1) == 1, digest


def test_two_replicas_on_one_storage_fetch_each_blob_once(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        medium_image: TestImage) -> None:
    """Two ``pyreg serve`` on one storage: the blob's lock in storage elects one fetcher; the
    other replica's clients read its staging file, then the published blob."""
    push_upstream(skopeo, upstream, medium_image, "big")
    replicas = [make_registry_server(mirror_config(upstream)) for _ in range(2)]
    results: list[dict[str, str] | BaseException] = []

    def one(base: str) -> None:
        try:
            results.append(pull_all(base, "up/big", "v1"))
        except BaseException as e:  # reported below
            results.append(e)

    threads = [threading.Thread(target=one, args=(replicas[i % 2].url,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 6
    for result in results:
        assert result == {d: d for d in medium_image.blob_digests}, result
    for digest in medium_image.blob_digests:
        assert upstream.blob_gets(digest, expect=1) == 1, digest


def test_client_that_disconnects_does_not_break_the_fill(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        medium_image: TestImage) -> None:
    push_upstream(skopeo, upstream, medium_image, "big")
    mirror = make_registry_server(mirror_config(upstream))
    layer = medium_image.layer_digests[-1]
    with httpx.Client(timeout=60) as first, \
            first.stream("GET", f"{mirror.url}/v2/up/big/blobs/{layer}") as r:
        assert r.status_code == 200
        next(r.iter_raw(1 << 16))  # one chunk, then hang up
    assert pull_all(mirror.url, "up/big", "v1")[layer] == layer
    assert upstream.blob_gets(layer, expect=1) == 1


def test_moved_tag_is_seen_after_the_ttl_and_stale_copy_served_when_upstream_is_down(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage, five_layer_image: TestImage) -> None:
    push_upstream(skopeo, upstream, busybox_image, "app", "latest")
    mirror = make_registry_server(mirror_config(upstream, tagttl="1s"))
    first = get_manifest(mirror.url, "up/app", "latest")
    assert first.status_code == 200
    assert first.headers["docker-content-digest"] == busybox_image.manifest_digest
    pull_all(mirror.url, "up/app", "latest")
    push_upstream(skopeo, upstream, five_layer_image, "app", "latest")  # the tag moves upstream
    time.sleep(1.1)  # past the tag ttl
    moved = get_manifest(mirror.url, "up/app", "latest")
    assert moved.headers["docker-content-digest"] == five_layer_image.manifest_digest
    assert "warning" not in moved.headers
    pull_all(mirror.url, "up/app", "latest")

    upstream.stop()
    time.sleep(1.1)  # the tag is due for a check again, and upstream is gone
    stale = get_manifest(mirror.url, "up/app", "latest")
    assert stale.status_code == 200, stale.text
    assert stale.headers["docker-content-digest"] == five_layer_image.manifest_digest
    assert "stale" in stale.headers["warning"]
    assert pull_all(mirror.url, "up/app", "latest") == {d: d for d in five_layer_image.blob_digests}
    assert "serving up/app:latest stale" in mirror.log()
    missing = get_manifest(mirror.url, "up/other", "latest")
    assert missing.status_code == 503
    error = missing.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    assert "not cached" in error["message"] and upstream.host in error["message"]


def test_pushes_to_mirrored_names_are_refused_local_names_work(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage) -> None:
    mirror = make_registry_server(mirror_config(upstream))
    refused = skopeo.copy(busybox_image.oci_ref, tagged(mirror.host, "up/app", "v1"), check=False)
    assert refused.returncode != 0
    r = httpx.post(f"{mirror.url}/v2/up/app/blobs/uploads/")
    assert r.status_code == 405
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert "mirror" in r.json()["errors"][0]["message"]
    for local in ("up/local/app", "team/app"):
        skopeo.copy(busybox_image.oci_ref, tagged(mirror.host, local, "v1"))
        assert skopeo.digest(tagged(mirror.host, local, "v1")) == busybox_image.manifest_digest


def test_upstream_serving_wrong_bytes_leaves_nothing_cached(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage, tmp_path: Path) -> None:
    push_upstream(skopeo, upstream, busybox_image, "app")
    layer = busybox_image.layer_digests[0]
    stored = tmp_path / "upstream-root/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: Distribution serves them as they are
    stored.write_bytes(bytes(data))
    mirror = make_registry_server(mirror_config(upstream))
    got = b""
    with pytest.raises(httpx.HTTPError), \
            httpx.stream("GET", f"{mirror.url}/v2/up/app/blobs/{layer}", timeout=60) as r:
        for chunk in r.iter_raw():  # cut short of its Content-Length
            got += chunk
    assert len(got) < len(data)
    cached = tmp_path / "mirror-data/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    assert not cached.exists()
    with pytest.raises(httpx.HTTPError):  # the next request tries upstream again: cut again
        httpx.get(f"{mirror.url}/v2/up/app/blobs/{layer}", timeout=60)
    assert not cached.exists()
    assert not list((tmp_path / "mirror-data/docker/registry/v2").glob("pyreg-mirror/fills/*/*"))
    assert "sent wrong content for blob" in mirror.log()


def test_token_auth_upstream_pyreg(make_registry_server: Any, signing_key: SigningKey,
                                   htpasswd_users: Path, skopeo: Skopeo,
                                   busybox_image: TestImage, tmp_path: Path) -> None:
    """Upstream: pyreg with its own token server (Docker Hub's flow); the mirror logs in as bob."""
    upstream = make_registry_server({
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "token-upstream")}},
        "auth": {"token": {"service": "upstream", "issuer": "upstream",
                           "signingkey": str(signing_key.key), "certificate": str(signing_key.cert)},
                 "htpasswd": {"path": str(htpasswd_users)}},
        "access": [{"repository": "team/*", "users": ["alice"], "actions": ["pull", "push"]},
                   {"repository": "team/*", "users": ["bob"], "actions": ["pull"]}]})
    skopeo.copy(busybox_image.oci_ref, tagged(upstream.host, "team/app", "v1"),
                "--dest-creds", "alice:alice-pw")
    mirror = make_registry_server({"mirror": {"upstreams": [
        {"url": upstream.url, "namespace": "corp/*", "remoteprefix": "team",
         "username": "bob", "password": "bob-pw"}]}})
    ref = tagged(mirror.host, "corp/app", "v1")
    assert skopeo.digest(ref) == busybox_image.manifest_digest
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:v1")
    assert pull_all(mirror.url, "corp/app", "v1") == {d: d for d in busybox_image.blob_digests}
    wrong = make_registry_server({"mirror": {"upstreams": [
        {"url": upstream.url, "namespace": "*", "username": "bob", "password": "nope"}]}})
    r = get_manifest(wrong.url, "team/app", "v1")
    assert r.status_code == 502
    assert "refused" in r.json()["errors"][0]["message"]


def test_podman_and_pyreg_pull_through_the_mirror_at_its_root(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo, podman: Any,
        client_env: Any, five_layer_image: TestImage) -> None:
    """Docker's ``registry-mirrors`` style: Distribution's own ``proxy:`` keys, names at the root."""
    push_upstream(skopeo, upstream, five_layer_image, "team/five")
    mirror = make_registry_server({"proxy": {"remoteurl": upstream.url, "username": USER,
                                             "password": PASSWORD}})
    pulled = json.loads(client_env.run("pull", f"{mirror.host}/team/five:v1", "--json").stdout)
    assert pulled["digest"] == five_layer_image.manifest_digest
    podman.pull(f"docker://{mirror.host}/team/five:v1")
    assert podman.image_inspect(f"{mirror.host}/team/five:v1")["Digest"] == five_layer_image.manifest_digest
    for digest in five_layer_image.blob_digests:
        assert upstream.blob_gets(digest, expect=1) == 1, digest


def test_expiry_removes_content_not_pulled_within_the_ttl(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo, client_env: Any,
        busybox_image: TestImage, tmp_path: Path) -> None:
    import asyncio

    from pyreg.registry.config import load_config
    from pyreg.registry.drivers import make_driver
    from pyreg.registry.mirror.expiry import expire

    push_upstream(skopeo, upstream, busybox_image, "app")
    push_upstream(skopeo, upstream, busybox_image, "listed")
    mirror = make_registry_server(mirror_config(upstream, ttl="2s"))
    pull_all(mirror.url, "up/app", "v1")
    state = tmp_path / "mirror-data/docker/registry/v2/pyreg-mirror/repositories"
    for name in ("up/app", "up/listed"):  # upstream's tag lists, kept by the mirror
        assert httpx.get(f"{mirror.url}/v2/{name}/tags/list").json()["tags"] == ["v1"]
        assert (state / name / "_taglist").exists()
    assert (state / "up/app/_tags/v1").exists()
    config = load_config(mirror.config_path, environ={})
    driver = make_driver(config)
    # within the ttl nothing goes; a pull moves the clock of its manifest
    assert asyncio.run(expire(driver, config, now=time.time())) == []
    stamp = next((tmp_path / "mirror-data/docker/registry/v2/pyreg-mirror").rglob("_pulled/sha256/*"))
    first = float(stamp.read_text())
    time.sleep(0.3)
    pull_all(mirror.url, "up/app", "v1")
    assert float(stamp.read_text()) > first
    time.sleep(2.1)
    result = client_env.run("gc", "--config", str(mirror.config_path), "--grace", "0s", "--settle", "0s")
    assert f"manifest up/app@{busybox_image.manifest_digest}" in result.stdout
    blob_dir = tmp_path / "mirror-data/docker/registry/v2/blobs/sha256"
    for digest in busybox_image.blob_digests:
        assert not (blob_dir / digest[7:9] / digest[7:] / "data").exists(), digest
    # the mirror's state of the expired name goes with it, and a tag list older than the ttl
    # of a name only ever listed
    assert [p.relative_to(state) for p in state.rglob("*") if p.is_file()] == []
    assert pull_all(mirror.url, "up/app", "v1") == {d: d for d in busybox_image.blob_digests}
    assert upstream.blob_gets(busybox_image.layer_digests[0], expect=2) == 2  # fetched again after expiry


def test_mirror_config_forms_and_errors() -> None:
    from pyreg.registry.config import ConfigError, config_to_dict, load_config
    from pyreg.registry.mirror.config import route

    hub = load_config(data={"mirror": {"upstreams": [
        {"url": "https://registry-1.docker.io", "namespace": "hub/*"},
        {"url": "quay.io", "namespace": "quay/*"}], "local": ["hub/ours/*"]}}, environ={})
    assert route(hub.mirror, "hub/alpine") is not None
    assert route(hub.mirror, "hub/alpine").remote == "library/alpine"  # type: ignore[union-attr]
    assert route(hub.mirror, "hub/grafana/grafana").remote == "grafana/grafana"  # type: ignore[union-attr]
    assert route(hub.mirror, "quay/coreos/etcd").remote == "coreos/etcd"  # type: ignore[union-attr]
    assert route(hub.mirror, "quay/etcd").remote == "etcd"  # type: ignore[union-attr]  # no library/ off Hub
    assert route(hub.mirror, "hub/ours/app") is None and route(hub.mirror, "team/app") is None
    # Distribution's proxy keys: one upstream at the root, and the config round-trips to workers
    dist = load_config(data={"proxy": {"remoteurl": "https://registry-1.docker.io", "ttl": "24h"}},
                       environ={"REGISTRY_PROXY_USERNAME": "u", "REGISTRY_PROXY_PASSWORD": "p"})
    (only,) = dist.mirror.upstreams
    assert (only.namespace, only.ttl, only.username, only.password) == ("*", 86400.0, "u", "p")
    assert route(dist.mirror, "busybox").remote == "library/busybox"  # type: ignore[union-attr]
    assert load_config(data=config_to_dict(dist), environ={}) == dist
    bad: list[tuple[dict[str, Any], str]] = [
        ({"mirror": {"upstreams": [{"namespace": "hub/*"}]}}, "mirror.upstreams[0].url"),
        ({"mirror": {"upstreams": [{"url": "ftp://x"}]}}, "mirror.upstreams[0].url"),
        ({"mirror": {"upstreams": [{"url": "https://x/some/path"}]}}, "mirror.upstreams[0].url"),
        ({"mirror": {"upstreams": [{"url": "x.io", "namespace": "Hub/*"}]}}, "mirror.upstreams[0].namespace"),
        ({"mirror": {"upstreams": [{"url": "x.io", "ttl": "soon"}]}}, "mirror.upstreams[0].ttl"),
        ({"mirror": {"upstreams": [{"url": "x.io", "password": "p"}]}}, "mirror.upstreams[0].username"),
        ({"mirror": {"upstreams": [{"url": "x.io", "colour": 1}]}}, "mirror.upstreams[0].colour"),
        ({"mirror": {"local": ["a//b"]}}, "mirror.local[0]"),
        ({"proxy": {"username": "u"}}, "proxy.remoteurl"),
    ]
    for data, key in bad:
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(data=data, environ={})


def test_index_stored_as_is_children_and_referrers_on_demand(
        make_registry_server: Any, skopeo: Skopeo, index_image: Any, tmp_path: Path) -> None:
    upstream = make_registry_server(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "plain-up")}}})
    skopeo.copy(index_image.oci_ref, tagged(upstream.host, "lib/multi", "v1"), "--all")
    child = index_image.children[0]
    # an artifact that refers to the first child (OCI 1.1 subject)
    config = b"{}"
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    httpx.post(f"{upstream.url}/v2/lib/multi/blobs/uploads/?digest={config_digest}", content=config,
               headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    artifact = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": child.manifest_digest, "size": len(child.manifest)}}).encode()
    artifact_digest = "sha256:" + hashlib.sha256(artifact).hexdigest()
    httpx.put(f"{upstream.url}/v2/lib/multi/manifests/{artifact_digest}", content=artifact,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}).raise_for_status()

    mirror = make_registry_server({"mirror": {"upstreams": [{"url": upstream.url, "namespace": "m/*"}]}})
    index = get_manifest(mirror.url, "m/lib/multi", "v1")
    assert index.content == index_image.index  # byte for byte: the same digest
    assert index.headers["docker-content-digest"] == index_image.digest
    got = get_manifest(mirror.url, "m/lib/multi", child.manifest_digest)  # a child, on demand
    assert got.status_code == 200 and got.content == child.manifest
    referrers = httpx.get(f"{mirror.url}/v2/m/lib/multi/referrers/{child.manifest_digest}").json()
    assert [m["digest"] for m in referrers["manifests"]] == [artifact_digest]
    assert get_manifest(mirror.url, "m/lib/multi", artifact_digest).content == artifact
    skopeo.copy(tagged(mirror.host, "m/lib/multi", "v1"), f"oci:{tmp_path / 'all'}:v1", "--all")


def test_credentials_from_a_docker_credential_helper(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage, tmp_path: Path) -> None:
    push_upstream(skopeo, upstream, busybox_image, "app")
    bin_dir = tmp_path / "helper-bin"
    bin_dir.mkdir()
    asked = tmp_path / "helper-asked"
    helper = bin_dir / "docker-credential-pyregtest"
    helper.write_text(f"#!/bin/sh\ncat > {asked}\n"
                      f"printf '{{\"Username\": \"{USER}\", \"Secret\": \"{PASSWORD}\"}}'\n")
    helper.chmod(0o755)
    import os

    mirror = make_registry_server(
        {"mirror": {"upstreams": [{"url": upstream.url, "namespace": "up/*",
                                   "credentialhelper": "pyregtest"}]}},
        env={"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
    assert pull_all(mirror.url, "up/app", "v1") == {d: d for d in busybox_image.blob_digests}
    assert asked.read_text() == upstream.host  # asked with the upstream's host, nothing else


def test_upstream_answering_5xx_gets_the_stored_copy_served_stale(
        make_registry_server: Any, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path) -> None:
    """Upstream behind nginx; upstream dies, nginx answers 502: the stored tag is served stale."""
    import subprocess

    from tests.fixtures.peers import free_port, require_tool, stop_process, wait_for_http

    upstream = make_registry_server(
        {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "up-behind-nginx")}}})
    skopeo.copy(busybox_image.oci_ref, tagged(upstream.host, "lib/app", "v1"))
    work = tmp_path / "nginx"
    work.mkdir()
    port = free_port()
    temps = " ".join(f"{kind}_temp_path {work / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(
        f"daemon off; user root; pid {work / 'nginx.pid'}; error_log {work / 'error.log'};\n"
        f"events {{}}\nhttp {{ access_log off; {temps}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass {upstream.url}; "
        "proxy_set_header Host $http_host; } } }\n")
    nginx = subprocess.Popen([require_tool("/usr/sbin/nginx"), "-c", str(work / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/", nginx)
        mirror = make_registry_server({"mirror": {"upstreams": [
            {"url": f"http://127.0.0.1:{port}", "namespace": "m/*", "tagttl": "0s"}]}})
        assert get_manifest(mirror.url, "m/lib/app", "v1").status_code == 200
        upstream.stop()
        assert httpx.head(f"http://127.0.0.1:{port}/v2/lib/app/manifests/v1").status_code == 502
        stale = get_manifest(mirror.url, "m/lib/app", "v1")  # tagttl 0: upstream is asked
        assert stale.status_code == 200
        assert stale.headers["docker-content-digest"] == busybox_image.manifest_digest
        assert stale.headers["warning"].startswith("110 ")
        metrics = httpx.get(f"{mirror.url}/metrics").text
        assert re.search(r'pyreg_mirror_stale_total\{upstream="127\.0\.0\.1:\d+"\} 1\.0', metrics)
        missing = get_manifest(mirror.url, "m/lib/other", "v1")
        assert missing.status_code == 503 and "502" in missing.json()["errors"][0]["message"]
    finally:
        stop_process(nginx)


def test_blob_redirect_to_another_host_gets_no_credentials(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage, tmp_path: Path) -> None:
    """nginx in front of the htpasswd upstream sends blob GETs to a "CDN" on another origin (a
    second nginx server serving the upstream's blob files), logging the Authorization it gets."""
    import subprocess

    from tests.fixtures.peers import free_port, require_tool, stop_process, wait_for_http

    push_upstream(skopeo, upstream, busybox_image, "app")
    work = tmp_path / "cdn"
    work.mkdir()
    front, cdn = free_port(), free_port()
    blobs = tmp_path / "upstream-root/docker/registry/v2/blobs/sha256"
    temps = " ".join(f"{kind}_temp_path {work / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (work / "nginx.conf").write_text(f"""
daemon off; user root; pid {work / 'nginx.pid'}; error_log {work / 'error.log'};
events {{}}
http {{
  {temps}
  log_format seen '$server_port $request auth=[$http_authorization]';
  access_log {work / 'access.log'} seen;
  server {{
    listen 127.0.0.1:{front};
    location ~ ^/v2/.+/blobs/sha256:(?<hex>[0-9a-f]+)$ {{ return 307 http://127.0.0.1:{cdn}/b/$hex; }}
    location / {{ proxy_pass {upstream.url}; proxy_set_header Host $http_host; }}
  }}
  server {{
    listen 127.0.0.1:{cdn};
    location ~ "^/b/(?<pre>[0-9a-f]{{2}})(?<rest>[0-9a-f]+)$" {{ alias {blobs}/$pre/$pre$rest/data; }}
  }}
}}
""")
    nginx = subprocess.Popen([require_tool("/usr/sbin/nginx"), "-c", str(work / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{front}/v2/", nginx)
        mirror = make_registry_server({"mirror": {"upstreams": [
            {"url": f"http://127.0.0.1:{front}", "namespace": "up/*", "username": USER,
             "password": PASSWORD}]}})
        assert pull_all(mirror.url, "up/app", "v1") == {d: d for d in busybox_image.blob_digests}
    finally:
        stop_process(nginx)
    seen = (work / "access.log").read_text().splitlines()
    at_cdn = [line for line in seen if line.startswith(f"{cdn} ")]
    assert len(at_cdn) == len(busybox_image.blob_digests)
    assert all(line.endswith("auth=[-]") for line in at_cdn), at_cdn  # nginx logs none as -
    assert any("/manifests/" in line and "auth=[Basic " in line for line in seen)  # the registry's own


def test_tags_list_of_a_mirrored_name_is_upstreams_cached_and_served_stale(
        upstream: AuthDistribution, make_registry_server: Any, skopeo: Skopeo,
        busybox_image: TestImage) -> None:
    """``tags/list`` of a mirrored name answers upstream's tags (paginated as the local listing
    is), kept for the tag ttl and served stale when upstream is down; ``_catalog`` stays local."""
    for tag in ("v1", "v2", "v3"):
        push_upstream(skopeo, upstream, busybox_image, "app", tag)
    push_upstream(skopeo, upstream, busybox_image, "held")
    mirror = make_registry_server(mirror_config(upstream, tagttl="1s"))
    base = f"{mirror.url}/v2/up/app/tags/list"
    r = httpx.get(base)  # nothing of up/app pulled yet: upstream's list all the same
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "up/app", "tags": ["v1", "v2", "v3"]}
    first = httpx.get(base, params={"n": 2})
    assert first.json()["tags"] == ["v1", "v2"]
    assert first.headers["link"] == '</v2/up/app/tags/list?n=2&last=v2>; rel="next"'
    rest = httpx.get(base, params={"n": 2, "last": "v2"})
    assert rest.json()["tags"] == ["v3"] and "link" not in rest.headers
    assert httpx.get(f"{mirror.url}/v2/up/nothing/tags/list").status_code == 404
    assert get_manifest(mirror.url, "up/held", "v1").status_code == 200  # held here, never listed
    push_upstream(skopeo, upstream, busybox_image, "app", "v4")
    time.sleep(1.1)  # past the tag ttl: listed upstream again
    assert httpx.get(base).json()["tags"] == ["v1", "v2", "v3", "v4"]
    catalog = httpx.get(f"{mirror.url}/v2/_catalog").json()["repositories"]
    assert catalog == ["up/held"]  # what the mirror holds, not upstream's catalog

    upstream.stop()
    time.sleep(1.1)
    stale = httpx.get(base)
    assert stale.status_code == 200
    assert stale.json()["tags"] == ["v1", "v2", "v3", "v4"]
    assert "stale" in stale.headers["warning"]
    held = httpx.get(f"{mirror.url}/v2/up/held/tags/list")  # never fetched: the local list
    assert held.status_code == 200 and held.json()["tags"] == ["v1"]
    assert held.headers["warning"].startswith("110 ")
    metrics = httpx.get(f"{mirror.url}/metrics").text
    assert re.search(r'pyreg_mirror_stale_total\{upstream="127\.0\.0\.1:\d+"\} 2\.0', metrics)


class CuttingUpstream:
    """A tiny registry serving one image (anonymous); while ``cut`` is set it answers the
    layer's GET with its full Content-Length, sends half the body and closes the connection."""

    def __init__(self, layer_size: int = 3 << 20) -> None:
        import os
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.layer = os.urandom(layer_size)
        self.config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
        self.layer_digest = "sha256:" + hashlib.sha256(self.layer).hexdigest()
        self.config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.config_digest, "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.layer_digest, "size": len(self.layer)}]}).encode()
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        self.cut = True
        self.wrong = False  # serve the layer whole, its last byte changed
        self.redirect = False  # answer the layer's GET with a redirect to /cdn/<digest>
        self.layer_gets = 0
        self.gets: list[tuple[str, bool]] = []  # (path, whether it came with httpx's Accept: */*)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                if body:
                    outer.gets.append((path, self.headers.get("Accept") is not None))
                if outer.redirect and path == f"/v2/app/blobs/{outer.layer_digest}":
                    self.send_response(307)
                    self.send_header("Location", f"/cdn/{outer.layer_digest}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                found: tuple[bytes, str] | None = {
                    f"/cdn/{outer.layer_digest}": (outer.layer, "application/octet-stream"),
                    "/v2/": (b"{}", "application/json"),
                    "/v2/app/manifests/v1": (outer.manifest, "application/vnd.oci.image.manifest.v1+json"),
                    f"/v2/app/manifests/{outer.manifest_digest}":
                        (outer.manifest, "application/vnd.oci.image.manifest.v1+json"),
                    f"/v2/app/blobs/{outer.config_digest}": (outer.config, "application/octet-stream"),
                    f"/v2/app/blobs/{outer.layer_digest}": (outer.layer, "application/octet-stream"),
                }.get(path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, media_type = found
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
                self.end_headers()
                if not body:
                    return
                if data is outer.layer:
                    outer.layer_gets += 1
                    if outer.cut:
                        self.wfile.write(data[:len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if outer.wrong:
                        data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.answer(True)

            def do_HEAD(self) -> None:
                self.answer(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CuttingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def wait_for_file(path: Path, timeout: float = 30.0) -> None:
    """A fill publishes after its clients have the last byte: wait for that (not timed)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_fill_streams_the_whole_blob_before_its_fsync_but_a_wrong_one_never_whole(
        tmp_path: Path) -> None:
    """In the leader's worker a client gets the last chunk once the digest is verified, without
    waiting for the staging file's fsync and the publish; bytes that hash wrong never end whole."""
    import asyncio
    import contextlib

    from pyreg.registry.config import UpstreamConfig
    from pyreg.registry.layout import Layout
    from pyreg.registry.mirror.fill import Fill, FillError
    from pyreg.registry.mirror.upstream import Upstream
    from pyreg.storage.digest import Digest
    from pyreg.storage.filesystem import FilesystemDriver, FilesystemWriter

    class HeldFsync(FilesystemDriver):
        """The filesystem driver, whose writers' commit (the fsync) waits until ``release``."""

        release: asyncio.Event

        async def writer(self, path: str, append: bool = False) -> FilesystemWriter:
            writer = await super().writer(path, append)
            commit = writer.commit

            async def held() -> None:
                await self.release.wait()
                await commit()

            writer.commit = held  # type: ignore[method-assign]
            return writer

    async def fetch(up: CuttingUpstream, root: Path) -> tuple[bytes, Fill]:
        driver = HeldFsync(root)
        driver.release = asyncio.Event()
        upstream = Upstream(UpstreamConfig(url=up.url, namespace="m/*"))
        try:
            fill = Fill(Layout(driver, 0), upstream, "app", "m/app", Digest.parse(up.layer_digest))
            fill.start(lambda: None)
            await fill.ready.wait()
            got = b""

            async def collect() -> None:
                nonlocal got
                with contextlib.suppress(FillError):
                    async for chunk in fill.stream():
                        got += chunk

            await asyncio.wait_for(collect(), 60)  # ends while the fsync is still held (no hang)
            assert not fill.published
            driver.release.set()
            assert fill.task is not None
            await fill.task
            return got, fill
        finally:
            upstream.close()

    with CuttingUpstream() as up:
        up.cut = False
        got, fill = asyncio.run(fetch(up, tmp_path / "good"))
        assert got == up.layer and fill.published
        up.wrong = True
        got, fill = asyncio.run(fetch(up, tmp_path / "wrong"))
        assert got == up.layer[:-1] and not fill.published  # all but the (wrong) last byte
        assert fill.error is not None and "wrong content" in fill.error


def test_upstream_that_cuts_a_blob_short_leaves_nothing_cached_and_the_next_pull_is_whole(
        make_registry_server: Any, tmp_path: Path) -> None:
    with CuttingUpstream() as up:
        mirror = make_registry_server({"mirror": {"upstreams": [{"url": up.url, "namespace": "m/*"}]}})
        got = b""
        with pytest.raises(httpx.HTTPError), \
                httpx.stream("GET", f"{mirror.url}/v2/m/app/blobs/{up.layer_digest}", timeout=60) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(len(up.layer))
            for chunk in r.iter_raw():  # ends short of its Content-Length: never a whole wrong blob
                got += chunk
        assert len(got) < len(up.layer) and up.layer.startswith(got)
        assert up.layer_gets == 1
        data = tmp_path / "mirror-data/docker/registry/v2"
        hex_ = up.layer_digest[7:]
        assert not (data / "blobs/sha256" / hex_[:2] / hex_).exists()  # nothing visible
        assert not (data / "repositories/m/app/_layers/sha256" / hex_).exists()
        assert not (data / "pyreg-mirror/fills/sha256" / hex_).exists()  # no staging left
        metrics = httpx.get(f"{mirror.url}/metrics").text
        assert re.search(r'pyreg_mirror_upstream_errors_total\{upstream="127\.0\.0\.1:\d+"\} [1-9]', metrics)

        up.cut = False  # upstream recovers: the next pull fetches the blob whole
        assert pull_all(mirror.url, "m/app", "v1") == {up.config_digest: up.config_digest,
                                                       up.layer_digest: up.layer_digest}
        assert up.layer_gets == 2
        cached = data / "blobs/sha256" / hex_[:2] / hex_ / "data"
        wait_for_file(cached)  # published after the client's last byte: the fsync follows it
        assert cached.read_bytes() == up.layer
        assert pull_all(mirror.url, "m/app", "v1")[up.layer_digest] == up.layer_digest
        assert up.layer_gets == 2  # from the cache now
        metrics = httpx.get(f"{mirror.url}/metrics").text

        def counter(name: str, labels: str) -> float:
            found = re.search(rf'{name}\{{{labels}upstream="127\.0\.0\.1:\d+"\}} ([0-9.e+]+)', metrics)
            assert found, (name, labels)
            return float(found.group(1))

        # per-upstream counters: a blob miss for each fetch (the cut one, the whole one, the
        # config), hits for the second pull, every upstream byte counted
        assert counter("pyreg_mirror_misses_total", 'kind="blob",') == 3
        assert counter("pyreg_mirror_hits_total", 'kind="blob",') == 2
        assert counter("pyreg_mirror_misses_total", 'kind="manifest",') == 1
        assert counter("pyreg_mirror_hits_total", 'kind="manifest",') == 1
        assert counter("pyreg_mirror_upstream_bytes_total", "") == (
            len(up.layer) // 2 + len(up.layer) + len(up.config) + len(up.manifest))
        assert counter("pyreg_mirror_upstream_errors_total", "") == 1


def test_anonymous_plain_http_upstream_blobs_over_a_bare_socket_and_a_redirect_falls_back(
        make_registry_server: Any, tmp_path: Path) -> None:
    """An http:// upstream without credentials: blob GETs go over the bare socket (no httpx, so
    none of its default headers); a blob answered with a redirect is fetched by the httpx path,
    which follows it, and later blob GETs go straight to httpx. Bytes are verified either way."""
    with CuttingUpstream() as up:
        up.cut, up.redirect = False, True
        mirror = make_registry_server({"mirror": {"upstreams": [{"url": up.url, "namespace": "m/*"}]}})
        assert pull_all(mirror.url, "m/app", "v1") == {up.config_digest: up.config_digest,
                                                       up.layer_digest: up.layer_digest}
        blob_gets = [(path, httpx_headers) for path, httpx_headers in up.gets if "/blobs/" in path]
        layer = f"/v2/app/blobs/{up.layer_digest}"
        assert blob_gets == [(f"/v2/app/blobs/{up.config_digest}", False),  # the bare socket
                             (layer, False), (layer, True)]  # redirected: httpx, again
        assert up.gets[-1] == (f"/cdn/{up.layer_digest}", True) and up.layer_gets == 1
        hex_ = up.layer_digest[7:]
        wait_for_file(tmp_path / "mirror-data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data")


def test_wrong_bytes_from_a_plain_upstream_never_reach_a_client_whole(
        make_registry_server: Any, tmp_path: Path) -> None:
    """The bare-socket GET, the staging file written by the upstream thread and the answer sent
    from it with sendfile: a blob hashing wrong still ends short of its Content-Length."""
    with CuttingUpstream() as up:
        up.cut, up.wrong = False, True
        mirror = make_registry_server({"mirror": {"upstreams": [{"url": up.url, "namespace": "m/*"}]}})
        got = b""
        with pytest.raises(httpx.HTTPError), \
                httpx.stream("GET", f"{mirror.url}/v2/m/app/blobs/{up.layer_digest}", timeout=60) as r:
            assert r.headers["content-length"] == str(len(up.layer))
            for chunk in r.iter_raw():
                got += chunk
        assert got == up.layer[:-1]  # everything but the (wrong) last byte
        assert not list((tmp_path / "mirror-data/docker/registry/v2").glob("pyreg-mirror/fills/*/*"))
        assert not list((tmp_path / "mirror-data/docker/registry/v2").glob("blobs/sha256/*/*"))
        up.wrong = False
        assert pull_all(mirror.url, "m/app", "v1")[up.layer_digest] == up.layer_digest


def test_a_fills_page_cache_is_kept_for_the_next_pull(
        make_registry_server: Any, tmp_path: Path) -> None:
    """The staging file's pages stay in the page cache once sent (fincore, from util-linux,
    counts what is resident): a 48 MiB blob just fetched is mostly cached for its next pull
    (dropping them made every later pull read the disk), and whole on disk."""
    import subprocess

    with CuttingUpstream(48 << 20) as up:
        up.cut = False
        mirror = make_registry_server({"mirror": {"upstreams": [{"url": up.url, "namespace": "m/*"}]}})
        assert pull_all(mirror.url, "m/app", "v1")[up.layer_digest] == up.layer_digest
        hex_ = up.layer_digest[7:]
        cached = tmp_path / "mirror-data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"
        wait_for_file(cached)
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(cached)],
                             capture_output=True, text=True, check=True).stdout
        assert int(out.strip()) >= len(up.layer) // 2
        assert cached.read_bytes() == up.layer
