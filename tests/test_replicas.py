"""Stateless replicas: two ``pyreg serve`` processes on one bucket behind real nginx act as one.

The topology is deploy/compose.yaml's, started as plain processes (no container engine here):
a moto_server for the ``s3`` service, the replicas with deploy/config.yml and the compose
environment (endpoint, bucket and ports pointed at this test's processes), and Debian nginx with
deploy/nginx.conf rendered from the nginx service's template variables.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.peers import Podman, Skopeo, tagged
from tests.fixtures.registry import image_manifest, sha256
from tests.fixtures.s3 import (
    ACCESS_KEY,
    DEPLOY,
    SECRET_KEY,
    MotoServer,
    free_port,
    nginx_config,
    start_nginx,
    start_pyreg,
    stop_process,
)
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers

MiB = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Cluster:
    """nginx in front of two replicas; ``url`` is nginx, ``replicas`` the direct URLs."""

    url: str
    host: str
    replicas: list[str]
    procs: list[subprocess.Popen[bytes]]
    nginx: subprocess.Popen[bytes]
    workdir: Path
    upstream: dict[str, int] = field(default_factory=dict)  # "127.0.0.1:port" -> replica index

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def which(self, response: httpx.Response) -> int:
        """The replica that answered through nginx (the last one tried, if it retried)."""
        addr = response.headers["X-Pyreg-Upstream"].split(",")[-1].strip()
        return self.upstream[addr]

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.workdir)):
            if name.endswith(".log"):
                out.append(f"--- {name}\n" + (self.workdir / name).read_text(errors="replace")[-4000:])
        return "\n".join(out)


def compose() -> dict[str, Any]:
    with open(os.path.join(DEPLOY, "compose.yaml"), encoding="utf-8") as f:
        return dict(yaml.safe_load(f))


def start_cluster(workdir: Path, storage_env: dict[str, str], nginx_vars: dict[str, str] | None = None,
                  extra_env: dict[str, str] | None = None) -> Cluster:
    """The deploy/compose.yaml cluster: its two pyreg services and nginx, with their environment."""
    services = compose()["services"]
    envs = []
    for name in ("pyreg1", "pyreg2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        env.update(storage_env)
        env["PYREG_PROXY_TRUSTEDPROXIES"] = "127.0.0.1/32"  # compose's nginx address: here loopback
        env.pop("PYREG_REDIS_ADDR", None)  # compose's redis service: tests/test_redis.py runs a real one
        env.update(extra_env or {})
        envs.append((name, env))
    values = {k: str(v) for k, v in services["nginx"]["environment"].items()}
    values.update(nginx_vars or {})
    return start_behind_nginx(workdir, os.path.join(DEPLOY, "config.yml"), envs, values)


def start_behind_nginx(workdir: Path, config: str, envs: list[tuple[str, dict[str, str]]],
                       nginx_vars: dict[str, str]) -> Cluster:
    """Two pyreg replicas (a log name and an environment each) on free ports behind nginx."""
    procs: list[subprocess.Popen[bytes]] = []
    replicas, upstream = [], {}
    try:
        for i, (name, env) in enumerate(envs):
            port = free_port()
            procs.append(start_pyreg(config, port, env, str(workdir / f"{name}.log")))
            replicas.append(f"http://127.0.0.1:{port}")
            upstream[f"127.0.0.1:{port}"] = i
        nginx_port = free_port()
        values = {**nginx_vars, "PYREG1_ADDR": replicas[0][7:], "PYREG2_ADDR": replicas[1][7:],
                  "NGINX_LISTEN": f"127.0.0.1:{nginx_port}"}
        nginx = start_nginx(nginx_config(str(workdir / "nginx"), values), nginx_port)
    except BaseException:
        for p in procs:
            stop_process(p)
        raise
    host = f"127.0.0.1:{nginx_port}"
    return Cluster(f"http://{host}", host, replicas, procs, nginx, workdir, upstream)


def stop_cluster(cluster: Cluster) -> None:
    stop_process(cluster.nginx)
    for p in cluster.procs:
        stop_process(p)


@pytest.fixture
def cluster(moto_server: MotoServer, s3_bucket: str, tmp_path: Path) -> Iterator[Cluster]:
    env = {
        "PYREG_STORAGE_S3_BUCKET": s3_bucket,
        "PYREG_STORAGE_S3_REGIONENDPOINT": moto_server.endpoint,
        "PYREG_STORAGE_S3_ACCESSKEY": ACCESS_KEY,
        "PYREG_STORAGE_S3_SECRETKEY": SECRET_KEY,
        "PYREG_STORAGE_S3_CHUNKSIZE": str(5 * MiB),
    }
    c = start_cluster(tmp_path, env, {"PYREG_BLOB_ROOT": str(tmp_path / "unused")})
    try:
        yield c
    finally:
        stop_cluster(c)


def blob_bytes(size: int, seed: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(f"{seed}/{i}".encode()).digest() * 64
        i += 1
    return bytes(out[:size])


def patch(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    r = client.patch(location, content=data, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{start}-{start + len(data) - 1}", "Content-Length": str(len(data))})
    assert r.status_code == 202, (r.status_code, r.text)
    assert r.headers["Range"] == f"0-{start + len(data) - 1}"
    return r


def test_chunked_push_across_replicas(cluster: Cluster) -> None:
    data = blob_bytes(13 * MiB + 4321, seed=1)
    digest = sha256(data)
    chunks = [data[:6 * MiB], data[6 * MiB:9 * MiB], data[9 * MiB:9 * MiB + 100], data[9 * MiB + 100:]]
    served_by = []
    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200  # the probe compose and k8s use
        r = c.post("/v2/team/app/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        # deploy/config.yml trusts X-Forwarded-*: Locations are absolute URLs of nginx itself.
        assert location.startswith(f"{cluster.url}/v2/team/app/blobs/uploads/"), location
        start = 0
        for chunk in chunks:
            r = patch(c, location, chunk, start)
            served_by.append(cluster.which(r))
            location = r.headers["Location"]
            start += len(chunk)
        assert set(served_by) == {0, 1}, served_by  # round-robin: the chunks went to both
        r = c.put(location, params={"digest": digest})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        for base in (cluster.url, *cluster.replicas):
            got = httpx.get(f"{base}/v2/team/app/blobs/{digest}", timeout=60)
            assert got.status_code == 200
            assert sha256(got.content) == digest


def test_manifest_and_tag_seen_by_the_other_replica_at_once(cluster: Cluster) -> None:
    a, b = (httpx.Client(base_url=u, timeout=30) for u in cluster.replicas)
    with a, b:
        config, layer = b'{"architecture":"amd64","os":"linux"}', blob_bytes(4096, seed=2)
        for blob in (config, layer):
            assert a.post("/v2/shared/img/blobs/uploads/", params={"digest": sha256(blob)},
                          content=blob).status_code == 201
        for round_, (writer, reader) in enumerate([(a, b), (b, a), (a, b)]):
            manifest = image_manifest(config, [layer], annotations={"round": str(round_)})
            r = writer.put("/v2/shared/img/manifests/v1", content=manifest,
                           headers={"Content-Type": OCI_MANIFEST})
            assert r.status_code == 201, r.text
            # The other replica serves the new tag (and the overwritten one) immediately.
            got = reader.get("/v2/shared/img/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert got.status_code == 200
            assert got.content == manifest
            assert got.headers["Docker-Content-Digest"] == sha256(manifest)
            assert "v1" in reader.get("/v2/shared/img/tags/list").json()["tags"]
            assert reader.get(f"/v2/shared/img/blobs/{sha256(layer)}").content == layer
    # Through nginx: consecutive requests hit both replicas and agree.
    with httpx.Client(base_url=cluster.url, timeout=30) as c:
        answers = [c.get("/v2/shared/img/manifests/v1", headers={"Accept": OCI_MANIFEST}) for _ in range(4)]
        assert {cluster.which(r) for r in answers} == {0, 1}
        assert len({r.content for r in answers}) == 1


def test_replica_killed_between_chunks_loses_nothing(cluster: Cluster) -> None:
    data = blob_bytes(7 * MiB + 99, seed=3)
    digest = sha256(data)
    with httpx.Client(base_url=cluster.url, timeout=60) as c:
        r = c.post("/v2/team/crash/blobs/uploads/")
        assert r.status_code == 202
        first = patch(c, r.headers["Location"], data[:3 * MiB + 7], 0)
        victim = cluster.which(first)
        cluster.kill(victim)  # it held the session's hasher in memory: gone with it
        location, start = first.headers["Location"], 3 * MiB + 7
        status = c.get(location)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{start - 1}"
        second = patch(c, location, data[start:], start)
        assert cluster.which(second) != victim
        r = c.put(second.headers["Location"], params={"digest": digest})
        assert r.status_code == 201, r.text + cluster.logs()
        assert cluster.which(r) != victim
        got = c.get(f"/v2/team/crash/blobs/{digest}")
        assert got.status_code == 200 and sha256(got.content) == digest


def test_skopeo_copy_through_nginx_both_ways(cluster: Cluster, skopeo: Skopeo, five_layer_image: TestImage,
                                             tmp_path: Path) -> None:
    ref = tagged(cluster.host, "through/nginx", "five")
    skopeo.copy(five_layer_image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == five_layer_image.manifest
    out = tmp_path / "pulled"
    skopeo.copy(ref, f"oci:{out}:five")
    pulled = read_layout(out, "five")
    assert pulled.manifest_digest == five_layer_image.manifest_digest
    for d in five_layer_image.layer_digests:
        assert pulled.blob(d) == five_layer_image.blob(d)
    # Each replica on its own serves all of it too.
    for base in cluster.replicas:
        r = httpx.get(f"{base}/v2/through/nginx/manifests/five", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == five_layer_image.manifest


def test_podman_through_nginx(cluster: Cluster, podman: Podman, busybox_image: TestImage) -> None:
    local = podman.pull(busybox_image.oci_ref)
    dest = f"{cluster.host}/through/podman:1"
    podman.push(local, f"docker://{dest}")
    podman.rmi(local)
    assert podman.pull(f"docker://{dest}") == busybox_image.config_digest.split(":", 1)[1]


def test_filesystem_replicas_hand_blob_bodies_to_nginx(tmp_path: Path) -> None:
    """proxy.xaccelredirect: pyreg answers with X-Accel-Redirect, nginx serves the file."""
    root = tmp_path / "shared-data"
    env = {"PYREG_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
           "PYREG_PROXY_XACCELREDIRECT_ENABLED": "true"}
    # deploy/config.yml is for S3: these replicas get a filesystem config of their own.
    config = tmp_path / "fs-config.yml"
    config.write_text(yaml.safe_dump({"addr": "127.0.0.1:5000", "storage": {"filesystem": {
        "rootdirectory": str(root)}, "delete": {"enabled": True}}, "proxy": {"trustforwarded": True}}))
    cluster = start_fs_cluster(tmp_path, config, env, root)
    try:
        data = blob_bytes(3 * MiB + 5, seed=4)
        digest = sha256(data)
        with httpx.Client(base_url=cluster.url, timeout=60) as c:
            r = c.post("/v2/fs/app/blobs/uploads/", params={"digest": digest}, content=data)
            assert r.status_code == 201, r.text
            direct = httpx.get(f"{cluster.replicas[0]}/v2/fs/app/blobs/{digest}")
            assert direct.headers.get("X-Accel-Redirect", "").startswith("/_blobs/docker/registry/v2/blobs/")
            assert direct.content == b""  # the body is nginx's job
            got = c.get(f"/v2/fs/app/blobs/{digest}")
            assert got.status_code == 200
            assert sha256(got.content) == digest
            assert got.headers["Docker-Content-Digest"] == digest
            part = c.get(f"/v2/fs/app/blobs/{digest}", headers={"Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == data[100:200]
            head = c.head(f"/v2/fs/app/blobs/{digest}")
            assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
            # The internal location is not reachable from outside.
            assert c.get("/_blobs/docker/registry/v2/blobs/").status_code == 404
    finally:
        stop_cluster(cluster)


def start_fs_cluster(workdir: Path, config: Path, env: dict[str, str], root: Path) -> Cluster:
    return start_behind_nginx(workdir, str(config), [(f"fs{i}", env) for i in range(2)],
                              {"PYREG_BLOB_ROOT": str(root)})


def test_redirect_through_nginx(moto_server: MotoServer, s3_bucket: str, tmp_path: Path) -> None:
    """storage.s3.redirect: GET answers 307 to a presigned URL the client follows; HEAD never."""
    env = {"PYREG_STORAGE_S3_BUCKET": s3_bucket, "PYREG_STORAGE_S3_REGIONENDPOINT": moto_server.endpoint,
           "PYREG_STORAGE_S3_REDIRECT_ENABLED": "true"}
    cluster = start_cluster(tmp_path, env, {"PYREG_BLOB_ROOT": str(tmp_path)})
    try:
        data = blob_bytes(MiB, seed=5)
        digest = sha256(data)
        with httpx.Client(base_url=cluster.url, timeout=60) as c:
            r = c.post("/v2/r/app/blobs/uploads/", params={"digest": digest}, content=data)
            assert r.status_code == 201
            r = c.get(f"/v2/r/app/blobs/{digest}")
            assert r.status_code == 307
            assert r.headers["Location"].startswith(moto_server.endpoint + "/")
            assert httpx.get(r.headers["Location"]).content == data
            head = c.head(f"/v2/r/app/blobs/{digest}")
            assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
            followed = c.get(f"/v2/r/app/blobs/{digest}", follow_redirects=True)
            assert followed.content == data
    finally:
        stop_cluster(cluster)


@pytest.mark.parametrize("trust", [True, False])
async def test_forwarded_headers_build_locations(tmp_path: Path, trust: bool) -> None:
    """proxy.trustforwarded: Location follows X-Forwarded-Proto/Host; otherwise it is relative."""
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config

    config = load_config(data={"storage": {"filesystem": {"rootdirectory": str(tmp_path)}},
                               "proxy": {"trustforwarded": trust}}, environ={})
    transport = httpx.ASGITransport(app=create_app(config))
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example.com"}
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:5000") as c:
        r = await c.post("/v2/fwd/app/blobs/uploads/", headers=headers)
        assert r.status_code == 202
        location = r.headers["Location"]
        if trust:
            assert location.startswith("https://registry.example.com/v2/fwd/app/blobs/uploads/")
        else:
            assert location.startswith("/v2/fwd/app/blobs/uploads/")
