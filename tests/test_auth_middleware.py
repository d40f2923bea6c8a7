"""The auth middleware in process, in front of a stand-in /v2 app that echoes what reached it.

The real-server tests (``test_auth_registry.py``) check the same rules end to end with skopeo and
podman; these pin down the exact statuses, challenges and token endpoint answers.
"""

from __future__ import annotations

import base64
import json

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pyreg.registry.auth.access import AccessPolicy, parse_rules
from pyreg.registry.auth.htpasswd import Htpasswd
from pyreg.registry.auth.middleware import AuthMiddleware, AuthService, Need, classify
from pyreg.registry.auth.ratelimit import FailedLoginLimiter
from pyreg.registry.auth.scope import parse_scopes
from pyreg.registry.auth.tokens import TokenIssuer, TokenVerifier
from tests.fixtures.auth import USERS

RULES = [
    {"repository": "team/*", "users": ["alice"], "actions": ["pull", "push"]},
    {"repository": "team/*", "users": ["bob"], "actions": ["pull"]},
    {"repository": "*", "users": ["admin"], "actions": ["*"]},
    {"repository": "public/*", "anonymous": True, "actions": ["pull"]},
]
REPOS = ["team/a", "team/b", "public/x", "private/y"]


async def _echo(request: Request) -> JSONResponse:
    auth = request.state.auth
    return JSONResponse({"path": request.url.path, "query": request.url.query, "user": auth.user})


async def _catalog(request: Request) -> JSONResponse:
    auth = request.state.auth
    return JSONResponse({"repositories": [r for r in REPOS if auth.can(r, "pull")]})


