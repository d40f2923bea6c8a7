"""Auth edge cases on a real ``pyreg serve`` with two workers: passwords longer than bcrypt's 72
bytes, token scopes on names that are not repository names, and the failed-login limiter behind a
proxy (keyed on the real client, which the client cannot choose)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
import yaml

from pyreg.registry.auth import htpasswd
from tests.fixtures.auth import SigningKey

SERVICE = "pyreg-hardening"
LONG = "p" * 73  # one byte more than bcrypt reads
AT_LIMIT = "q" * 72


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Auth does not touch storage: filesystem only."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    htpasswd.set_user(path, "alice", "alice-pw", cost=4)
    htpasswd.set_user(path, "max", AT_LIMIT, cost=4)
    # A hash made for a long password by a tool that cut it at 72 bytes (bcrypt < 5, htpasswd -B).
    with path.open("a") as f:
        f.write("long:" + bcrypt.hashpw(LONG.encode()[:72], bcrypt.gensalt(4)).decode() + "\n")
    return path


def test_bcrypt_is_in_the_pinned_range() -> None:
    """pyproject pins bcrypt to the major version these tests run against (5 raises on more than 72
    bytes where 4 cut silently; htpasswd.py checks the length itself either way)."""
    assert importlib.metadata.version("bcrypt").split(".")[0] == "5"


def test_long_password_is_401_at_v2(make_registry_server: Any, users: Path) -> None:
    server = make_registry_server({"auth": {"htpasswd": {"path": str(users)}}}, workers=2)
    with httpx.Client(base_url=server.url) as c:
        for _ in range(2):  # both workers, most likely
            assert c.get("/v2/", auth=("long", LONG)).status_code == 401
            assert c.get("/v2/", auth=("alice", LONG)).status_code == 401
            assert c.get("/v2/", auth=("nobody", LONG)).status_code == 401
        assert c.get("/v2/", auth=("max", AT_LIMIT)).status_code == 200
        assert c.get("/v2/", auth=("alice", "alice-pw")).status_code == 200


def token_config(signing_key: SigningKey, users: Path) -> dict[str, Any]:
    token = {"service": SERVICE, "issuer": "pyreg-hardening", "signingkey": str(signing_key.key)}
    access = [{"repository": "shared/*", "users": ["alice"], "actions": ["pull"]}]
    return {"auth": {"token": token, "htpasswd": {"path": str(users)}}, "access": access}


def test_long_password_is_401_at_the_token_endpoint(make_registry_server: Any, signing_key: SigningKey,
                                                     users: Path) -> None:
    server = make_registry_server(token_config(signing_key, users), workers=2)
    with httpx.Client(base_url=server.url) as c:
        for user in ("long", "alice", "nobody"):
            r = c.get("/token", params={"service": SERVICE}, auth=(user, LONG))
            assert r.status_code == 401, r.text
            r = c.post("/token", data={"grant_type": "password", "client_id": "t", "username": user,
                                       "password": LONG, "service": SERVICE})
            assert r.status_code == 401, r.text
            assert r.json()["error"] == "invalid_grant"
        assert c.get("/token", params={"service": SERVICE}, auth=("max", AT_LIMIT)).status_code == 200


def pyreg(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyreg", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_user_add_refuses_a_password_bcrypt_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    for password in (LONG, "é" * 37):  # 73 bytes; 37 characters but 74 bytes in UTF-8
        r = pyreg("user", "-f", str(path), "add", "alice", "--password-stdin", "--cost", "4",
                  stdin=password + "\n")
        assert r.returncode == 1, r.stderr
        assert "72 bytes" in r.stderr and "Traceback" not in r.stderr
    assert not path.exists()
    r = pyreg("user", "-f", str(path), "add", "alice", "--password-stdin", "--cost", "4",
              stdin=AT_LIMIT + "\n")
    assert r.returncode == 0, r.stderr
    assert htpasswd.Htpasswd(path).verify("alice", AT_LIMIT)


def granted(token: str) -> list[dict[str, Any]]:
    return list(jwt.decode(token, options={"verify_signature": False}).get("access", []))


@pytest.mark.parametrize("name", ["shared/../secret/app", "shared/./app", "shared//app", "shared/App",
                                  "localhost:5000/shared/app"])
def test_token_scopes_on_invalid_names_are_refused(make_registry_server: Any, signing_key: SigningKey,
                                                   users: Path, name: str) -> None:
    server = make_registry_server(token_config(signing_key, users), workers=2)
    auth = ("alice", "alice-pw")
    with httpx.Client(base_url=server.url) as c:
        ok = c.get("/token", params={"service": SERVICE, "scope": "repository:shared/app:pull"}, auth=auth)
        assert ok.status_code == 200
        expected = {"type": "repository", "name": "shared/app", "actions": ["pull"]}
        assert granted(ok.json()["token"]) == [expected]
        r = c.get("/token", params={"service": SERVICE, "scope": f"repository:{name}:pull"}, auth=auth)
        assert r.status_code == 400, r.text
        assert "repository name" in r.text
        r = c.post("/token", data={"grant_type": "password", "client_id": "t", "username": "alice",
                                   "password": "alice-pw", "service": SERVICE,
                                   "scope": f"repository:shared/app:pull repository:{name}:pull"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", r.text


# -- behind a proxy ------------------------------------------------------------------------------

def from_address(address: str, base_url: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is this host)."""
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=address), timeout=30)


