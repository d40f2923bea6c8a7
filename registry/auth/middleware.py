"""The auth layer: one ASGI middleware in front of the routes.

For every ``/v2/…`` request it works out what the request needs (repository + actions, the
catalog, or just a login for ``/v2/``), who the caller is (Basic against htpasswd, a Bearer
token, or nobody) and whether the access rules (or the token's grants) allow it. Refusals are
401 with a ``WWW-Authenticate`` challenge when the caller has not (validly) logged in and 403
``DENIED`` when it has. Allowed requests go on with ``request.state.auth`` (an
:class:`AuthContext`) so the catalog route can show only what the caller may pull. A
cross-repository mount whose source the caller may not pull becomes a plain upload (the mount
query is dropped), as the spec allows, so nothing leaks about the other repository.

The middleware also answers the built-in token endpoint (``/token``) so no route needs to know.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
from starlette.responses import Response

from pyreg.registry.auth.access import ANONYMOUS, AccessPolicy, Identity
from pyreg.registry.auth.ratelimit import FailedLoginLimiter, client_key
from pyreg.registry.errors import error_response
from pyreg.registry.shared_state import LoginCounts, TokenMarks, Unavailable
from pyreg.storage import routes
from pyreg.storage.names import name_problem
from pyreg.storage.netaddr import is_loopback

if TYPE_CHECKING:  # imported where the mode needs them: jwt + cryptography cost a worker ~17 MiB
    from pyreg.registry.auth.htpasswd import Htpasswd
    from pyreg.registry.auth.tokens import TokenIssuer, TokenVerifier, VerifiedToken

log = logging.getLogger("pyreg.auth")

Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]



@dataclass(frozen=True)
class Need:
    """What a request needs: ``kind`` is ``base`` (just a login), ``catalog`` or ``repository``."""

    kind: str
    repository: str = ""
    actions: frozenset[str] = frozenset()
    mount_from: str | None = None


def classify(method: str, path: str, query: str = "") -> Need:
    """Map a /v2 request to what it needs (storage/routes.py's grammar). Unknown paths under /v2
    need a login (the route 404s)."""
    route = routes.parse_path(path)
    if route is None or route.kind == "base":
        return Need("base")
    if route.kind == "catalog":
        return Need("catalog")
    mount_from = None
    if route.kind == "upload_start" and method == "POST" and query:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if "mount" in params and params.get("from"):
            mount_from = params["from"]
    return Need("repository", route.name, frozenset({routes.action(route, method)}), mount_from)


@dataclass
class AuthContext:
    """The caller, as the routes see it on ``request.state.auth``."""

    identity: Identity
    policy: AccessPolicy
    token: VerifiedToken | None = None

    @property
    def user(self) -> str | None:
        return self.identity.name

    def can(self, repository: str, action: str = "pull") -> bool:
        """May the caller do ``action`` on ``repository``? (Used to filter the catalog.)"""
        return self.policy.allows(self.identity, repository, action)


@dataclass
class AuthService:
    """Everything the middleware needs; built from the config by ``registry.auth.setup``."""

    mode: str = "none"  # none | htpasswd | token
    policy: AccessPolicy = field(default_factory=lambda: AccessPolicy(auth_enabled=False))
    realm: str = "pyreg"  # Basic realm, or the token realm URL ("" = this server's token_path)
    service: str = "pyreg"
    htpasswd: Htpasswd | None = None
    issuer: TokenIssuer | None = None
    verifier: TokenVerifier | None = None
    limiter: FailedLoginLimiter = field(default_factory=FailedLoginLimiter)
    token_path: str = "/token"
    token_body_limit: int = 64 * 1024
    hsts: str | None = None  # Strict-Transport-Security value, sent on TLS answers only
    external_host: str | None = None  # http.host: the registry's external base URL
    trust_forwarded: bool = False  # proxy.trustforwarded
    shared_logins: LoginCounts | None = None  # with redis: failures counted across every process
    shared_tokens: TokenMarks | None = None  # with redis and http.secret: tokens verified anywhere

    def token_realm(self, scope: Scope_) -> str:
        """The configured realm, else this server's token endpoint as the client reached it
        (``http.host``, or X-Forwarded-Proto/Host behind a trusted proxy, as Location URLs are)."""
        if self.realm:
            return self.realm
        if self.external_host:
            return self.external_host.rstrip("/") + self.token_path
        proto, host = str(scope.get("scheme", "http")), _header(scope, b"host") or "localhost"
        if self.trust_forwarded:
            fwd_host = (_header(scope, b"x-forwarded-host") or "").split(",")[0].strip()
            if fwd_host:
                host = fwd_host
                proto = (_header(scope, b"x-forwarded-proto") or "").split(",")[0].strip() or proto
        return f"{proto}://{host}{self.token_path}"

    async def check_password(self, client: str, user: str, password: str) -> Identity | Response:
        """The identity of a valid login, or the 401/429 answer; failures count per client
        (behind ``proxy.trustedproxies``, the client registry/proxy.py put in the scope)."""
        key = client_key(client)
        wait = await self._retry_after(key)
        if wait > 0:
            return error_response("TOOMANYREQUESTS", "too many failed logins from this address",
                                  headers={"Retry-After": str(int(wait) + 1)})
        ok = False
        if self.htpasswd is not None:
            ok = self.htpasswd.remembered(user, password) or await anyio.to_thread.run_sync(
                self.htpasswd.verify, user, password)
        if not ok:
            await self._failed(key)
            log.info("failed login for %r from %s", user, client)
            return error_response("UNAUTHORIZED", "invalid username or password",
                                  headers=self.basic_challenge())
        return self.policy.identity(user)

    async def verify_token(self, raw: str) -> VerifiedToken:
        """This process's cache, then a replica's mark in Redis, then the signature check."""
        assert self.verifier is not None
        hit = self.verifier.cached(raw)
        if hit is not None:
            return hit
        if self.shared_tokens is not None:
            try:
                known = await self.shared_tokens.known(raw)
            except Unavailable:
                known = False
            if known:
                token = self.verifier.claims_of_verified(raw)
                self.verifier.remember(raw, token)
                return token
        token = self.verifier.verify(raw)
        if self.shared_tokens is not None:
            from pyreg.registry.auth.tokens import LEEWAY

            await self.shared_tokens.mark(raw, token.expires, LEEWAY)
        return token

    async def _retry_after(self, key: str) -> float:
        if self.shared_logins is not None:
            try:
                return await self.shared_logins.retry_after(key)
            except Unavailable:
                pass  # Redis is down: this process's own counts (registry/shared_state.py)
        return self.limiter.retry_after(key)

    async def _failed(self, key: str) -> None:
        self.limiter.failed(key)  # kept as well, for when Redis goes away
        if self.shared_logins is not None:
            with contextlib.suppress(Unavailable):
                await self.shared_logins.failed(key)

    def basic_challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{_quote(self.realm or "pyreg")}",charset="UTF-8"'}


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _header(scope: Scope_, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _client(scope: Scope_) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def parse_basic(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from a Basic Authorization value, or None when malformed."""
    try:
        raw = base64.b64decode(header.split(None, 1)[1].strip(), validate=True).decode("utf-8")
    except (IndexError, ValueError, binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep and user else None


def _empty_basic(header: str) -> bool:
    """``Basic Og==`` (empty user and password): what containers/image sends with no login. Anonymous."""
    parts = header.split(None, 1)
    return len(parts) < 2 or parts[1].strip() in ("", "Og==")


def _scope_text(need: Need) -> str:
    if need.kind == "catalog":
        return routes.CATALOG_SCOPE
    if need.kind != "repository":
        return ""
    parts = [routes.repository_scope(need.repository, need.actions)]
    if need.mount_from and need.mount_from != need.repository:
        parts.append(routes.repository_scope(need.mount_from, ["pull"]))
    return " ".join(parts)


class AuthMiddleware:
    """Pure ASGI middleware (streams pass through untouched)."""

    def __init__(self, app: Callable[..., Awaitable[None]], service: AuthService) -> None:
        self.app = app
        self.s = service

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.s.hsts and scope.get("scheme") == "https":
            send = self._with_hsts(send)
        path: str = scope["path"]
        if self.s.issuer is not None and path in (self.s.token_path, self.s.token_path + "/jwks"):
            from pyreg.registry.auth.token_endpoint import jwks_endpoint, token_endpoint

            handler = token_endpoint if path == self.s.token_path else jwks_endpoint
            await handler(self.s, scope, receive, send)
            return
        if not (path == "/v2" or path.startswith("/v2/")):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        need = classify(method, path, scope.get("query_string", b"").decode("latin-1"))
        problem = name_problem(need.repository) if need.kind == "repository" else None
        if problem is not None:
            # No rule or scope can name it, so the answer is NAME_INVALID whoever asks (answered
            # here rather than passed on, so no route ever sees an unauthenticated request).
            await error_response("NAME_INVALID", problem, detail={"name": need.repository[:300]})(
                scope, receive, send)
            return
        outcome = await self.decide(scope, need)
        if isinstance(outcome, Response):  # uvicorn sends no body for HEAD
            await outcome(scope, receive, send)
            return
        scope.setdefault("state", {})["auth"] = outcome
        await self.app(scope, receive, send)

    def _with_hsts(self, send: Send) -> Send:
        value = (self.s.hsts or "").encode("latin-1")

        async def wrapped(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"strict-transport-security", value)]
            await send(message)

        return wrapped

    async def decide(self, scope: Scope_, need: Need) -> AuthContext | Response:
        s = self.s
        authz = _header(scope, b"authorization") or ""
        scheme = authz.split(None, 1)[0].lower() if authz else ""
        if s.mode == "token":
            return await self._decide_token(scope, need, authz if scheme == "bearer" else None)
        identity: Identity = ANONYMOUS
        if s.mode == "htpasswd" and scheme == "basic" and not _empty_basic(authz):
            creds = parse_basic(authz)
            if creds is None:
                return error_response("UNAUTHORIZED", "malformed Basic credentials",
                                      headers=s.basic_challenge())
            checked = await s.check_password(_client(scope), *creds)
            if isinstance(checked, Response):
                return checked
            identity = checked
        ctx = AuthContext(identity, s.policy)
        if need.kind == "base":
            allowed = s.mode == "none" or not identity.anonymous
        elif need.kind == "catalog":
            allowed = s.policy.may_list_catalog(identity)
        else:
            allowed = all(s.policy.allows(identity, need.repository, a) for a in need.actions)
        if not allowed:
            if identity.anonymous and s.mode != "none":
                return error_response("UNAUTHORIZED", "authentication required",
                                      detail=_detail(need), headers=s.basic_challenge())
            return error_response("DENIED", "requested access to the resource is denied",
                                  detail=_detail(need))
        if need.mount_from and not s.policy.allows(identity, need.mount_from, "pull"):
            _drop_mount(scope)
        return ctx

    async def _decide_token(self, scope: Scope_, need: Need, authz: str | None) -> AuthContext | Response:
        s = self.s
        assert s.verifier is not None

        def challenge(error: str | None, message: str, code: str = "UNAUTHORIZED") -> Response:
            value = f'Bearer realm="{_quote(s.token_realm(scope))}",service="{_quote(s.service)}"'
            text = _scope_text(need)
            if text:
                value += f',scope="{text}"'
            if error:
                value += f',error="{error}"'
            return error_response(code, message, detail=_detail(need), headers={"WWW-Authenticate": value})

        if authz is None:
            return challenge(None, "authentication required")
        from pyreg.registry.auth.tokens import InvalidToken  # token mode: loaded by build_service

        try:
            token = await s.verify_token(authz.split(None, 1)[1].strip() if " " in authz else "")
        except InvalidToken as e:
            return challenge("invalid_token", f"invalid token: {e}")
        identity = s.policy.identity(token.subject, token.groups)
        ctx = AuthContext(identity, s.policy, token)
        if need.kind == "base":
            return ctx
        if need.kind == "catalog":
            missing = [] if token.allows("registry", "catalog", "*") else ["*"]
        else:
            missing = [a for a in sorted(need.actions) if not token.allows("repository", need.repository, a)]
        if missing:
            # Our own issuer would never grant it to this user: a plain refusal, not a retry hint.
            if s.issuer is not None and not identity.anonymous and not (
                s.policy.may_list_catalog(identity) if need.kind == "catalog"
                else all(s.policy.allows(identity, need.repository, a) for a in missing)
            ):
                return error_response("DENIED", "requested access to the resource is denied",
                                      detail=_detail(need))
            return challenge("insufficient_scope", "the token does not grant this access")
        if s.policy.rules and need.kind == "repository" and not all(
            s.policy.allows(identity, need.repository, a) for a in need.actions
        ):
            # Configured rules hold on top of any issuer's grants (an external one, or ours before a
            # rule change): the token says yes, the registry's own rules say no.
            if identity.anonymous:
                return challenge("insufficient_scope", "the registry's access rules refuse this")
            return error_response("DENIED", "requested access to the resource is denied",
                                  detail=_detail(need))
        if need.mount_from and not (
            token.allows("repository", need.mount_from, "pull")
            and (not s.policy.rules or s.policy.allows(identity, need.mount_from, "pull"))
        ):
            _drop_mount(scope)
        return ctx


def _detail(need: Need) -> list[dict[str, str]] | None:
    if need.kind == "repository":
        return [{"Type": "repository", "Name": need.repository, "Action": a} for a in sorted(need.actions)]
    if need.kind == "catalog":
        return [{"Type": "registry", "Name": "catalog", "Action": "*"}]
    return None


def _drop_mount(scope: Scope_) -> None:
    """Turn a mount the caller may not make into a plain upload start."""
    params = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                           keep_blank_values=True) if k not in ("mount", "from")]
    scope["query_string"] = urlencode(params).encode("latin-1")


def warn_if_open(host: str, mode: str) -> None:
    """A loud warning when anyone on the network may read and write the registry."""
    if mode == "none" and not is_loopback(host):
        bar = "!" * 78
        msg = (f"\n{bar}\n!! WARNING: pyreg is serving on {host} WITHOUT AUTHENTICATION.\n"
               "!! Anyone who can reach this address can push, overwrite and delete images.\n"
               "!! Configure auth.htpasswd or auth.token (see deploy/config.yml).\n"
               f"{bar}\n")
        print(msg, file=sys.stderr, flush=True)
        log.warning("serving on %s without authentication", host)
