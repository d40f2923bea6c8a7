"""deploy/ is parsed and validated here; test_replicas.py runs its nginx config and compose
topology for real. No container engine runs on these machines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pyreg.registry.config import load_config
from tests.fixtures.s3 import DEPLOY, nginx_config, nginx_test, render_template

K8S = os.path.join(DEPLOY, "k8s")
PYREG_OBJECTS = {"pyreg", "pyreg-config", "pyreg-s3"}


def load_yaml(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def k8s_objects() -> dict[str, dict[str, Any]]:
    objects: dict[str, dict[str, Any]] = {}
    for name in sorted(os.listdir(K8S)):
        with open(os.path.join(K8S, name), encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:  # pyreg's own objects by kind, the rest (Redis) by kind/name
                    name_ = doc["metadata"]["name"]
                    objects[doc["kind"] if name_ in PYREG_OBJECTS else f"{doc['kind']}/{name_}"] = doc
    return objects


def test_example_config_validates() -> None:
    config = load_config(os.path.join(DEPLOY, "config.yml"), environ={})
    assert config.storage.s3 is not None and config.storage.s3.bucket
    assert config.storage.cache.ttl == 0  # replicas see each other's pushes at once
    assert config.proxy.trustforwarded
    assert config.ui.enabled and config.ui.path == "/ui"


def test_compose_topology() -> None:
    compose = load_yaml(os.path.join(DEPLOY, "compose.yaml"))
    services = compose["services"]
    assert {"s3", "pyreg1", "pyreg2", "nginx"} <= set(services)
    for name in ("pyreg1", "pyreg2"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Containerfile"
        assert any(v.startswith("./config.yml:") for v in svc["volumes"])
        env = {k: str(v) for k, v in svc["environment"].items()}
        # The replica's configuration is the example file plus the compose environment.
        config = load_config(os.path.join(DEPLOY, "config.yml"), environ=env)
        assert config.storage.s3 is not None
        assert config.storage.s3.regionendpoint == "http://s3:5000"
        assert config.port == 5000
        # The replicas share state in compose's redis service.
        assert config.redis is not None and config.redis.addr == "redis:6379"
        assert "redis" in svc["depends_on"]
    assert services["redis"]["image"].startswith("docker.io/library/redis:")
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    assert {nginx["environment"]["PYREG1_ADDR"], nginx["environment"]["PYREG2_ADDR"]} == {
        "pyreg1:5000", "pyreg2:5000"}
    with open(os.path.join(DEPLOY, "nginx.conf"), encoding="utf-8") as f:
        rendered = render_template(f.read(), {k: str(v) for k, v in nginx["environment"].items()})
    assert "${" not in rendered
    # X-Forwarded-* are believed from nginx's fixed address only, and nginx passes on none of the
    # client's own (tests/test_auth_hardening.py runs this nginx config against a forging client).
    nginx_ip = nginx["networks"]["default"]["ipv4_address"]
    for name in ("pyreg1", "pyreg2"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        proxy = load_config(os.path.join(DEPLOY, "config.yml"), environ=env).proxy
        assert proxy.trustforwarded and proxy.trustedproxies == [f"{nginx_ip}/32"]
    assert "X-Forwarded-For $remote_addr;" in rendered and "$proxy_add_x_forwarded_for" not in rendered


def test_containerfile() -> None:
    text = Path(DEPLOY, "Containerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0].startswith("FROM ")
    assert any(ln.startswith("ENTRYPOINT") and "pyreg" in ln for ln in lines)
    assert any(ln.startswith("USER ") and not ln.endswith(" root") for ln in lines)
    for ln in lines:
        if ln.startswith("COPY ") and "--from" not in ln:
            src = ln.split()[1]
            assert os.path.exists(os.path.join(DEPLOY, "..", src)), src


def test_k8s_manifests() -> None:
    objs = k8s_objects()
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= set(objs)
    dep, svc, cm, secret = objs["Deployment"], objs["Service"], objs["ConfigMap"], objs["Secret"]
    assert dep["apiVersion"] == "apps/v1" and dep["spec"]["replicas"] == 2
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port_names = {p["name"] for p in container["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])
    # Every Secret key referenced exists; credentials reach pyreg as PYREG_* overrides.
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert set(refs) == {"PYREG_STORAGE_S3_ACCESSKEY", "PYREG_STORAGE_S3_SECRETKEY"}
    for ref in refs.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    # The config map's file is a valid pyreg configuration on S3, mounted where args point.
    volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert container["args"] == ["--config", f"{mount['mountPath']}/config.yml"]
    config = load_config(data=yaml.safe_load(cm["data"]["config.yml"]),
                         environ={"PYREG_STORAGE_S3_ACCESSKEY": "a", "PYREG_STORAGE_S3_SECRETKEY": "b"})
    assert config.storage.s3 is not None and config.storage.s3.accesskey == "a"
    assert config.ui.enabled
    assert config.port == int(next(p["containerPort"] for p in container["ports"]))
    assert container["readinessProbe"]["httpGet"]["port"] in port_names
    # The replicas' shared state: the Redis Service the env names, selecting the Redis pods.
    redis_svc, redis_dep = objs["Service/pyreg-redis"], objs["Deployment/pyreg-redis"]
    addr = next(e["value"] for e in container["env"] if e["name"] == "PYREG_REDIS_ADDR")
    assert addr == f"{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}"
    redis_pod = redis_dep["spec"]["template"]
    assert redis_svc["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    redis_ports = {p["name"]: p["containerPort"] for p in redis_pod["spec"]["containers"][0]["ports"]}
    assert redis_ports[redis_svc["spec"]["ports"][0]["targetPort"]] == 6379
    env = {"PYREG_STORAGE_S3_ACCESSKEY": "a", "PYREG_STORAGE_S3_SECRETKEY": "b", "PYREG_REDIS_ADDR": addr}
    redis = load_config(data=yaml.safe_load(cm["data"]["config.yml"]), environ=env).redis
    assert redis is not None and redis.addr == "pyreg-redis:6379"


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    config = nginx_config(str(tmp_path / "nginx"), {
        "PYREG1_ADDR": "127.0.0.1:5001", "PYREG2_ADDR": "127.0.0.1:5002",
        "NGINX_LISTEN": "127.0.0.1:5003", "PYREG_BLOB_ROOT": str(tmp_path / "data")})
    result = nginx_test(config)
    assert result.returncode == 0, result.stderr
    text = Path(tmp_path / "nginx" / "pyreg.conf").read_text()
    for directive in ("client_max_body_size 0;", "proxy_request_buffering off;", "internal;", "sendfile on;"):
        assert directive in text


def test_systemd_unit(tmp_path: Path) -> None:
    text = Path(DEPLOY, "pyreg.service").read_text()
    sections = {ln.strip() for ln in text.splitlines() if ln.startswith("[")}
    assert sections == {"[Unit]", "[Service]", "[Install]"}
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[1:3] == ["serve", "--config"]
    analyze, pyreg = shutil.which("systemd-analyze"), shutil.which("pyreg")
    if analyze is None or pyreg is None:
        pytest.skip("systemd-analyze or an installed pyreg is missing: parse check only")
    # Point ExecStart at this machine's pyreg (verify checks that the binary exists).
    unit = tmp_path / "pyreg.service"
    unit.write_text(text.replace("/opt/pyreg/bin/pyreg", os.path.realpath(pyreg)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (result.stdout + result.stderr).splitlines()
                if "pyreg.service" in ln and "Failed to" not in ln]
    assert result.returncode == 0 or not problems, result.stderr


def test_systemd_unit_keeps_registry_data_apart_from_the_client_store() -> None:
    """The documented install: a venv in /opt/pyreg, a pyreg system user, data in the unit's
    StateDirectory, which is not /var/lib/pyreg (root's client image store)."""
    text = Path(DEPLOY, "pyreg.service").read_text()
    keys = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#"))
    assert keys["ExecStart"].split()[0] == "/opt/pyreg/bin/pyreg"
    assert keys["User"] == "pyreg" or keys.get("DynamicUser") == "yes"
    data = f"/var/lib/{keys['StateDirectory']}"
    assert data != "/var/lib/pyreg" and keys["WorkingDirectory"] == data and keys["ReadWritePaths"] == data
    config = load_config(os.path.join(DEPLOY, "pyreg-systemd.yml"), environ={})
    assert config.storage.filesystem is not None and config.storage.filesystem.rootdirectory == data
    readme = Path(DEPLOY, "README.md").read_text()
    for step in ("python3 -m venv /opt/pyreg", "useradd --system",
                 "deploy/pyreg-systemd.yml /etc/pyreg/config.yml", "systemctl enable --now pyreg"):
        assert step in readme and step in text, step


@pytest.mark.peers
def test_render_nginx_script_runs_nginx_in_front_of_two_replicas(tmp_path: Path) -> None:
    """deploy/render-nginx fills pyreg's variables, leaves nginx's own, and the result serves."""
    from tests.fixtures.registry import sha256
    from tests.fixtures.s3 import free_port, start_nginx, start_pyreg, stop_process

    if shutil.which("envsubst") is None:
        pytest.skip("envsubst (gettext-base) is missing")
    root = tmp_path / "data"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"storage": {"filesystem": {"rootdirectory": str(root)}},
                                      "proxy": {"trustforwarded": True,
                                                "xaccelredirect": {"enabled": True}}}))
    procs = []
    try:
        ports = [free_port() for _ in range(2)]
        for i, port in enumerate(ports):
            procs.append(start_pyreg(str(config), port, log=str(tmp_path / f"r{i}.log")))
        listen = free_port()
        env = dict(os.environ, PYREG1_ADDR=f"127.0.0.1:{ports[0]}", PYREG2_ADDR=f"127.0.0.1:{ports[1]}",
                   NGINX_LISTEN=f"127.0.0.1:{listen}", PYREG_BLOB_ROOT=str(root))
        rendered = subprocess.run([os.path.join(DEPLOY, "render-nginx")], env=env, capture_output=True,
                                  text=True, check=True, timeout=30).stdout
        assert "${" not in rendered
        for own in ("$http_host", "$remote_addr", "$upstream_addr", "$scheme"):
            assert own in rendered, own  # nginx's variables survive
        snippet = tmp_path / "pyreg.conf.template"
        snippet.write_text(rendered)
        procs.append(start_nginx(nginx_config(str(tmp_path / "nginx"), {}, str(snippet)), listen))
        data = os.urandom(200_000)
        digest = sha256(data)
        with httpx.Client(base_url=f"http://127.0.0.1:{listen}", timeout=30) as c:
            r = c.post("/v2/render/app/blobs/uploads/", params={"digest": digest}, content=data)
            assert r.status_code == 201, r.text
            answers = [c.get(f"/v2/render/app/blobs/{digest}") for _ in range(4)]
        assert all(a.status_code == 200 and a.content == data for a in answers)
        upstreams = {a.headers["X-Pyreg-Upstream"] for a in answers}
        assert upstreams == {f"127.0.0.1:{p}" for p in ports}  # round-robin over both
    finally:
        for p in procs:
            stop_process(p)
    # Without the replicas' addresses the script refuses rather than render a broken config.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PYREG")}
    result = subprocess.run([os.path.join(DEPLOY, "render-nginx")], env=bare, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "PYREG1_ADDR" in result.stderr
