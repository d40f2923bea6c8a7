"""Docker token auth on a real ``pyreg serve``: pyreg's own /token with skopeo and podman, scoped
tokens, refused tokens, an external issuer, and CNCF Distribution trusting pyreg's tokens."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from pyreg.registry.auth.scope import parse_scopes
from pyreg.registry.auth.tokens import TokenIssuer, libtrust_key_id
from tests.fixtures.auth import ACCESS, USERS, CertificateAuthority, SigningKey, podman_login_push_pull
from tests.fixtures.peers import DistributionRegistry, Podman, Skopeo, tagged
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers

SERVICE = "pyreg-test"

@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Auth does not touch storage: filesystem only (the API suites cover the drivers)."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


def token_config(signing_key: SigningKey, htpasswd_users: Path, **extra: Any) -> dict[str, Any]:
    token = {
        "service": SERVICE,
        "issuer": "pyreg-test-issuer",
        "signingkey": str(signing_key.key),
        "certificate": str(signing_key.cert),
        **extra,
    }
    return {"auth": {"token": token, "htpasswd": {"path": str(htpasswd_users)}}, "access": ACCESS}


@pytest.fixture
def server(make_registry_server: Any, signing_key: SigningKey, htpasswd_users: Path) -> Any:
    return make_registry_server(token_config(signing_key, htpasswd_users))


def get_token(server: Any, user: str | None, *scopes: str) -> str:
    auth = (user, USERS[user]) if user else None
    r = httpx.get(
        f"{server.url}/token", params=[("service", SERVICE), *(("scope", s) for s in scopes)], auth=auth
    )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_skopeo_login_push_pull(
    server: Any, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    skopeo.login(server.host, "alice", USERS["alice"])
    ref = tagged(server.host, "team/app", "1")
    skopeo.copy(busybox_image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == busybox_image.manifest
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:1")
    assert read_layout(tmp_path / "out", "1").manifest_digest == busybox_image.manifest_digest
    assert skopeo.list_tags(f"docker://{server.host}/team/app") == ["1"]
    # the pull-only user is refused the push with 403 DENIED (not a token retry loop)
    r = skopeo.copy(
        busybox_image.oci_ref,
        tagged(server.host, "team/app", "2"),
        "--dest-creds",
        "bob:" + USERS["bob"],
        check=False,
    )
    assert r.returncode != 0 and "denied" in r.stderr.lower()
    # and a wrong password never gets a token
    assert skopeo.login(server.host, "alice", "wrong", check=False).returncode != 0


def test_skopeo_copy_with_dest_creds_and_anonymous_pull(
    server: Any, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    skopeo.copy(
        busybox_image.oci_ref,
        tagged(server.host, "public/bb", "1"),
        "--dest-creds",
        "admin:" + USERS["admin"],
    )
    skopeo.copy(
        busybox_image.oci_ref, tagged(server.host, "team/bb", "1"), "--dest-creds", "admin:" + USERS["admin"]
    )
    skopeo.copy(tagged(server.host, "public/bb", "1"), f"oci:{tmp_path / 'anon'}:1")  # anonymous token
    assert read_layout(tmp_path / "anon", "1").manifest_digest == busybox_image.manifest_digest
    r = skopeo.copy(tagged(server.host, "team/bb", "1"), f"oci:{tmp_path / 'no'}:1", check=False)
    assert r.returncode != 0
    r = skopeo.copy(busybox_image.oci_ref, tagged(server.host, "public/bb", "2"), check=False)
    assert r.returncode != 0


def test_podman_login_push_pull(server: Any, podman: Podman, busybox_image: TestImage) -> None:
    podman_login_push_pull(podman, server.host, busybox_image)


def test_token_for_a_cannot_touch_b(server: Any, busybox_image: TestImage) -> None:
    layer = busybox_image.layer_digests[0]
    admin_all = bearer(
        get_token(server, "admin", "repository:team/a:pull,push", "repository:team/b:pull,push")
    )
    with httpx.Client(base_url=server.url) as c:
        for repo in ("team/a", "team/b"):
            for digest in (busybox_image.config_digest, layer):
                r = c.post(
                    f"/v2/{repo}/blobs/uploads/",
                    params={"digest": digest},
                    content=busybox_image.blob(digest),
                    headers=admin_all,
                )
                assert r.status_code == 201, r.text
            r = c.put(
                f"/v2/{repo}/manifests/1",
                content=busybox_image.manifest,
                headers={**admin_all, "Content-Type": str(busybox_image.manifest_json["mediaType"])},
            )
            assert r.status_code == 201, r.text
        only_a = bearer(get_token(server, "admin", "repository:team/a:pull,push"))
        assert c.get("/v2/team/a/manifests/1", headers=only_a).status_code == 200
        refusals = [
            c.get("/v2/team/b/manifests/1", headers=only_a),
            c.get(f"/v2/team/b/blobs/{layer}", headers=only_a),
            c.put("/v2/team/b/manifests/2", content=busybox_image.manifest, headers=only_a),
            c.post("/v2/team/b/blobs/uploads/", headers=only_a),
            c.post("/v2/team/b/blobs/uploads/", params={"mount": layer, "from": "team/a"}, headers=only_a),
            c.delete("/v2/team/a/manifests/1", headers=only_a),
        ]
        for r in refusals:
            assert r.status_code == 401, (r.request.method, r.request.url, r.status_code)
            assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        # mounting b's blob into a without pull on b: a plain upload, nothing mounted
        r = c.post("/v2/team/a/blobs/uploads/", params={"mount": layer, "from": "team/b"}, headers=only_a)
        assert r.status_code == 202
        # with pull on b the mount happens
        a_and_b = bearer(get_token(server, "admin", "repository:team/a:pull,push", "repository:team/b:pull"))
        c.delete(f"/v2/team/a/blobs/{layer}", headers=admin_all)  # may be 202 or 405: only the mount matters
        r = c.post("/v2/team/a/blobs/uploads/", params={"mount": layer, "from": "team/b"}, headers=a_and_b)
        assert r.status_code == 201, r.text


def test_expired_tampered_and_foreign_tokens_are_refused(
    server: Any, signing_key: SigningKey, auth_ca: CertificateAuthority
) -> None:
    good = get_token(server, "alice", "repository:team/a:pull")
    head, body, sig = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["access"][0]["name"] = "team/b"
    tampered = (
        head + "." + base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + sig
    )
    issuer = TokenIssuer(signing_key.private, issuer="pyreg-test-issuer", service=SERVICE)
    scopes = parse_scopes(["repository:team/a:pull"])
    expired = issuer.issue("alice", scopes, now=1_000_000).token
    wrong_audience = (
        TokenIssuer(signing_key.private, issuer="pyreg-test-issuer", service="other")
        .issue("alice", scopes)
        .token
    )
    stranger = (
        TokenIssuer(auth_ca.key, issuer="pyreg-test-issuer", service=SERVICE).issue("alice", scopes).token
    )
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/team/a/tags/list", headers=bearer(good)).status_code in (200, 404)
        for bad in (tampered, expired, wrong_audience, stranger, "x.y.z"):
            r = c.get("/v2/team/a/tags/list", headers=bearer(bad))
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == (
                f'Bearer realm="{server.url}/token",service="{SERVICE}",'
                'scope="repository:team/a:pull",error="invalid_token"'
            )


def test_token_endpoint_answers(server: Any, signing_key: SigningKey) -> None:
    with httpx.Client(base_url=server.url) as c:
        r = c.get(
            "/token",
            params={"service": SERVICE, "scope": "repository:team/a:pull,push", "offline_token": "true"},
            auth=("alice", USERS["alice"]),
        )
        body = r.json()
        assert set(body) >= {"token", "access_token", "expires_in", "issued_at", "refresh_token"}
        header = jwt.get_unverified_header(body["token"])
        assert header["alg"] == "ES256"
        assert header["kid"] == libtrust_key_id(signing_key.private.public_key())
        assert len(header["x5c"]) == 1
        r = c.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": body["refresh_token"],
                "client_id": "tests",
                "service": SERVICE,
                "scope": "repository:team/a:pull",
            },
        )
        assert r.status_code == 200 and r.json()["scope"] == "repository:team/a:pull"
        r = c.post(
            "/token",
            data={
                "grant_type": "password",
                "username": "bob",
                "password": USERS["bob"],
                "client_id": "tests",
                "scope": "repository:team/a:pull,push",
            },
        )
        assert r.json()["scope"] == "repository:team/a:pull"
        big = c.post(
            "/token", content=b"x" * (1 << 20), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert big.status_code == 413
        # the catalog needs registry:catalog:*
        assert (
            c.get(
                "/v2/_catalog", headers=bearer(get_token(server, "bob", "repository:team/a:pull"))
            ).status_code
            == 401
        )
        r = c.get("/v2/_catalog", headers=bearer(get_token(server, "bob", "registry:catalog:*")))
        assert r.status_code == 200


def test_external_issuer(
    make_registry_server: Any,
    auth_ca: CertificateAuthority,
    signing_key: SigningKey,
    htpasswd_users: Path,
    skopeo: Skopeo,
    busybox_image: TestImage,
) -> None:
    """pyreg B trusts pyreg A's tokens through a certificate bundle; skopeo logs in at A's /token."""
    issuer_server = make_registry_server(token_config(signing_key, htpasswd_users))
    verifier = make_registry_server(
        {
            "auth": {
                "token": {
                    "realm": f"{issuer_server.url}/token",
                    "service": SERVICE,
                    "issuer": "pyreg-test-issuer",
                    "rootcertbundle": str(signing_key.cert),
                }
            },
            "access": ACCESS,
        }
    )
    ref = tagged(verifier.host, "team/ext", "1")
    skopeo.copy(busybox_image.oci_ref, ref, "--dest-creds", "alice:" + USERS["alice"])
    assert skopeo.inspect_raw(ref, "--creds", "bob:" + USERS["bob"]) == busybox_image.manifest
    r = httpx.get(f"{verifier.url}/v2/")
    assert r.headers["www-authenticate"] == f'Bearer realm="{issuer_server.url}/token",service="{SERVICE}"'
    assert httpx.get(f"{verifier.url}/token").status_code == 404  # B issues nothing itself
    # a key the bundle does not hold is refused, even with the right issuer and audience
    rogue = (
        TokenIssuer(auth_ca.key, issuer="pyreg-test-issuer", service=SERVICE)
        .issue("alice", parse_scopes(["repository:team/ext:pull"]))
        .token
    )
    assert httpx.get(f"{verifier.url}/v2/team/ext/tags/list", headers=bearer(rogue)).status_code == 401


class TokenAuthDistribution(DistributionRegistry):
    """Distribution 2.8 configured to trust pyreg's token endpoint."""

    def __init__(self, root: Path, workdir: Path, token: dict[str, str]) -> None:
        super().__init__(root, workdir)
        self.token = token

    def write_config(self) -> None:
        super().write_config()
        config = json.loads(self.config_path.read_text())
        config["auth"] = {"token": self.token}
        self.config_path.write_text(json.dumps(config))