def access_line(server: Any, path: str) -> str:
    """The access-log line of ``path``; a worker writes it just after the response, so wait for it."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in server.log().splitlines() if "pyreg.access" in line and path in line]
        if lines or time.monotonic() > deadline:
            assert lines, f"no access-log line for {path}"
            return lines[0]
        time.sleep(0.05)


def test_forwarded_headers_count_only_from_trusted_proxies(make_registry_server: Any) -> None:
    server = make_registry_server({"proxy": {"trustforwarded": True, "trustedproxies": ["127.0.0.1/32"]},
                                   "log": {"accesslog": {"disabled": False}}}, workers=2)
    forged = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Proto": "https"}
    with from_address("127.0.0.5", server.url) as c:  # not a trusted proxy: its words are dropped
        r = c.post("/v2/direct/app/blobs/uploads/", headers=forged)
        assert r.status_code == 202
        assert r.headers["Location"].startswith("/v2/direct/app/blobs/uploads/")
    assert " 127.0.0.5:" in access_line(server, "/v2/direct/app/")
    # A trusted proxy: the client is the right-most hop that is not a trusted proxy.
    relayed = {"X-Forwarded-For": "203.0.113.7, 198.51.100.2, 127.0.0.1",
               "X-Forwarded-Host": "registry.example", "X-Forwarded-Proto": "https"}
    with from_address("127.0.0.1", server.url) as c:
        r = c.post("/v2/relayed/app/blobs/uploads/", headers=relayed)
        assert r.status_code == 202
        assert r.headers["Location"].startswith("https://registry.example/v2/relayed/app/blobs/uploads/")
    line = access_line(server, "/v2/relayed/app/")
    assert " 198.51.100.2:" in line and "203.0.113.7" not in line


def config_behind_nginx(path: Path, users: Path, trusted: list[str] | None) -> Path:
    proxy: dict[str, Any] = {"trustforwarded": True}
    if trusted is not None:
        proxy["trustedproxies"] = trusted
    config = {"storage": {"filesystem": {"rootdirectory": str(path.parent / "shared-data")}},
              "auth": {"htpasswd": {"path": str(users)}, "ratelimit": {"failures": 3, "window": "10m"}},
              "proxy": proxy, "workers": 2}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.peers
@pytest.mark.parametrize("trusted", [None, ["127.0.0.1/32"]], ids=["shipped-default", "nginx-only"])
def test_failed_login_limiter_behind_nginx_keys_on_the_real_client(tmp_path: Path, users: Path,
                                                                    trusted: list[str] | None) -> None:
    """deploy/nginx.conf in front of two replicas of two workers each: a client cannot reset its
    failed-login count with X-Forwarded-For, nor spend another client's count by naming it."""
    from tests.test_replicas import start_behind_nginx, stop_cluster

    config = config_behind_nginx(tmp_path / "config.yml", users, trusted)
    cluster = start_behind_nginx(tmp_path, str(config), [(f"r{i}", {}) for i in range(2)],
                                 {"PYREG_BLOB_ROOT": str(tmp_path / "shared-data")})
    try:
        statuses = []
        with from_address("127.0.0.5", cluster.url) as attacker:
            for i in range(40):
                # A fresh address each time, or the victim's: neither is this client's key.
                forged = f"198.51.100.{i}" if i % 2 else "127.0.0.6"
                r = attacker.get("/v2/", auth=("alice", f"guess-{i}"), headers={"X-Forwarded-For": forged})
                statuses.append(r.status_code)
        assert set(statuses) <= {401, 429}, statuses
        assert 429 in statuses, statuses
        with from_address("127.0.0.6", cluster.url) as victim:
            for _ in range(4):
                assert victim.get("/v2/", auth=("alice", "alice-pw")).status_code == 200
    finally:
        stop_cluster(cluster)


def test_limiter_counts_an_ipv6_client_by_its_64() -> None:
    from pyreg.registry.auth.ratelimit import client_key

    same_site = client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert client_key("2001:db8:1:2::1") == same_site == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "192.0.2.1"
