"""A push to a loopback registry over the bare-socket plain-HTTP path (storage/remote/plainpush.py):
no httpx, no ssl — and the full push, from where the plain one stopped, for every answer that is
not a plain anonymous one (credentials asked for, a 5xx)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.fixtures.auth import USERS
from tests.fixtures.client import ClientEnv, FaultProxy
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage
from tests.test_client_plain_pull import HEAVY
from tests.test_client_present import _access, _imports


def _pyreg_requests(server: Any, before: int) -> list[tuple[str, str]]:
    return [(e["method"], e["path"]) for e in _access(server)[before:]
            if e.get("user_agent", "").startswith("pyreg/")]


def test_push_to_loopback_imports_no_http_client_nor_ssl(
        pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo, five_layer_image: TestImage,
        tmp_path: Path) -> None:
    server = pyreg_factory({"log": {"format": "json", "accesslog": {"disabled": False}}})
    host = server.host
    img = five_layer_image
    blobs = {*img.layer_digests, img.config_digest}
    proc, modules = _imports(client_env, "push", "--json", f"{img.layout}:{img.tag}", f"{host}/team/five:1")
    out = json.loads(proc.stdout)
    assert out["digest"] == img.manifest_digest
    assert {b["status"] for b in out["blobs"]} == {"pushed"}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, sorted(modules)
    requests = _pyreg_requests(server, 0)
    # a HEAD per blob, a session and one PUT ?digest= per blob, the manifest PUT last; no /v2/ ping
    assert ("GET", "/v2/") not in requests
    assert sorted(p for m, p in requests if m == "HEAD") == sorted(f"/v2/team/five/blobs/{d}" for d in blobs)
    assert sum(m == "POST" for m, _ in requests) == len(blobs)
    puts = [p for m, p in requests if m == "PUT"]
    assert len(puts) == len(blobs) + 1 and puts[-1] == "/v2/team/five/manifests/1"
    assert requests[-1] == ("PUT", "/v2/team/five/manifests/1")
    # pulled back by skopeo: the very image
    skopeo_dir = tmp_path / "back"
    server.start()
    skopeo.copy(tagged(host, "team/five", "1"), f"dir:{skopeo_dir}")
    assert (skopeo_dir / "manifest.json").read_bytes() == img.manifest
    for digest in blobs:
        hexa = digest.split(":")[1]
        assert (skopeo_dir / hexa).read_bytes() == (img.layout / "blobs" / "sha256" / hexa).read_bytes()

    # pushed again: every blob is there (HEAD), only the manifest is sent
    before = len(_access(server))
    server.start()
    proc, modules = _imports(client_env, "push", "--json", f"{img.layout}:{img.tag}", f"{host}/team/five:2")
    assert {b["status"] for b in json.loads(proc.stdout)["blobs"]} == {"exists"}
    assert {m for m, _ in _pyreg_requests(server, before)} == {"HEAD", "PUT"}

    # pulled, then pushed to another repository: each blob is mounted from the one it came from
    server.start()
    client_env.run("pull", "-q", "--no-extract", f"{host}/team/five:1")
    before = len(_access(server))
    server.start()
    proc, modules = _imports(client_env, "push", "--json", f"{host}/team/five:1", f"{host}/team/other:1")
    assert {b["status"] for b in json.loads(proc.stdout)["blobs"]} == {"mounted"}
    assert not {m for m in modules if m.split(".")[0] in HEAVY}, sorted(modules)
    posts = [p for m, p in _pyreg_requests(server, before) if m == "POST"]
    assert len(posts) == len(blobs)


def test_push_falls_back_to_credentials_when_asked(
        pyreg_factory: Any, client_env: ClientEnv, skopeo: Skopeo, htpasswd_users: Path,
        busybox_image: TestImage, tmp_path: Path) -> None:
    server = pyreg_factory({"auth": {"htpasswd": {"realm": "r", "path": str(htpasswd_users)}},
                            "log": {"format": "json", "accesslog": {"disabled": False}}})
    host = server.host
    user, password = next(iter(USERS.items()))
    client_env.run("login", "-u", user, "--password-stdin", host, input=password)
    img = busybox_image
    out = json.loads(client_env.run("push", "--json", f"{img.layout}:{img.tag}", f"{host}/bb:1").stdout)
    assert out["digest"] == img.manifest_digest
    assert {b["status"] for b in out["blobs"]} == {"pushed"}
    # the plain path asked first, anonymously, and stopped at the 401; the full path pushed
    entries = [e for e in _access(server) if e.get("user_agent", "").startswith("pyreg/")]
    first_push = next(i for i, e in enumerate(entries) if e["method"] == "HEAD")
    assert entries[first_push]["path"].startswith("/v2/bb/blobs/sha256:")
    assert entries[first_push]["status"] == 401
    assert ("GET", "/v2/") in [(e["method"], e["path"]) for e in entries[first_push:]]
    assert any(e["method"] == "PUT" and e["status"] == 201 for e in entries[first_push:])
    server.start()
    skopeo.copy(tagged(host, "bb", "1"), f"dir:{tmp_path / 'back'}", "--src-creds", f"{user}:{password}")
    assert (tmp_path / "back" / "manifest.json").read_bytes() == img.manifest


def test_push_with_a_5xx_midway_finishes_the_full_way(
        fault_proxy: FaultProxy, distribution_registry: Any, client_env: ClientEnv, skopeo: Skopeo,
        five_layer_image: TestImage, tmp_path: Path) -> None:
    img = five_layer_image
    fault_proxy.fail_put_at = 3  # the third blob upload's PUT answers 503
    out = json.loads(client_env.run("push", "--json", "--parallel", "1", f"{img.layout}:{img.tag}",
                                    f"{fault_proxy.host}/five:1").stdout)
    assert out["digest"] == img.manifest_digest
    statuses = [b["status"] for b in out["blobs"]]
    # the two blobs the plain path sent are found by the full path's HEAD
    assert statuses.count("exists") == 2 and set(statuses) == {"exists", "pushed"}
    assert "GET /v2/" in fault_proxy.requests  # the full path's ping, after the 503
    skopeo.copy(tagged(distribution_registry.host, "five", "1"), f"dir:{tmp_path / 'back'}")
    assert (tmp_path / "back" / "manifest.json").read_bytes() == img.manifest