def start_token_distribution(tmp_path: Path, pyreg_url: str,
                             signing_key: SigningKey) -> TokenAuthDistribution:
    """A started Distribution registry that trusts the tokens of the pyreg at ``pyreg_url``."""
    dist = TokenAuthDistribution(
        tmp_path / "dist-root",
        tmp_path / "dist",
        {
            "realm": f"{pyreg_url}/token",
            "service": SERVICE,
            "issuer": "pyreg-test-issuer",
            "rootcertbundle": str(signing_key.cert),
        },
    )
    dist.start()
    return dist


def test_distribution_trusts_pyreg_tokens(
    server: Any, signing_key: SigningKey, tmp_path: Path, skopeo: Skopeo, busybox_image: TestImage
) -> None:
    dist = start_token_distribution(tmp_path, server.url, signing_key)
    try:
        ref = tagged(dist.host, "team/dist", "1")
        skopeo.copy(busybox_image.oci_ref, ref, "--dest-creds", "alice:" + USERS["alice"])
        assert skopeo.inspect_raw(ref, "--creds", "alice:" + USERS["alice"]) == busybox_image.manifest
        r = skopeo.copy(
            busybox_image.oci_ref,
            tagged(dist.host, "team/dist", "2"),
            "--dest-creds",
            "bob:" + USERS["bob"],
            check=False,
        )
        assert r.returncode != 0  # pyreg's rules granted bob no push, and Distribution holds to it
    finally:
        dist.stop()


