"""Pure client logic: challenge parsing, scopes, the Bearer flow's re-request on insufficient_scope
and refresh tokens (through httpx's transport seam, no sockets), platforms, sizes, credentials."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from pyreg.client import credentials
from pyreg.client.config import is_loopback, parse_size, plain_http_allowed
from pyreg.client.credentials import Credentials
from pyreg.storage.remote.auth import RegistryAuth, merge_scopes, parse_challenge, request_scopes


def test_parse_challenge() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                        'scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope"')
    assert c is not None and c.scheme == "bearer"
    assert c.params["realm"] == "https://auth.example/token" and c.params["error"] == "insufficient_scope"
    assert c.scopes == ["repository:a/b:pull,push", "repository:c:pull"]
    basic = parse_challenge('Basic realm="registry"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate") is None and parse_challenge(None) is None


@pytest.mark.parametrize("method,url,scopes", [
    ("GET", "http://r/v2/", []),
    ("GET", "http://r/v2/a/b/manifests/1", ["repository:a/b:pull"]),
    ("HEAD", "http://r/v2/a/blobs/sha256:x", ["repository:a:pull"]),
    ("PUT", "http://r/v2/a/manifests/1", ["repository:a:pull,push"]),
    ("DELETE", "http://r/v2/a/manifests/sha256:x", ["repository:a:delete"]),
    ("POST", "http://r/v2/t/blobs/uploads/?mount=sha256:x&from=s/r", ["repository:t:pull,push",
                                                                       "repository:s/r:pull"]),
    ("GET", "http://r/v2/_catalog?n=10", ["registry:catalog:*"]),
    ("GET", "http://r/v2/x/tags/list", ["repository:x:pull"]),
    # a name may hold the word "blobs": the path is read right to left, as the registry reads it
    ("GET", "http://r/v2/team/blobs/x/manifests/1", ["repository:team/blobs/x:pull"]),
    ("HEAD", "http://r/v2/team/blobs/x/blobs/sha256:x", ["repository:team/blobs/x:pull"]),
    ("PATCH", "http://r/v2/team/manifests/x/blobs/uploads/u-1", ["repository:team/manifests/x:pull,push"]),
    # cancelling an upload needs push, as the registry's middleware asks
    ("DELETE", "http://r/v2/a/blobs/uploads/u-1", ["repository:a:pull,push"]),
])
def test_request_scopes(method: str, url: str, scopes: list[str]) -> None:
    assert request_scopes(httpx.Request(method, url)) == scopes


def test_merge_scopes() -> None:
    assert merge_scopes(["repository:a:pull"], ["repository:a:push", "repository:b:pull"]) == [
        "repository:a:pull,push", "repository:b:pull"]


def _token_registry(log: list[str]) -> httpx.MockTransport:
    """A registry + token server speaking the Docker token protocol, scope-checking its tokens."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            if request.method == "POST":
                form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
                assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh-1"
                scope = httpx.QueryParams(request.content.decode())["scope"]
                log.append(f"refresh {scope}")
                return httpx.Response(200, json={"access_token": f"tok[{scope}]", "expires_in": 300})
            scopes = " ".join(request.url.params.get_list("scope"))
            auth = request.headers.get("authorization", "")
            assert auth == "Basic " + base64.b64encode(b"u:p").decode()
            log.append(f"token {scopes}")
            return httpx.Response(200, json={"token": f"tok[{scopes}]", "refresh_token": "refresh-1"})
        need = " ".join(request_scopes(request))
        challenge = f'Bearer realm="http://r/token",service="svc",scope="{need}"'
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer tok["):
            return httpx.Response(401, headers={"www-authenticate": challenge})
        granted = auth[len("Bearer tok["):-1].split()
        if not set(need.split()) <= set(granted):
            insufficient = challenge + ',error="insufficient_scope"'
            return httpx.Response(401, headers={"www-authenticate": insufficient})
        return httpx.Response(200, json={"ok": need})
    return httpx.MockTransport(handler)


def test_bearer_flow_scopes_refresh_and_reuse() -> None:
    log: list[str] = []
    auth = RegistryAuth(Credentials("u", "p"))
    with httpx.Client(transport=_token_registry(log), auth=auth) as c:
        assert c.get("http://r/v2/a/manifests/1").status_code == 200
        assert log == ["token repository:a:pull"]
        # the scheme is known now: the next request is authorised up front, with a refreshed token
        assert c.put("http://r/v2/a/manifests/1", content=b"{}").status_code == 200
        assert log[1] == "refresh repository:a:pull,push"
        # a cached token serves a repeat without another token request
        assert c.get("http://r/v2/a/manifests/2").status_code == 200
        assert len(log) == 2


def test_bearer_insufficient_scope_rerequests() -> None:
    log: list[str] = []
    auth = RegistryAuth(Credentials("u", "p"))
    with httpx.Client(transport=_token_registry(log), auth=auth) as c:
        # a token for the wrong scope is presented: the registry says insufficient_scope
        r = c.get("http://r/v2/b/manifests/1", headers={"Authorization": "Bearer tok[repository:x:pull]"})
        assert r.status_code == 200
        assert log == ["token repository:b:pull"]


def test_sizes_and_plain_http(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_size("8M") == 8 << 20 and parse_size("512k") == 512 << 10 and parse_size("100") == 100
    assert parse_size(None) is None
    with pytest.raises(ValueError):
        parse_size("-1")
    assert is_loopback("localhost:5000") and is_loopback("127.0.0.1:1") and is_loopback("[::1]:5000")
    assert not is_loopback("registry.example.com")
    monkeypatch.setenv("PYREG_CONFIG", str(tmp_path / "c.json"))
    monkeypatch.delenv("PYREG_INSECURE_REGISTRIES", raising=False)
    assert not plain_http_allowed("reg.lan:5000")
    assert plain_http_allowed("reg.lan:5000", insecure_flag=True)
    (tmp_path / "c.json").write_text(json.dumps({"insecure_registries": ["reg.lan:5000"]}))
    assert plain_http_allowed("reg.lan:5000")
    monkeypatch.setenv("PYREG_INSECURE_REGISTRIES", "other:1")
    assert not plain_http_allowed("reg.lan:5000")


def test_docker_config_auths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert credentials.get("reg:1") is None
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "https://reg:1": {"auth": base64.b64encode(b"me:secret:with:colons").decode()},
        "https://index.docker.io/v1/": {"identitytoken": "idt"},
    }}))
    assert credentials.get("reg:1") == Credentials("me", "secret:with:colons")
    assert credentials.get("docker.io") == Credentials(identity_token="idt")
    credentials.store("other:2", "u", "p")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["auths"]["other:2"]["auth"] == base64.b64encode(b"u:p").decode()
    assert "https://reg:1" in data["auths"]  # other entries kept
    assert credentials.erase("other:2") and not credentials.erase("other:2")


def test_docker_hub_credentials_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    credentials.store("docker.io", "hub", "pw")
    data = json.loads((tmp_path / "config.json").read_text())
    assert list(data["auths"]) == ["https://index.docker.io/v1/"]
    assert credentials.get("docker.io") == Credentials("hub", "pw")
    assert credentials.erase("docker.io")
