"""Distribution's (``registry:2``) config files run pyreg unchanged, and ``pyreg serve`` starts
safely: the config Debian's ``docker-registry`` package installs, and the examples of
Distribution's docs for filesystem, htpasswd (with TLS, from the environment as deploying.md
does), token auth and S3 each start ``pyreg serve`` and serve a skopeo push and pull. Keys pyreg
does not implement are named in one warning line; start-up says what it runs in one line, and
stops with one line when storage cannot be written.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.config import ConfigError, config_to_dict, load_config, not_implemented_keys
from tests.fixtures.peers import Skopeo, tagged
from tests.fixtures.registry import REPO_ROOT, free_port
from tests.images import TestImage, read_layout

DEBIAN_CONFIG = Path("/etc/docker/registry/config.yml")

# Distribution's own example, shipped in the registry:2 image as /etc/docker/registry/config.yml
# (cmd/registry/config-example.yml)
REGISTRY2_IMAGE_CONFIG = """\
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""

# docs/content/about/configuration.md: the token example
TOKEN_EXAMPLE = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
auth:
  token:
    realm: token-realm
    service: token-service
    issuer: registry-token-issuer
    rootcertbundle: /root/certs/bundle
"""

# docs/content/storage-drivers/s3.md / configuration.md: the s3 example
S3_EXAMPLE = """\
version: 0.1
storage:
  s3:
    accesskey: awsaccesskey
    secretkey: awssecretkey
    region: us-west-1
    regionendpoint: http://myobjects.local
    forcepathstyle: true
    accelerate: false
    bucket: bucketname
    encrypt: true
    keyid: mykeyid
    secure: true
    v4auth: true
    chunksize: 5242880
    multipartcopychunksize: 33554432
    multipartcopymaxconcurrency: 100
    multipartcopythresholdsize: 33554432
    rootdirectory: /s3/object/name/prefix
    usedualstack: false
    loglevel: debug
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: :5000
"""


class Serve:
    """``pyreg serve`` as an operator starts it: config file, REGISTRY_* environment, no flags."""

    def __init__(self, tmp: Path, config: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tmp / f"serve-{self.port}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("PYREG_", "REGISTRY_"))}
        full.update(env)
        full["REGISTRY_HTTP_ADDR"] = f"127.0.0.1:{self.port}"
        full["PYTHONPATH"] = str(REPO_ROOT)
        with open(self.log, "wb") as out:
            cmd = [sys.executable, "-m", "pyreg", "serve", "--config", str(config)]
            self.proc = subprocess.Popen(cmd, cwd=tmp, env=full, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.host = f"127.0.0.1:{self.port}"

    def wait(self, scheme: str = "http") -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                httpx.get(f"{scheme}://{self.host}/healthz", timeout=2, verify=False)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("pyreg serve did not start:\n" + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(config: Path, env: dict[str, str], scheme: str = "http") -> Serve:
        server = Serve(tmp_path, config, env)
        started.append(server)
        server.wait(scheme)
        return server

    yield start
    for server in started:
        server.stop()


def push_pull(skopeo: Skopeo, image: TestImage, host: str, out: Path, *creds: str) -> None:
    ref = tagged(host, "team/app", "1")
    push_creds = [f"--dest-creds={c}" for c in creds]
    pull_creds = [f"--src-creds={c}" for c in creds]
    skopeo.copy(image.oci_ref, ref, *push_creds)
    skopeo.copy(ref, f"oci:{out}:1", *pull_creds)
    assert read_layout(out, "1").manifest_digest == image.manifest_digest


def warning_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "not implemented by pyreg" in line]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.peers
@pytest.mark.skipif(not DEBIAN_CONFIG.exists(), reason="Debian's docker-registry package is not installed")
def test_debian_package_config(serve: Any, skopeo: Skopeo, busybox_image: TestImage, htpasswd_users: Path,
                               tmp_path: Path) -> None:
    """The file as installed; the paths of this test through Distribution's environment names (its
    htpasswd path is a directory, which pyreg, unlike Distribution, refuses at start-up)."""
    server = serve(DEBIAN_CONFIG, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
                                   "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd_users)})
    r = httpx.get(f"http://{server.host}/v2/")
    assert r.status_code == 401 and r.headers["x-content-type-options"] == "nosniff"  # http.headers
    push_pull(skopeo, busybox_image, server.host, tmp_path / "out", "alice:alice-pw")
    assert (tmp_path / "data/docker/registry/v2/repositories/team/app").is_dir()
    output = server.output()
    assert "not implemented by pyreg" not in output  # every key of Debian's file means something here
    summary = [line for line in output.splitlines() if "pyreg serve: addr" in line]
    assert len(summary) == 1, output
    assert f"auth htpasswd {htpasswd_users}" in summary[0] and "delete on" in summary[0]
    assert "service=registry" in summary[0]  # log.fields


@pytest.mark.peers
def test_registry2_image_example(serve: Any, skopeo: Skopeo, busybox_image: TestImage,
                                 tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(REGISTRY2_IMAGE_CONFIG)
    server = serve(config, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data")})
    push_pull(skopeo, busybox_image, server.host, tmp_path / "out")
    assert (tmp_path / "data/docker/registry/v2/repositories/team/app").is_dir()


@pytest.mark.peers
def test_deploying_htpasswd_tls_from_environment(serve: Any, skopeo: Skopeo, busybox_image: TestImage,
                                                 htpasswd_users: Path, auth_ca: Any, tmp_path: Path) -> None:
    """deploying.md's "Native basic auth": everything in REGISTRY_* variables, REGISTRY_AUTH=htpasswd
    selecting the method, over TLS."""
    cert = auth_ca.issue("server")
    config = tmp_path / "config.yml"
    config.write_text(REGISTRY2_IMAGE_CONFIG)
    server = serve(config, {
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
        "REGISTRY_AUTH": "htpasswd", "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
        "REGISTRY_AUTH_HTPASSWD_PATH": str(htpasswd_users),
        "REGISTRY_HTTP_TLS_CERTIFICATE": str(cert.cert), "REGISTRY_HTTP_TLS_KEY": str(cert.key),
    }, scheme="https")
    r = httpx.get(f"https://{server.host}/v2/", verify=ssl.create_default_context(cafile=str(auth_ca.cert)))
    assert r.status_code == 401 and 'realm="Registry Realm"' in r.headers["www-authenticate"]
    push_pull(skopeo, busybox_image, server.host, tmp_path / "out", "alice:alice-pw")
    assert "tls on" in server.output()


@pytest.mark.peers
def test_token_example_with_an_external_issuer(serve: Any, skopeo: Skopeo, busybox_image: TestImage,
                                               htpasswd_users: Path, signing_key: Any,
                                               tmp_path: Path) -> None:
    """configuration.md's token example; the issuer is another pyreg with the built-in /token."""
    issuer_config = tmp_path / "issuer.yml"
    issuer_config.write_text(
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / 'issuer-data'}}}}}\n"
        f"auth:\n  htpasswd: {{path: {htpasswd_users}}}\n"
        f"  token: {{signingkey: {signing_key.key}, certificate: {signing_key.cert}, "
        "service: token-service, issuer: registry-token-issuer}\n"
        "access:\n  - {repository: 'team/*', users: [alice], actions: [pull, push]}\n")
    issuer = serve(issuer_config, {})
    config = tmp_path / "config.yml"
    config.write_text(TOKEN_EXAMPLE)
    server = serve(config, {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
                            "REGISTRY_AUTH_TOKEN_REALM": f"http://{issuer.host}/token",
                            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE": str(signing_key.cert)})
    r = httpx.get(f"http://{server.host}/v2/")
    assert r.status_code == 401 and f'realm="http://{issuer.host}/token"' in r.headers["www-authenticate"]
    push_pull(skopeo, busybox_image, server.host, tmp_path / "out", "alice:alice-pw")
    assert "auth token (issuer registry-token-issuer)" in server.output()


@pytest.mark.peers
def test_s3_example(serve: Any, skopeo: Skopeo, busybox_image: TestImage, moto_server: Any, s3_bucket: str,
                    tmp_path: Path) -> None:
    from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY

    config = tmp_path / "config.yml"
    config.write_text(S3_EXAMPLE)
    server = serve(config, {"REGISTRY_STORAGE_S3_REGIONENDPOINT": moto_server.endpoint,
                            "REGISTRY_STORAGE_S3_BUCKET": s3_bucket,
                            "REGISTRY_STORAGE_S3_REGION": "us-east-1",
                            "REGISTRY_STORAGE_S3_ACCESSKEY": ACCESS_KEY,
                            "REGISTRY_STORAGE_S3_SECRETKEY": SECRET_KEY})
    push_pull(skopeo, busybox_image, server.host, tmp_path / "out")
    warned = warning_line(server.output())
    for key in ("encrypt", "keyid", "multipartcopychunksize", "loglevel"):
        assert f"storage.s3.{key}" in warned
    for harmless in ("v4auth", "accelerate", "usedualstack"):  # what pyreg does anyway: not named
        assert f"storage.s3.{harmless}" not in warned
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert any(k.startswith("s3/object/name/prefix/docker/registry/v2/repositories/team/app/") for k in keys)
    assert not any(".pyreg-write-check" in k for k in keys)  # the start-up check cleans up


# --------------------------------------------------------------------------- the loader alone


def test_distribution_names_and_pyreg_names_are_one_schema(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("version: 0.1\nloglevel: debug\n"
                      "log: {formatter: json, fields: {service: registry}}\n"
                      "http: {addr: ':5000',"
                      " tls: {certificate: /c, key: /k, clientcas: [/ca], minimumtls: tls1.2},"
                      " debug: {addr: '127.0.0.1:5001', prometheus: {enabled: true, path: /m}}}\n"
                      "storage: {s3: {bucket: b}, redirect: {disable: false}}\n")
    c = load_config(config, environ={})
    assert (c.host, c.port) == ("0.0.0.0", 5000)
    assert c.log.level == "debug" and c.log.format == "json" and c.log.fields == {"service": "registry"}
    assert c.tls is not None and (c.tls.certificate, c.tls.key, c.tls.clientcas) == ("/c", "/k", ["/ca"])
    assert (c.metrics.addr, c.metrics.path, c.metrics.enabled) == ("127.0.0.1:5001", "/m", True)
    assert c.storage.s3 is not None and c.storage.s3.redirect.enabled  # redirect.disable: false
    assert not_implemented_keys(c) == []  # minimumtls tls1.2 is what Python's TLS enforces anyway
    # the workers get the same configuration back
    assert load_config(data=config_to_dict(c), environ={}) == c


def test_precedence_holds_whichever_name_is_used(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("http: {addr: '127.0.0.1:1'}\n")
    # REGISTRY_* beats the file, the flag beats both
    assert load_config(config, environ={"REGISTRY_HTTP_ADDR": "127.0.0.1:2"}).addr == "127.0.0.1:2"
    assert load_config(config, environ={"PYREG_ADDR": "127.0.0.1:2"}).addr == "127.0.0.1:2"
    assert load_config(config, environ={"REGISTRY_HTTP_ADDR": "127.0.0.1:2"},
                       overrides={"addr": "127.0.0.1:3"}).addr == "127.0.0.1:3"
    config.write_text("addr: 127.0.0.1:1\nhttp: {addr: '127.0.0.1:2'}\n")
    with pytest.raises(ConfigError, match=r"http\.addr and addr are the same key"):
        load_config(config, environ={})


def test_not_implemented_keys_are_named() -> None:
    c = load_config(data={"proxy": {"remoteurl": "https://registry-1.docker.io", "username": "u",
                                    "trustforwarded": True},
                          "compatibility": {"schema1": {"enabled": True}},
                          "notifications": {"events": {"includereferences": True}},
                          "http": {"http2": {"disabled": False}, "prefix": "/"},
                          "redis": {"addr": "127.0.0.1:6379", "pool": {"maxidle": 16}}}, environ={})
    assert c.proxy.trustforwarded  # pyreg's own proxy keys beside Distribution's mirror keys
    assert c.mirror.upstreams[0].url == "https://registry-1.docker.io"  # Distribution's proxy mode
    assert not_implemented_keys(c) == ["http.http2.disabled",
                                       "notifications.events.includereferences",
                                       "compatibility.schema1.enabled"]
    assert c.redis is not None and c.redis.pool.maxidle == 16  # redis keys are all implemented


@pytest.mark.parametrize(("data", "env", "match"), [
    ({"storage": {"filesystem": {"rootdirectory": "/x"}, "bogus": 1}}, {},
     "unknown configuration key 'storage.bogus'"),
    ({"storage": {"inmemory": None}}, {}, "storage.inmemory: pyreg has no inmemory driver"),
    ({"auth": {"silly": {"realm": "x"}}}, {}, "auth.silly"),
    ({"log": {"formatter": "xml"}}, {}, "log.format"),
    ({"http": {"net": "unix"}}, {}, "http.net"),
    ({}, {"PYREG_HTTP_BOGUS": "1"}, "PYREG_HTTP_BOGUS does not name"),
    ({}, {"REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR": "redis"}, "needs the redis key"),
])
def test_distribution_errors_stay_errors(data: dict[str, Any], env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(data=data, environ=env)


def test_other_programs_registry_variables_are_not_config() -> None:
    """A Service named "registry" gives every pod REGISTRY_PORT=tcp://…, REGISTRY_SERVICE_HOST, …;
    podman and skopeo read REGISTRY_AUTH_FILE. Distribution ignores REGISTRY_* names it does not
    know (with a warning); so does pyreg, naming them."""
    c = load_config(environ={"REGISTRY_PORT": "tcp://10.0.0.1:5000", "REGISTRY_SERVICE_HOST": "10.0.0.1",
                             "REGISTRY_PORT_5000_TCP_ADDR": "10.0.0.1",
                             "REGISTRY_AUTH_FILE": "/run/auth.json", "REGISTRY_HTTP_BOGUS": "1"})
    assert c.addr == "127.0.0.1:5000" and c.auth.htpasswd is None and c.auth.token is None
    assert c.ignored_env == ["REGISTRY_AUTH_FILE", "REGISTRY_HTTP_BOGUS"]
    with pytest.raises(ConfigError, match="unknown configuration key 'ignored_env'"):
        load_config(data={"ignored_env": ["x"]}, environ={})


# --------------------------------------------------------------------------- start-up


def run_serve(tmp_path: Path, args: list[str],
              prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYREG_", "REGISTRY_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run([*(prefix or []), sys.executable, "-m", "pyreg", "serve",
                           "--addr", f"127.0.0.1:{free_port()}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root for a mount namespace")
def test_unwritable_data_dir_stops_serve_with_one_line(tmp_path: Path) -> None:
    """The data dir on a read-only mount (in a private mount namespace; the host sees nothing)."""
    data = tmp_path / "data"
    data.mkdir()
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    prefix = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, str(data)]
    result = run_serve(tmp_path, ["--data-dir", str(data)], prefix)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "pyreg serve:" in line]
    assert len(lines) == 1 and lines[0].startswith(
        f"pyreg serve: storage filesystem {data} is not writable: "
        f"[Errno 30] Read-only file system: '{data}/.pyreg-write-check-")
    assert "Traceback" not in result.stderr


def test_unreachable_bucket_stops_serve_with_one_line(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    config = tmp_path / "config.yml"
    config.write_text(f"storage: {{s3: {{bucket: b, regionendpoint: 'http://127.0.0.1:{closed}', "
                      "accesskey: a, secretkey: s, forcepathstyle: true}}\n")
    result = run_serve(tmp_path, ["--config", str(config)])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"pyreg serve: storage s3 s3://b/ at http://127.0.0.1:{closed} is not writable: ")
    assert "Could not connect" in last


HEALTH_CHECK = "health:\n  storagedriver: {enabled: true, interval: 200ms, threshold: 2}\n"


@pytest.mark.parametrize("health", ["", HEALTH_CHECK], ids=["checked-per-request", "health.storagedriver"])
def test_healthz_is_liveness_and_readyz_is_storage(serve: Any, tmp_path: Path, health: str) -> None:
    """An S3 server of this test's own goes away: /readyz says so (at once, or after Distribution's
    health.storagedriver check failed ``threshold`` times), /healthz stays 200."""
    from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY, start_moto, stop_process

    moto = start_moto()
    try:
        bucket = moto.new_bucket()
        config = tmp_path / "config.yml"
        config.write_text(f"storage: {{s3: {{bucket: {bucket}, regionendpoint: '{moto.endpoint}', "
                          f"accesskey: {ACCESS_KEY}, secretkey: {SECRET_KEY}, forcepathstyle: true}}}}\n"
                          + health)
        server = serve(config, {})
        url = f"http://{server.host}"
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").json() == {"status": "ok", "storage": "s3"}
    finally:
        stop_process(moto.proc)
    deadline = time.monotonic() + 120
    while True:  # the background check needs its failures in a row first
        r = httpx.get(f"{url}/readyz", timeout=60)
        if r.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert httpx.get(f"{url}/healthz").status_code == 200  # no restart for a storage outage
    if health:
        assert "storage health check failed (2 in a row)" in server.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_on_the_debug_listener(serve: Any, tmp_path: Path, workers: int) -> None:
    debug = free_port()
    config = tmp_path / "config.yml"
    config.write_text(f"workers: {workers}\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
                      f"http: {{debug: {{addr: '127.0.0.1:{debug}',"
                      " prometheus: {enabled: true, path: /metrics}}}\n"
                      "metrics: {token: scrape-secret}\n")
    server = serve(config, {})
    assert httpx.get(f"http://{server.host}/v2/").status_code == 200
    assert httpx.get(f"http://{server.host}/metrics").status_code == 404  # not on the registry's port
    assert httpx.get(f"http://127.0.0.1:{debug}/metrics").status_code == 401
    r = httpx.get(f"http://127.0.0.1:{debug}/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert r.status_code == 200
    assert 'pyreg_http_requests_total{method="GET",route="base",status="200"}' in r.text
    assert f"metrics /metrics on 127.0.0.1:{debug} (token)" in server.output()


def test_log_formatter_and_fields() -> None:
    """log.formatter json/logstash and log.fields, as Distribution writes them."""
    import json
    import logging

    from pyreg.registry.logs import JSONFormatter, log_config

    record = logging.LogRecord("pyreg.serve", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    line = json.loads(JSONFormatter({"service": "registry"}, logstash=True).format(record))
    assert line["message"] == "hello world" and line["@version"] == "1" and "@timestamp" in line
    assert line["service"] == "registry" and line["level"] == "info"
    text = log_config("info", "text", {"service": "registry"})["formatters"]["default"]["format"]
    assert logging.Formatter(text).format(record).endswith("hello world service=registry")
    assert load_config(data={"log": {"formatter": "logstash"}}, environ={}).log.format == "logstash"
