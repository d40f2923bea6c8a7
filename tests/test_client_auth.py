"""Client auth against real registries: Basic (Distribution + htpasswd) and Bearer tokens (pyreg's
token server, trusted by pyreg itself and by Distribution), docker config.json and cred helpers."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.auth import USERS
from tests.fixtures.client import AuthDistribution, ClientEnv
from tests.fixtures.peers import Skopeo, tagged
from tests.images import TestImage

pytestmark = pytest.mark.peers


def one_line_error(proc: Any, needle: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyreg: ") and needle in lines[0], proc.stderr


def test_basic_auth_login_push_pull_logout(tmp_path: Path, htpasswd_users: Path, client_env: ClientEnv,
                                           busybox_image: TestImage) -> None:
    auth = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd_users)}}
    with AuthDistribution(tmp_path / "root", tmp_path / "dist", auth) as reg:
        host = reg.host
        one_line_error(client_env.run("push", str(busybox_image.layout), f"{host}/team/bb:1", check=False),
                       "401")
        one_line_error(client_env.run("login", host, "-u", "alice", "--password-stdin", input="wrong\n",
                                      check=False), "login to")
        client_env.run("login", host, "-u", "alice", "--password-stdin", input=USERS["alice"] + "\n")
        entry = json.loads(client_env.docker_config.read_text())["auths"][host]
        assert base64.b64decode(entry["auth"]).decode() == f"alice:{USERS['alice']}"
        assert stat.S_IMODE(client_env.docker_config.stat().st_mode) == 0o600
        pushed = client_env.run("push", str(busybox_image.layout), f"{host}/team/bb:1", "--json")
        out = json.loads(pushed.stdout)
        assert out["digest"] == busybox_image.manifest_digest
        client_env.run("pull", "-q", f"{host}/team/bb:1")
        assert json.loads(client_env.run("tags", f"{host}/team/bb", "--json").stdout)["tags"] == ["1"]
        client_env.run("logout", host)
        assert host not in json.loads(client_env.docker_config.read_text()).get("auths", {})
        one_line_error(client_env.run("pull", f"{host}/team/bb:1", check=False), "401")
        one_line_error(client_env.run("logout", host, check=False), "not logged in")


@pytest.fixture
def token_issuer(pyreg_factory: Any, htpasswd_users: Path, signing_key: Any) -> Any:
    """pyreg with its built-in token server: alice may do anything, anyone may pull public/*."""
    return pyreg_factory({
        "auth": {"htpasswd": {"path": str(htpasswd_users)},
                 "token": {"signingkey": str(signing_key.key), "certificate": str(signing_key.cert),
                           "service": "pyreg-test", "issuer": "pyreg-test"}},
        "access": [{"repository": "*", "users": ["alice"], "actions": ["pull", "push", "delete"]},
                   {"repository": "public/*", "anonymous": True, "actions": ["pull"]}],
    })


def test_bearer_tokens_from_pyreg_on_pyreg_and_distribution(
        tmp_path: Path, token_issuer: Any, signing_key: Any, client_env: ClientEnv, skopeo: Skopeo,
        five_layer_image: TestImage, busybox_image: TestImage) -> None:
    auth = {"token": {"realm": f"{token_issuer.url}/token", "service": "pyreg-test", "issuer": "pyreg-test",
                      "rootcertbundle": str(signing_key.cert)}}
    with AuthDistribution(tmp_path / "root", tmp_path / "dist", auth) as dist:
        for host in (token_issuer.host, dist.host):
            # anonymous: a token is fetched without credentials, and push is refused
            refused = client_env.run("push", str(busybox_image.layout), f"{host}/team/bb:1", check=False)
            one_line_error(refused, "")
            client_env.run("login", host, "-u", "alice", "--password-stdin", input=USERS["alice"])
            # the token server handed out a refresh token: that is stored, not the password
            entry = json.loads(client_env.docker_config.read_text())["auths"][host]
            assert entry["identitytoken"] and base64.b64decode(entry["auth"]).decode() == "alice:"
        # Distribution verifies pyreg's tokens: push, pull, copy between the two token-protected registries
        src = f"{dist.host}/team/five:1"
        out = json.loads(client_env.run("push", str(five_layer_image.layout), src, "--json").stdout)
        assert out["digest"] == five_layer_image.manifest_digest
        client_env.run("pull", "-q", src)
        public = f"{token_issuer.host}/public/five:1"
        copied = json.loads(client_env.run("copy", src, public, "--json").stdout)
        assert copied["digest"] == five_layer_image.manifest_digest
        # mount within pyreg needs pull on the source too: the client asks for both scopes
        mounted = json.loads(client_env.run("copy", f"{token_issuer.host}/public/five:1",
                                            f"{token_issuer.host}/team/five:2", "--json").stdout)
        assert {b["status"] for b in mounted["blobs"]} == {"mounted"}
        client_env.run("delete", f"{token_issuer.host}/team/five:2")
        assert json.loads(client_env.run("catalog", token_issuer.host, "--json").stdout)["repositories"]
        # logged out: anonymous pulls of public/* still work, private ones do not
        client_env.run("logout", token_issuer.host)
        client_env.env["PYREG_STORE"] = str(tmp_path / "store-anon")
        client_env.run("pull", "-q", f"{token_issuer.host}/public/five:1")
        one_line_error(client_env.run("pull", f"{token_issuer.host}/team/five:1", check=False), "")
    # skopeo sees what pyreg pushed through the token flow
    skopeo.login(token_issuer.host, "alice", USERS["alice"])
    assert skopeo.digest(tagged(token_issuer.host, "public/five", "1")) == five_layer_image.manifest_digest


HELPER = """#!/bin/sh
# a docker credential helper keeping its secrets in a JSON file next to itself
store="$(dirname "$0")/helper-store.json"
[ -f "$store" ] || echo '{}' > "$store"
input=$(cat)
case "$1" in
  store) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); i=json.loads(sys.argv[2]); d[i["ServerURL"]]=i; json.dump(d, open(sys.argv[1],"w"))' "$store" "$input" ;;
  get) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); e=d.get(sys.argv[2]); print(json.dumps(e)) if e else (print("credentials not found in native keychain"), sys.exit(1))' "$store" "$input" ;;
  erase) python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop(sys.argv[2], None); json.dump(d, open(sys.argv[1],"w"))' "$store" "$input" ;;
esac
"""  # noqa: E501


@pytest.mark.parametrize("how", ["credsStore", "credHelpers"])
def test_credential_helper(tmp_path: Path, htpasswd_users: Path, client_env: ClientEnv,
                           busybox_image: TestImage, how: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-pyregtest"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    client_env.env["PATH"] = f"{bindir}:{client_env.env['PATH']}"
    auth = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd_users)}}
    with AuthDistribution(tmp_path / "root", tmp_path / "dist", auth) as reg:
        helper_config = {"credsStore": "pyregtest"} if how == "credsStore" else {
            "credHelpers": {reg.host: "pyregtest"}, "credsStore": "missing-helper"}
        client_env.docker_config.write_text(json.dumps(helper_config))
        client_env.run("login", reg.host, "-u", "bob", "-p", USERS["bob"])
        config = json.loads(client_env.docker_config.read_text())
        assert "auth" not in config.get("auths", {}).get(reg.host, {})
        stored = json.loads((bindir / "helper-store.json").read_text())
        assert stored[reg.host]["Secret"] == USERS["bob"]
        client_env.run("push", "-q", str(busybox_image.layout), f"{reg.host}/bb:1")
        client_env.run("logout", reg.host)
        assert json.loads((bindir / "helper-store.json").read_text()) == {}
        one_line_error(client_env.run("pull", f"{reg.host}/bb:1", check=False), "401")