def _app(service: AuthService) -> AuthMiddleware:
    inner = Starlette(
        routes=[
            Route("/v2/_catalog", _catalog),
            Route("/v2/{path:path}", _echo, methods=["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
        ]
    )
    return AuthMiddleware(inner, service)


def _basic(user: str, password: str | None = None) -> dict[str, str]:
    password = USERS[user] if password is None else password
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client(app: AuthMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reg.test")


@pytest.mark.parametrize(
    "method, path, query, need",
    [
        ("GET", "/v2/", "", Need("base")),
        ("GET", "/v2/_catalog", "n=10", Need("catalog")),
        ("GET", "/v2/a/b/manifests/latest", "", Need("repository", "a/b", frozenset({"pull"}))),
        ("HEAD", "/v2/a/blobs/sha256:00", "", Need("repository", "a", frozenset({"pull"}))),
        ("PUT", "/v2/a/manifests/v1", "", Need("repository", "a", frozenset({"push"}))),
        ("DELETE", "/v2/a/manifests/sha256:00", "", Need("repository", "a", frozenset({"delete"}))),
        ("DELETE", "/v2/a/blobs/sha256:00", "", Need("repository", "a", frozenset({"delete"}))),
        ("GET", "/v2/a/tags/list", "n=1", Need("repository", "a", frozenset({"pull"}))),
        ("GET", "/v2/a/referrers/sha256:00", "", Need("repository", "a", frozenset({"pull"}))),
        ("POST", "/v2/a/blobs/uploads/", "", Need("repository", "a", frozenset({"push"}))),
        (
            "POST",
            "/v2/a/blobs/uploads/",
            "mount=sha256:00&from=b/c",
            Need("repository", "a", frozenset({"push"}), "b/c"),
        ),
        ("PATCH", "/v2/a/blobs/uploads/u-1", "", Need("repository", "a", frozenset({"push"}))),
        ("GET", "/v2/a/blobs/uploads/u-1", "", Need("repository", "a", frozenset({"push"}))),
        ("DELETE", "/v2/a/blobs/uploads/u-1", "", Need("repository", "a", frozenset({"push"}))),
        ("GET", "/v2/blobs/manifests/blobs", "", Need("repository", "blobs", frozenset({"pull"}))),
        ("GET", "/v2/nonsense", "", Need("base")),
    ],
)
def test_classify(method: str, path: str, query: str, need: Need) -> None:
    assert classify(method, path, query) == need


# ---------------------------------------------------------------- htpasswd (Basic)


@pytest.fixture
def basic_service(htpasswd_users) -> AuthService:
    return AuthService(
        mode="htpasswd",
        policy=AccessPolicy(parse_rules(RULES)),
        realm="pyreg test",
        htpasswd=Htpasswd(htpasswd_users),
        limiter=FailedLoginLimiter(failures=5, window=60),
    )


async def test_basic_login_and_rules(basic_service: AuthService) -> None:
    async with _client(_app(basic_service)) as c:
        r = await c.get("/v2/")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="pyreg test",charset="UTF-8"'
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        assert (await c.get("/v2/", headers=_basic("alice"))).json()["user"] == "alice"
        assert (await c.get("/v2/", headers=_basic("alice", "nope"))).status_code == 401
        assert (await c.get("/v2/", headers=_basic("mallory", "x"))).status_code == 401
        assert (await c.get("/v2/", headers={"Authorization": "Basic !!!"})).status_code == 401
        # alice pushes to team/*, bob only pulls there
        assert (await c.put("/v2/team/a/manifests/1", headers=_basic("alice"))).status_code == 200
        r = await c.put("/v2/team/a/manifests/1", headers=_basic("bob"))
        assert r.status_code == 403
        assert r.json()["errors"][0]["code"] == "DENIED"
        assert "www-authenticate" not in r.headers
        assert (await c.get("/v2/team/a/manifests/1", headers=_basic("bob"))).status_code == 200
        assert (await c.delete("/v2/team/a/manifests/1", headers=_basic("alice"))).status_code == 403
        assert (await c.delete("/v2/team/a/manifests/1", headers=_basic("admin"))).status_code == 200
        # anonymous: pull public/*, nothing else, and a challenge rather than a bare refusal
        assert (await c.get("/v2/public/x/manifests/1")).status_code == 200
        assert (await c.head("/v2/public/x/blobs/sha256:00")).status_code == 200
        r = await c.put("/v2/public/x/manifests/1")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic ")
        r = await c.head("/v2/team/a/manifests/1")
        assert r.status_code == 401 and r.content == b""
        # the catalog shows only what the caller may pull
        assert (await c.get("/v2/_catalog", headers=_basic("bob"))).json()["repositories"] == [
            "team/a",
            "team/b",
            "public/x",
        ]
        assert (await c.get("/v2/_catalog")).json()["repositories"] == ["public/x"]


async def test_mount_needs_pull_on_the_source(basic_service: AuthService) -> None:
    async with _client(_app(basic_service)) as c:
        url = "/v2/team/a/blobs/uploads/?mount=sha256:00&from="
        mounted = await c.post(url + "team/b", headers=_basic("alice"))
        assert mounted.json()["query"] == "mount=sha256:00&from=team/b"
        # alice may not pull private/y: the mount becomes a plain upload
        plain = await c.post(url + "private/y", headers=_basic("alice"))
        assert plain.status_code == 200 and plain.json()["query"] == ""
        # and bob may not push to team/a at all
        assert (await c.post(url + "team/b", headers=_basic("bob"))).status_code == 403


async def test_failed_logins_are_rate_limited(basic_service: AuthService) -> None:
    async with _client(_app(basic_service)) as c:
        for _ in range(5):
            assert (await c.get("/v2/", headers=_basic("alice", "guess"))).status_code == 401
        r = await c.get("/v2/", headers=_basic("alice"))  # even the right password now waits
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(r.headers["retry-after"]) > 0


# ---------------------------------------------------------------- token auth


@pytest.fixture
def token_service(htpasswd_users, signing_key) -> AuthService:
    issuer = TokenIssuer(signing_key.private, issuer="pyreg-test", service="reg.test", ttl=120)
    return AuthService(
        mode="token",
        policy=AccessPolicy(parse_rules(RULES)),
        realm="",
        service="reg.test",
        htpasswd=Htpasswd(htpasswd_users),
        issuer=issuer,
        verifier=issuer.verifier(),
        limiter=FailedLoginLimiter(failures=50, window=60),
    )


async def _token(c: httpx.AsyncClient, user: str | None, *scopes: str) -> str:
    params = [("service", "reg.test"), *(("scope", s) for s in scopes)]
    r = await c.get("/token", params=params, headers=_basic(user) if user else {})
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_token_challenges(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        r = await c.get("/v2/")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="http://reg.test/token",service="reg.test"'
        r = await c.put("/v2/team/a/manifests/1")
        assert r.headers["www-authenticate"] == (
            'Bearer realm="http://reg.test/token",service="reg.test",scope="repository:team/a:pull,push"'
        )
        r = await c.get("/v2/_catalog")
        assert 'scope="registry:catalog:*"' in r.headers["www-authenticate"]
        r = await c.get("/v2/", headers=_bearer("garbage"))
        assert r.status_code == 401 and r.headers["www-authenticate"].endswith(',error="invalid_token"')
        # a valid token without the scope: try again with a better token
        tok = await _token(c, "alice", "repository:team/a:pull")
        assert (await c.get("/v2/", headers=_bearer(tok))).json()["user"] == "alice"
        r = await c.put("/v2/team/a/manifests/1", headers=_bearer(tok))
        assert r.status_code == 401 and r.headers["www-authenticate"].endswith(',error="insufficient_scope"')
        # ... but when the rules would never allow it, a plain 403
        r = await c.put(
            "/v2/team/a/manifests/1", headers=_bearer(await _token(c, "bob", "repository:team/a:push"))
        )
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"


async def test_token_grants_the_intersection(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        r = await c.get(
            "/token",
            params=[
                ("service", "reg.test"),
                ("scope", "repository:team/a:pull,push,delete"),
                ("scope", "repository:private/y:pull registry:catalog:*"),
            ],
            headers=_basic("alice"),
        )
        body = r.json()
        assert body["expires_in"] == 120 and body["issued_at"].endswith("Z")
        assert body["token"] == body["access_token"] and "refresh_token" not in body
        assert r.headers["cache-control"] == "no-store"
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["sub"] == "alice" and claims["aud"] == "reg.test" and claims["iss"] == "pyreg-test"
        assert claims["access"] == [
            {"type": "repository", "name": "team/a", "actions": ["pull", "push"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ]
        # anonymous tokens carry only what anonymous callers may do
        anon = jwt.decode(
            await _token(c, None, "repository:public/x:pull,push", "repository:team/a:pull"),
            options={"verify_signature": False},
        )
        assert anon["sub"] == "" and anon["access"] == [
            {"type": "repository", "name": "public/x", "actions": ["pull"]}
        ]
        assert (await c.get("/token", headers=_basic("alice", "bad"))).status_code == 401
        assert (await c.get("/token", params={"service": "elsewhere"})).status_code == 400
        assert (await c.get("/token", params={"scope": "nonsense"})).status_code == 400


async def test_token_for_one_repository_does_not_open_another(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        tok = _bearer(await _token(c, "admin", "repository:team/a:pull,push"))
        assert (await c.get("/v2/team/a/manifests/1", headers=tok)).status_code == 200
        for method, path in [
            ("GET", "/v2/team/b/manifests/1"),
            ("PUT", "/v2/team/b/manifests/1"),
            ("POST", "/v2/team/b/blobs/uploads/?mount=sha256:00&from=team/a"),
        ]:
            r = await c.request(method, path, headers=tok)
            assert r.status_code == 401 and "insufficient_scope" in r.headers["www-authenticate"]
        # mounting from b into a without pull on b: a plain upload
        r = await c.post("/v2/team/a/blobs/uploads/?mount=sha256:00&from=team/b", headers=tok)
        assert r.status_code == 200 and r.json()["query"] == ""
        both = _bearer(await _token(c, "admin", "repository:team/a:pull,push", "repository:team/b:pull"))
        r = await c.post("/v2/team/a/blobs/uploads/?mount=sha256:00&from=team/b", headers=both)
        assert r.json()["query"] == "mount=sha256:00&from=team/b"


async def test_catalog_needs_the_catalog_scope(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        r = await c.get("/v2/_catalog", headers=_bearer(await _token(c, "bob", "repository:team/a:pull")))
        assert r.status_code == 401 and 'scope="registry:catalog:*"' in r.headers["www-authenticate"]
        r = await c.get("/v2/_catalog", headers=_bearer(await _token(c, "bob", "registry:catalog:*")))
        assert r.json()["repositories"] == ["team/a", "team/b", "public/x"]


async def test_tampered_and_expired_tokens(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        tok = await _token(c, "alice", "repository:team/a:pull")
        head, body, sig = tok.split(".")
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        claims["access"][0]["name"] = "team/b"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        r = await c.get("/v2/team/b/manifests/1", headers=_bearer(f"{head}.{forged}.{sig}"))
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
        assert token_service.issuer is not None
        old = token_service.issuer.issue(
            "alice", parse_scopes(["repository:team/a:pull"]), now=1_000_000
        ).token
        r = await c.get("/v2/team/a/manifests/1", headers=_bearer(old))
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]


async def test_oauth2_post_and_refresh_tokens(token_service: AuthService) -> None:
    async with _client(_app(token_service)) as c:
        form = {
            "grant_type": "password",
            "username": "alice",
            "password": USERS["alice"],
            "service": "reg.test",
            "client_id": "pyreg-tests",
            "access_type": "offline",
            "scope": "repository:team/a:pull,push",
        }
        r = await c.post("/token", data=form)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scope"] == "repository:team/a:pull,push" and body["token_type"] == "Bearer"
        refresh = body["refresh_token"]
        # a refresh token is not an access token
        r = await c.get("/v2/team/a/manifests/1", headers=_bearer(refresh))
        assert r.status_code == 401
        r = await c.post(
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": "x",
                "scope": "repository:team/b:push",
            },
        )
        assert r.status_code == 200
        assert r.json()["scope"] == "repository:team/b:push"
        # GET with offline_token=true hands one out too, and it works as Bearer on /token
        r = await c.get(
            "/token",
            params={"offline_token": "true", "scope": "repository:team/a:pull"},
            headers=_basic("bob"),
        )
        refresh_bob = r.json()["refresh_token"]
        r = await c.get("/token", params={"scope": "repository:team/a:pull"}, headers=_bearer(refresh_bob))
        assert r.status_code == 200
        # refusals
        bad = dict(form, password="wrong")
        assert (await c.post("/token", data=bad)).json()["error"] == "invalid_grant"
        assert (await c.post("/token", data=dict(form, grant_type="magic"))).json()["error"] == (
            "unsupported_grant_type"
        )
        assert (
            await c.post("/token", data={k: v for k, v in form.items() if k != "client_id"})
        ).status_code == 400
        r = await c.post(
            "/token", data={"grant_type": "refresh_token", "refresh_token": "x.y.z", "client_id": "x"}
        )
        assert r.status_code == 401
        r = await c.post(
            "/token", content=b"a" * 70000, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 413
        assert (await c.post("/token", json=form)).status_code == 400


async def test_token_realm_behind_a_proxy(token_service: AuthService) -> None:
    token_service.trust_forwarded = True
    async with _client(_app(token_service)) as c:
        r = await c.get("/v2/", headers={"X-Forwarded-Host": "reg.example", "X-Forwarded-Proto": "https"})
        assert r.headers["www-authenticate"].startswith('Bearer realm="https://reg.example/token"')
        token_service.external_host = "https://registry.example.com/"
        r = await c.get("/v2/")
        assert r.headers["www-authenticate"].startswith('Bearer realm="https://registry.example.com/token"')
    token_service.trust_forwarded, token_service.external_host = False, None
    async with _client(_app(token_service)) as c:
        r = await c.get("/v2/", headers={"X-Forwarded-Host": "evil.example"})
        assert r.headers["www-authenticate"].startswith('Bearer realm="http://reg.test/token"')


def test_loud_warning_without_auth_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    from pyreg.registry.auth.middleware import is_loopback, warn_if_open

    assert (
        is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("registry.example")
    warn_if_open("127.0.0.1", "none")
    warn_if_open("0.0.0.0", "htpasswd")
    assert capsys.readouterr().err == ""
    warn_if_open("0.0.0.0", "none")
    err = capsys.readouterr().err
    assert "WITHOUT AUTHENTICATION" in err and "0.0.0.0" in err


# ---------------------------------------------------------------- built from the real config


def test_service_from_config(tmp_path, htpasswd_users, signing_key) -> None:
    from pyreg.registry.auth.setup import AuthSetupError, build_service
    from pyreg.registry.config import ConfigError, load_config

    def build(data: dict) -> AuthService:
        return build_service(load_config(data=data, environ={}))

    assert build({}).mode == "none"
    basic = build(
        {
            "auth": {
                "htpasswd": {"path": str(htpasswd_users)},
                "groups": {"dev": ["bob"]},
                "ratelimit": {"failures": 3, "window": "2m"},
            },
            "access": [{"repository": "team/*", "groups": ["dev"], "actions": ["push"]}],
        }
    )
    assert basic.mode == "htpasswd" and basic.limiter.failures == 3 and basic.limiter.window == 120
    assert basic.policy.actions(basic.policy.identity("bob"), "team/x") == {"push"}
    assert basic.policy.actions(basic.policy.identity("alice"), "team/x") == frozenset()
    token = build(
        {
            "auth": {
                "token": {
                    "signingkey": str(signing_key.key),
                    "certificate": str(signing_key.cert),
                    "expiration": "10m",
                    "kidformat": "thumbprint",
                },
                "htpasswd": {"path": str(htpasswd_users)},
            },
            "tls": {"certificate": str(signing_key.cert), "key": str(signing_key.key), "hsts": "1h"},
        }
    )
    assert token.mode == "token" and token.issuer is not None and token.issuer.ttl == 600
    assert token.htpasswd is not None and token.hsts == "max-age=3600" and token.realm == ""
    external = build(
        {"auth": {"token": {"realm": "https://auth.example/token", "rootcertbundle": str(signing_key.cert)}}}
    )
    assert external.issuer is None and external.verifier is not None
    with pytest.raises(ConfigError, match=r"auth\.token\.realm"):
        build({"auth": {"token": {"rootcertbundle": str(signing_key.cert)}}})
    with pytest.raises(ConfigError, match=r"auth\.token\.kidformat"):
        build({"auth": {"token": {"signingkey": str(signing_key.key), "kidformat": "x"}}})
    with pytest.raises(ConfigError, match=r"access\[0\].actions"):
        build({"access": [{"repository": "*", "actions": ["fly"]}]})
    (tmp_path / "not-a-key").write_text("nope")
    with pytest.raises(AuthSetupError, match="signing key"):
        build({"auth": {"token": {"signingkey": str(tmp_path / "not-a-key")}}})


async def test_configured_rules_hold_over_an_external_issuers_grants(signing_key) -> None:
    """A token may grant more than the registry's own rules allow; the rules win."""
    external = TokenIssuer(signing_key.private, issuer="ext", service="reg.test")
    rules = AccessPolicy(parse_rules([{"repository": "team/*", "users": ["alice"], "actions": ["pull"]}]))
    svc = AuthService(
        mode="token",
        policy=rules,
        realm="https://auth.example/token",
        service="reg.test",
        verifier=TokenVerifier(issuers=["ext"], audience="reg.test", keys=[external.public_key]),
    )
    everything = parse_scopes(["repository:team/a:pull,push,delete"])
    async with _client(_app(svc)) as c:
        alice = _bearer(external.issue("alice", everything).token)
        assert (await c.get("/v2/team/a/manifests/1", headers=alice)).status_code == 200
        r = await c.put("/v2/team/a/manifests/1", headers=alice)
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        anon = _bearer(external.issue(None, everything).token)
        r = await c.get("/v2/team/a/manifests/1", headers=anon)
        assert r.status_code == 401 and "insufficient_scope" in r.headers["www-authenticate"]
    # without rules the issuer is the authority
    svc.policy = AccessPolicy([], auth_enabled=True)
    async with _client(_app(svc)) as c:
        assert (await c.put("/v2/team/a/manifests/1", headers=alice)).status_code == 200


async def test_refresh_tokens_die_with_the_password(token_service: AuthService, htpasswd_users) -> None:
    from pyreg.registry.auth import htpasswd

    async with _client(_app(token_service)) as c:
        r = await c.get("/token", params={"offline_token": "true"}, headers=_basic("bob"))
        refresh = r.json()["refresh_token"]
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "t"}
        assert (await c.post("/token", data=form)).status_code == 200
        assert (await c.get("/token", headers=_bearer(refresh))).status_code == 200
        htpasswd.set_user(htpasswd_users, "bob", "a new password", cost=4)
        r = await c.post("/token", data=form)
        assert r.status_code == 401 and "password changed" in r.json()["error_description"]
        assert (await c.get("/token", headers=_bearer(refresh))).status_code == 401
        r = await c.get("/token", params={"offline_token": "true"}, headers=_basic("bob", "a new password"))
        fresh = r.json()["refresh_token"]
        assert (await c.post("/token", data=dict(form, refresh_token=fresh))).status_code == 200
        htpasswd.delete_user(htpasswd_users, "bob")
        r = await c.post("/token", data=dict(form, refresh_token=fresh))
        assert r.status_code == 401 and "no longer exists" in r.json()["error_description"]


async def test_rules_without_authentication() -> None:
    """auth off + rules: everyone is anonymous, so the anonymous rules decide, with 403 (no login
    could change the answer, so no challenge)."""
    rules = [
        {"repository": "mirror/*", "anonymous": True, "actions": ["pull"]},
        {"repository": "*", "anonymous": True, "actions": ["*"]},
    ]
    svc = AuthService(mode="none", policy=AccessPolicy(parse_rules(rules), auth_enabled=False))
    async with _client(_app(svc)) as c:
        assert (await c.get("/v2/")).status_code == 200
        assert (await c.get("/v2/mirror/x/manifests/1")).status_code == 200
        r = await c.put("/v2/mirror/x/manifests/1")
        assert r.status_code == 403 and "www-authenticate" not in r.headers
        assert (await c.put("/v2/scratch/x/manifests/1")).status_code == 200