def test_distribution_trusts_pyreg_tokens_by_kid_alone(
    make_registry_server: Any,
    signing_key: SigningKey,
    htpasswd_users: Path,
    tmp_path: Path,
    skopeo: Skopeo,
    busybox_image: TestImage,
) -> None:
    """Without the certificate (no x5c) Distribution 2.8 finds the key by its libtrust key id."""
    config = token_config(signing_key, htpasswd_users)
    del config["auth"]["token"]["certificate"]
    server = make_registry_server(config)
    dist = start_token_distribution(tmp_path, server.url, signing_key)
    try:
        ref = tagged(dist.host, "team/dist", "1")
        skopeo.copy(busybox_image.oci_ref, ref, "--dest-creds", "alice:" + USERS["alice"])
    finally:
        dist.stop()


def test_pyreg_client_with_token_auth(server: Any, client_env: Any, busybox_image: TestImage) -> None:
    """pyreg's own client through the Bearer flow of pyreg's token endpoint."""
    client_env.run("login", server.host, "-u", "alice", "--password-stdin", input=USERS["alice"] + "\n")
    ref = f"{server.host}/team/pyreg:1"
    client_env.run("push", "-q", f"{busybox_image.layout}:{busybox_image.tag}", ref)
    client_env.run("pull", "-q", "--no-extract", ref)
    tok = get_token(server, "alice", "repository:team/pyreg:pull")
    r = httpx.get(
        f"{server.url}/v2/team/pyreg/manifests/1",
        headers={**bearer(tok), "Accept": str(busybox_image.manifest_json["mediaType"])},
    )
    assert r.content == busybox_image.manifest
    client_env.run("logout", server.host)
    client_env.run("login", server.host, "-u", "bob", "--password-stdin", input=USERS["bob"] + "\n")
    client_env.run("pull", "-q", "--no-extract", ref)
    r2 = client_env.run(
        "push",
        "-q",
        f"{busybox_image.layout}:{busybox_image.tag}",
        f"{server.host}/team/pyreg:2",
        check=False,
    )
    assert r2.returncode != 0


