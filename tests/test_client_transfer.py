"""The pyreg client against real registries (pyreg and Distribution) with skopeo as the witness."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.client import ClientEnv, FaultProxy
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage, TestIndex, read_layout

pytestmark = pytest.mark.peers


def store_index(env: ClientEnv) -> list[dict[str, Any]]:
    return list(json.loads((env.store / "index.json").read_text())["manifests"])


def test_pull_what_skopeo_pushed(any_registry: str, client_env: ClientEnv, skopeo: Skopeo,
                                 five_layer_image: TestImage, tmp_path: Path) -> None:
    skopeo.copy(five_layer_image.oci_ref, tagged(any_registry, "team/five", "v1"))
    name = f"{any_registry}/team/five:v1"
    out = json.loads(client_env.run("pull", name, "--json").stdout)
    assert out["digest"] == five_layer_image.manifest_digest
    assert {b["status"] for b in out["blobs"]} == {"pulled"}
    (entry,) = store_index(client_env)
    assert entry["digest"] == five_layer_image.manifest_digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == name
    # layers extracted, keyed by chain ID, whiteouts in overlay form
    layers = sorted((client_env.store / "layers" / "sha256").iterdir())
    assert len(layers) == 5
    assert any((layer / "diff" / "data" / "opaque" / "new").exists() for layer in layers)
    # the store is an OCI layout that skopeo reads: same manifest digest out again
    skopeo.copy(f"oci:{client_env.store}:{name}", f"oci:{tmp_path / 'out'}:x")
    assert_same(read_layout(tmp_path / "out", "x"), five_layer_image)
    # pulling again transfers nothing
    again = json.loads(client_env.run("pull", name, "--json").stdout)
    assert {b["status"] for b in again["blobs"]} == {"exists"}
    listing = json.loads(client_env.run("images", "--json").stdout)
    assert [(r["repository"], r["tag"]) for r in listing] == [(f"{any_registry}/team/five", "v1")]


def assert_same(pulled: TestImage, expected: TestImage) -> None:
    assert pulled.manifest_digest == expected.manifest_digest
    assert pulled.config == expected.config
    for digest in expected.layer_digests:
        assert pulled.blob(digest) == expected.blob(digest)


@pytest.mark.parametrize("chunk", [None, "300k"])
def test_push_then_skopeo_pulls(any_registry: str, client_env: ClientEnv, skopeo: Skopeo,
                                five_layer_image: TestImage, tmp_path: Path, chunk: str | None) -> None:
    dest = f"{any_registry}/pushed/five:1"
    args = ["push", str(five_layer_image.layout), dest, "--json"]
    if chunk:
        args += ["--chunk-size", chunk]
    out = json.loads(client_env.run(*args).stdout)
    assert out["digest"] == five_layer_image.manifest_digest
    inspected = skopeo.inspect(tagged(any_registry, "pushed/five", "1"))
    assert inspected["Digest"] == five_layer_image.manifest_digest
    assert inspected["Layers"] == five_layer_image.layer_digests
    skopeo.copy(tagged(any_registry, "pushed/five", "1"), f"oci:{tmp_path / 'back'}:1")
    assert_same(read_layout(tmp_path / "back", "1"), five_layer_image)
    # a second push skips every blob (HEAD)
    again = json.loads(client_env.run(*args).stdout)
    assert {b["status"] for b in again["blobs"]} == {"exists"}


def test_pull_push_mount_copy_tags_catalog_delete(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                                  busybox_image: TestImage) -> None:
    host = pyreg_factory().host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "library/busybox", "1"))
    # the default registry: 'busybox' means <default>/library/busybox
    client_env.env["PYREG_REGISTRY"] = host
    client_env.run("pull", "busybox:1")
    # push the local image to another repository of the same registry: blobs are mounted
    out = json.loads(client_env.run("push", "busybox:1", "team/bb:2", "--json").stdout)
    assert {b["status"] for b in out["blobs"]} == {"mounted"}
    assert skopeo.digest(tagged(host, "team/bb", "2")) == busybox_image.manifest_digest
    copied = json.loads(client_env.run("copy", "team/bb:2", "team/copy:3", "--json").stdout)
    assert copied["digest"] == busybox_image.manifest_digest
    for tag in ("a", "b", "c", "d", "e"):
        client_env.run("copy", "team/bb:2", f"team/bb:{tag}", "-q")
    tags = json.loads(client_env.run("tags", "team/bb", "--page-size", "2", "--json").stdout)["tags"]
    assert sorted(tags) == ["2", "a", "b", "c", "d", "e"]
    repos = json.loads(client_env.run("catalog", "--json").stdout)["repositories"]
    assert {"library/busybox", "team/bb", "team/copy"} <= set(repos)
    client_env.run("delete", "team/copy:3")
    assert skopeo.run("inspect", "--tls-verify=false", tagged(host, "team/copy", "3"), check=False).returncode
    remote = json.loads(client_env.run("inspect", "--remote", "team/bb:2").stdout)
    assert remote["Digest"] == busybox_image.manifest_digest and "rootfs" in remote["Config"]
    local = json.loads(client_env.run("inspect", "busybox:1").stdout)
    assert local["Source"] == "local" and local["Config"] == remote["Config"]
    # tag, rmi: the shared blobs stay while one name uses them
    client_env.run("tag", "busybox:1", "other.example/x:9")
    client_env.run("rmi", "busybox:1")
    names = [e["annotations"]["org.opencontainers.image.ref.name"] for e in store_index(client_env)]
    assert names == ["other.example/x:9"]
    assert len(list((client_env.store / "blobs" / "sha256").iterdir())) == 3
    client_env.run("rmi", "other.example/x:9")
    assert list((client_env.store / "blobs" / "sha256").iterdir()) == []
    assert list((client_env.store / "layers" / "sha256").iterdir()) == []


def test_errors_are_one_line(pyreg_factory: Any, client_env: ClientEnv) -> None:
    host = pyreg_factory().host
    for args, needle in [
        (["pull", f"{host}/no/such:image"], "MANIFEST_UNKNOWN"),
        (["pull", "Bad:Ref"], "must be lowercase"),
        (["rmi", "never/pulled"], "image not known locally"),
        (["pull", "127.0.0.1:1/x"], "cannot reach registry"),
        (["push", "/nonexistent/dir", f"{host}/x:1"], "no such file or directory"),
        (["push", "never/pulled", f"{host}/x:1"], "image not known locally"),
    ]:
        proc = client_env.run(*args, check=False, timeout=120)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pyreg: ") and needle in lines[0], (args, proc.stderr)


def test_multi_arch_platform_selection(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                       index_image: TestIndex) -> None:
    host = pyreg_factory().host
    skopeo.copy(index_image.oci_ref, tagged(host, "multi", "1"), "--all")
    native, foreign = index_image.children
    out = json.loads(client_env.run("pull", f"{host}/multi:1", "--json").stdout)
    assert out["digest"] == native.manifest_digest
    foreign_arch = json.loads(foreign.config)["architecture"]
    out = json.loads(client_env.run("pull", f"{host}/multi:1", "--platform", f"linux/{foreign_arch}",
                                    "--json").stdout)
    assert out["digest"] == foreign.manifest_digest and out["platform"] == f"linux/{foreign_arch}"
    proc = client_env.run("pull", f"{host}/multi:1", "--platform", "linux/s390x", check=False)
    assert proc.returncode == 1 and "no image for platform linux/s390x" in proc.stderr
    # copy keeps the whole index, or one platform
    client_env.run("copy", f"{host}/multi:1", f"{host}/multi-copy:all", "-q")
    assert skopeo.inspect_raw(tagged(host, "multi-copy", "all")) == index_image.index
    client_env.run("copy", f"{host}/multi:1", f"{host}/multi-copy:one", "--platform", f"linux/{foreign_arch}")
    assert skopeo.digest(tagged(host, "multi-copy", "one")) == foreign.manifest_digest
    # push of a whole index from an OCI layout (DIR:TAG): children first, then the index, byte for byte
    src = f"{index_image.layout}:{index_image.tag}"
    pushed = client_env.run("push", src, f"{host}/pushed-index:1", "--json")
    assert json.loads(pushed.stdout)["digest"] == index_image.digest
    assert skopeo.inspect_raw(tagged(host, "pushed-index", "1")) == index_image.index


def test_save_load_and_skopeo_reads_the_archive(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                                five_layer_image: TestImage, tmp_path: Path) -> None:
    host = pyreg_factory().host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "five", "1"))
    client_env.run("pull", f"{host}/five:1", "--no-extract")
    archive = tmp_path / "five.tar"
    client_env.run("save", f"{host}/five:1", "-o", str(archive))
    skopeo.copy(f"oci-archive:{archive}:{host}/five:1", f"oci:{tmp_path / 'out'}:x")
    assert_same(read_layout(tmp_path / "out", "x"), five_layer_image)
    client_env.env["PYREG_STORE"] = str(tmp_path / "store2")
    assert "Loaded image: " + f"{host}/five:1" in client_env.run("load", "-i", str(archive)).stdout
    assert store_index(client_env)[0]["digest"] == five_layer_image.manifest_digest
    # pushing an archive directly
    out = json.loads(client_env.run("push", str(archive), f"{host}/from-archive:1", "--json").stdout)
    assert out["digest"] == five_layer_image.manifest_digest


def test_podman_save_tarball_loads_and_pushes(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                              podman: Any, busybox_image: TestImage, tmp_path: Path) -> None:
    host = pyreg_factory().host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "library/busybox", "1"))
    podman.pull(f"{host}/library/busybox:1")
    docker_archive = tmp_path / "podman-docker.tar"
    podman.run("save", "-o", str(docker_archive), f"{host}/library/busybox:1")
    loaded = client_env.run("load", "-i", str(docker_archive), "--json").stdout
    (record,) = json.loads(loaded)
    assert record["name"] == f"{host}/library/busybox:1"
    # the loaded image runs through the same code path as a pulled one: push and compare content
    out = json.loads(client_env.run("push", f"{host}/library/busybox:1", f"{host}/reloaded/bb:1",
                                    "--json").stdout)
    pushed = skopeo.inspect(tagged(host, "reloaded/bb", "1"))
    assert pushed["Digest"] == out["digest"]
    assert isinstance(pushed["Layers"], list) and len(pushed["Layers"]) == 1
    oci_archive = tmp_path / "podman-oci.tar"
    podman.run("save", "--format", "oci-archive", "-o", str(oci_archive), f"{host}/library/busybox:1")
    client_env.env["PYREG_STORE"] = str(tmp_path / "store2")
    client_env.run("load", "-i", str(oci_archive), "--tag", f"{host}/from-oci:1")
    assert store_index(client_env)[0]["annotations"]["org.opencontainers.image.ref.name"] == \
        f"{host}/from-oci:1"


def test_concurrent_overlapping_pulls(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                      busybox_image: TestImage, five_layer_image: TestImage) -> None:
    host = pyreg_factory().host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "bb", "1"))
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "five", "1"))
    procs = [client_env.popen("pull", "-q", f"{host}/{name}:1") for name in ("bb", "five", "bb", "five")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    names = sorted(e["annotations"]["org.opencontainers.image.ref.name"] for e in store_index(client_env))
    assert names == [f"{host}/bb:1", f"{host}/five:1"]
    # the busybox base layer is the same chain ID in both: extracted once, five layers in all
    assert len(list((client_env.store / "layers" / "sha256").iterdir())) == 5
    assert list((client_env.store / "ingest").iterdir()) == []


def _wait_for(predicate: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_interrupted_pull_leaves_nothing_and_resumes(fault_proxy: FaultProxy, distribution_registry: Any,
                                                     client_env: ClientEnv, skopeo: Skopeo,
                                                     five_layer_image: TestImage) -> None:
    skopeo.copy(five_layer_image.oci_ref, tagged(distribution_registry.host, "five", "1"))
    fault_proxy.mode = "stall"
    proc = client_env.popen("pull", "-q", "--parallel", "1", f"{fault_proxy.host}/five:1")
    ingest = client_env.store / "ingest"
    layer_partials = [ingest / f"sha256-{d.split(':')[1]}" for d in five_layer_image.layer_digests]
    _wait_for(lambda: any(p.exists() and p.stat().st_size > 0 for p in layer_partials))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # nothing half-visible: no image, no blob in blobs/, no extracted layer
    assert store_index(client_env) == []
    stored = {p.name for p in (client_env.store / "blobs" / "sha256").iterdir()}
    assert not stored & {d.split(":")[1] for d in five_layer_image.layer_digests}
    assert list((client_env.store / "layers" / "sha256").iterdir()) == []
    partial = [p for p in ingest.iterdir() if p.stat().st_size > 0]
    assert partial
    # the next pull resumes the partial blob with a Range request and verifies it whole
    fault_proxy.mode = "pass"
    fault_proxy.ranges.clear()
    client_env.run("pull", "-q", f"{fault_proxy.host}/five:1")
    resumed = [r for r in fault_proxy.ranges if r and r.startswith("bytes=") and r != "bytes=0-"]
    assert resumed, fault_proxy.ranges
    assert store_index(client_env)[0]["digest"] == five_layer_image.manifest_digest
    for digest in five_layer_image.layer_digests:
        path = client_env.store / "blobs" / "sha256" / digest.split(":")[1]
        assert path.read_bytes() == five_layer_image.blob(digest)


def test_digest_mismatch_keeps_nothing(fault_proxy: FaultProxy, distribution_registry: Any,
                                       client_env: ClientEnv, skopeo: Skopeo,
                                       busybox_image: TestImage) -> None:
    skopeo.copy(busybox_image.oci_ref, tagged(distribution_registry.host, "bb", "1"))
    fault_proxy.mode = "corrupt"
    proc = client_env.run("pull", "-q", f"{fault_proxy.host}/bb:1", check=False)
    assert proc.returncode == 1
    assert "digest mismatch" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert store_index(client_env) == []
    stored = {p.name for p in (client_env.store / "blobs" / "sha256").iterdir()}
    assert not stored & {d.split(":")[1] for d in busybox_image.layer_digests}
    assert list((client_env.store / "ingest").iterdir()) == []
    assert list((client_env.store / "layers" / "sha256").iterdir()) == []


@pytest.fixture(params=["distribution", "pyreg"])
def proxied_registry(request: pytest.FixtureRequest) -> Any:
    """(FaultProxy, upstream host) in front of Distribution or pyreg."""
    if request.param == "distribution":
        upstream = request.getfixturevalue("distribution_registry").host
    else:
        upstream = request.getfixturevalue("pyreg_factory")().host
    proxy = FaultProxy(upstream)
    yield proxy, upstream
    proxy.close()


def test_retries_and_chunked_upload_resume(proxied_registry: Any, client_env: ClientEnv, skopeo: Skopeo,
                                           five_layer_image: TestImage) -> None:
    fault_proxy, upstream = proxied_registry
    host = fault_proxy.host
    # 503s are retried with backoff
    fault_proxy.fail_next = 3
    client_env.run("push", "-q", "--parallel", "1", str(five_layer_image.layout), f"{host}/five:1")
    assert fault_proxy.fail_next == 0
    # a dropped PATCH: the client asks the upload status and goes on from what the registry holds
    fault_proxy.drop_patches = 1
    fault_proxy.requests.clear()
    client_env.run("push", "-q", "--parallel", "1", "--chunk-size", "256k", str(five_layer_image.layout),
                   f"{host}/chunked:1")
    assert fault_proxy.drop_patches == 0
    status_checks = [r for r in fault_proxy.requests if r.startswith("GET") and "/blobs/uploads/" in r]
    assert status_checks, fault_proxy.requests
    pushed = skopeo.digest(tagged(upstream, "chunked", "1"))
    assert pushed == five_layer_image.manifest_digest
    # pulls retry too
    fault_proxy.fail_next = 2
    client_env.run("pull", "-q", f"{host}/chunked:1")


def test_zstd_and_docker_schema2_layers(pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo,
                                        five_layer_image: TestImage) -> None:
    host = pyreg_factory().host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "zstd/five", "z"), "--dest-compress-format", "zstd",
                "--format", "oci")
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "v2s2/five", "d"), "--format", "v2s2")
    for ref in (f"{host}/zstd/five:z", f"{host}/v2s2/five:d"):
        out = json.loads(client_env.run("pull", ref, "--json").stdout)
        assert out["digest"] == skopeo.digest(f"docker://{ref}")
    # same diff IDs, so the zstd and gzip/v2s2 images share every extracted layer
    assert len(list((client_env.store / "layers" / "sha256").iterdir())) == 5
    local = json.loads(client_env.run("inspect", f"{host}/zstd/five:z").stdout)
    assert {layer["mediaType"] for layer in local["Manifest"]["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"}
    # and they push on elsewhere as they are
    out = json.loads(client_env.run("push", f"{host}/v2s2/five:d", f"{host}/v2s2/again:1", "--json").stdout)
    assert out["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert skopeo.digest(tagged(host, "v2s2/again", "1")) == out["digest"]


def test_tls_registry_on_loopback(tmp_path: Path, auth_ca: Any, client_env: ClientEnv,
                                  busybox_image: TestImage) -> None:
    """Plain HTTP is tried first on loopback; a TLS registry there is still found (and used), its
    certificate verified like any other (the CA comes from PYREG_CA_FILE here)."""
    import subprocess
    import sys

    import httpx
    import yaml

    from tests.fixtures.registry import REPO_ROOT, free_port

    issued = auth_ca.issue("server")
    config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
              "tls": {"certificate": str(issued.cert), "key": str(issued.key)},
              "log": {"accesslog": {"disabled": True}}}
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    host = f"127.0.0.1:{free_port()}"
    config_path = str(tmp_path / "config.yml")
    cmd = [sys.executable, "-m", "pyreg", "serve", "--config", config_path, "--addr", host]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"https://{host}/v2/", verify=False, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        _wait_for(up, 60)
        client_env.env["PYREG_CA_FILE"] = str(auth_ca.cert)
        pushed = client_env.run("push", str(busybox_image.layout), f"{host}/tls/bb:1", "--json")
        assert json.loads(pushed.stdout)["digest"] == busybox_image.manifest_digest
        client_env.run("pull", "-q", f"{host}/tls/bb:1")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.root
def test_pulled_image_runs_and_inspect_asks_the_runtime(pyreg_factory: Any, client_env: ClientEnv,
                                                        skopeo: Skopeo, five_layer_image: TestImage,
                                                        tmp_path: Path) -> None:
    """The store's chain-ID layers are what `pyreg run` stacks; `pyreg inspect NAME` of a container
    goes through the runtime hook."""
    from tests.fixtures.runtime import require_root_runtime

    require_root_runtime()
    host = pyreg_factory().host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "five", "1"))
    client_env.env["PYREG_RUN_ROOT"] = str(tmp_path / "run")
    client_env.run("pull", "-q", f"{host}/five:1")
    script = "cat /data/a.txt; ls /data; ls /data/opaque"
    out = client_env.run("run", "--rm", f"{host}/five:1", "sh", "-c", script)
    assert out.stdout.split() == ["A", "a.txt", "keep", "opaque", "new"]
    client_env.run("run", "-d", "--name", "inspected", f"{host}/five:1", "sleep", "60")
    layers = client_env.store / "layers" / "sha256"
    try:
        state = json.loads(client_env.run("inspect", "inspected").stdout)
        assert state["State"]["Running"] is True and state["Path"] == "sleep"
        # the container's image cannot be removed from under it...
        proc = client_env.run("rmi", f"{host}/five:1", check=False)
        assert proc.returncode == 1 and "used by container inspected" in proc.stderr
        # ...forced, the name goes but the layers (its overlay lower dirs) stay, prune too
        client_env.run("rmi", "-f", f"{host}/five:1")
        assert store_index(client_env) == []
        client_env.run("prune")
        assert len(list(layers.iterdir())) == 5
    finally:
        client_env.run("rm", "-f", "inspected", check=False)
    client_env.run("prune")
    assert list(layers.iterdir()) == []