def test_jwks_of_the_builtin_issuer_lets_another_pyreg_verify(
    make_registry_server: Any,
    signing_key: SigningKey,
    htpasswd_users: Path,
    skopeo: Skopeo,
    busybox_image: TestImage,
    tmp_path: Path,
) -> None:
    issuer_server = make_registry_server(token_config(signing_key, htpasswd_users, kidformat="thumbprint"))
    jwks = httpx.get(f"{issuer_server.url}/token/jwks").json()
    assert jwks["keys"][0]["kid"] == jwt.get_unverified_header(get_token(issuer_server, "alice"))["kid"]
    (tmp_path / "issuer.jwks").write_text(json.dumps(jwks))
    verifier = make_registry_server(
        {
            "auth": {
                "token": {
                    "realm": f"{issuer_server.url}/token",
                    "service": SERVICE,
                    "issuer": "pyreg-test-issuer",
                    "jwks": str(tmp_path / "issuer.jwks"),
                }
            },
            "access": ACCESS,
        }
    )
    ref = tagged(verifier.host, "team/jwks", "1")
    skopeo.copy(busybox_image.oci_ref, ref, "--dest-creds", "alice:" + USERS["alice"])
    assert skopeo.inspect_raw(ref, "--creds", "alice:" + USERS["alice"]) == busybox_image.manifest


def test_tokens_hold_across_workers(
    make_registry_server: Any,
    signing_key: SigningKey,
    htpasswd_users: Path,
    busybox_image: TestImage,
    skopeo: Skopeo,
) -> None:
    """Every worker signs with and trusts the same key: a token from one is good on the others."""
    server = make_registry_server(token_config(signing_key, htpasswd_users), workers=2)
    skopeo.copy(
        busybox_image.oci_ref, tagged(server.host, "team/w", "1"), "--dest-creds", "alice:" + USERS["alice"]
    )
    tokens = [get_token(server, "bob", "repository:team/w:pull") for _ in range(6)]
    for tok in tokens:
        for _ in range(4):  # new connections land on either worker
            r = httpx.get(f"{server.url}/v2/team/w/tags/list", headers=bearer(tok))
            assert r.status_code == 200 and r.json()["tags"] == ["1"]
