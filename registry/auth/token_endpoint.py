"""The built-in token endpoint of the Docker token authentication spec.

``GET /token?service=…&scope=…&offline_token=true`` with Basic credentials or none (an
anonymous token), and the OAuth2 form ``POST /token`` with ``grant_type=password`` or
``grant_type=refresh_token``. The token grants the asked scopes cut down to what the access
rules allow the caller (possibly nothing: a token for an anonymous caller with no rights is
still a token, and the registry then refuses the request itself). Refresh tokens are JWTs
signed by the same key with a different audience, and are honoured only while their user is
still in the htpasswd file.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response

from pyreg.registry.auth.access import ANONYMOUS, Identity
from pyreg.registry.auth.middleware import AuthService, _client, _empty_basic, _header, parse_basic
from pyreg.registry.auth.scope import ScopeError, format_scopes, requested_scopes
from pyreg.registry.auth.tokens import InvalidToken, public_jwk

Scope_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _TooLarge(Exception):
    pass


async def _read_body(scope: Scope_, receive: Receive, limit: int) -> bytes:
    length = _header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise _TooLarge
        chunks.append(body)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _oauth_error(status: int, error: str, description: str,
                 headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={**_NO_STORE, **(headers or {})})


def _docker_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status,
                        headers={**_NO_STORE, **(headers or {})})


async def token_endpoint(s: AuthService, scope: Scope_, receive: Receive, send: Send) -> None:
    response = await _handle(s, scope, receive)
    await response(scope, receive, send)


async def jwks_endpoint(s: AuthService, scope: Scope_, receive: Receive, send: Send) -> None:
    """``GET /token/jwks``: the signing key as a JWKS, for verifiers that take one (Distribution 3's
    ``jwks``, or another pyreg's ``auth.token.jwks``)."""
    assert s.issuer is not None
    jwk = {**public_jwk(s.issuer.public_key), "kid": s.issuer.headers["kid"], "alg": s.issuer.algorithm,
           "use": "sig"}
    await JSONResponse({"keys": [jwk]}, headers={"Cache-Control": "max-age=300"})(scope, receive, send)


def _version(s: AuthService, user: str) -> str:
    return (s.htpasswd.version(user) or "") if s.htpasswd is not None else ""


def _refresh_user(s: AuthService, raw: str) -> tuple[str, str]:
    """(user, "") for a refresh token still good, else ("", why not)."""
    assert s.issuer is not None
    try:
        user, version = s.issuer.refresh_claims(raw)
    except InvalidToken as e:
        return "", f"invalid refresh token: {e}"
    if s.htpasswd is not None:
        current = s.htpasswd.version(user)
        if current is None:
            return "", "user no longer exists"
        if version != current:
            return "", "the password changed since this refresh token was issued"
    return user, ""


async def _handle(s: AuthService, scope: Scope_, receive: Receive) -> Response:
    method = scope["method"]
    if method == "POST":
        return await _post(s, scope, receive)
    if method not in ("GET", "HEAD"):
        return _docker_error(405, "UNSUPPORTED", "the token endpoint takes GET or POST",
                             {"Allow": "GET, POST"})
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    service = next((v for k, v in query if k == "service"), None)
    if service is not None and service != s.service:
        return _docker_error(400, "UNAUTHORIZED", f"this endpoint issues tokens for {s.service!r}, "
                             f"not {service!r}")
    try:
        scopes = requested_scopes(v for k, v in query if k == "scope")
    except ScopeError as e:
        return _docker_error(400, "UNAUTHORIZED", str(e))
    offline = next((v for k, v in query if k == "offline_token"), "").lower() == "true"
    identity: Identity = ANONYMOUS
    authz = _header(scope, b"authorization") or ""
    if authz[:6].lower() == "basic " and not _empty_basic(authz):
        creds = parse_basic(authz)
        if creds is None:
            return _docker_error(401, "UNAUTHORIZED", "malformed Basic credentials", s.basic_challenge())
        checked = await s.check_password(_client(scope), *creds)
        if isinstance(checked, Response):
            checked.headers.update(_NO_STORE)
            return checked
        identity = checked
    elif authz[:7].lower() == "bearer ":
        # A client that holds a refresh token may present it here as well.
        user_or_error = _refresh_user(s, authz[7:].strip())
        if user_or_error[1]:
            return _docker_error(401, "UNAUTHORIZED", user_or_error[1], s.basic_challenge())
        identity = s.policy.identity(user_or_error[0])
    granted = s.policy.grant(identity, scopes)
    assert s.issuer is not None
    issued = s.issuer.issue(identity.name, granted)
    body: dict[str, Any] = {"token": issued.token, "access_token": issued.token,
                            "expires_in": issued.expires_in, "issued_at": issued.issued_at}
    if offline and identity.name is not None:
        body["refresh_token"] = s.issuer.issue_refresh(identity.name, version=_version(s, identity.name))
    return JSONResponse(body, headers=_NO_STORE)


async def _post(s: AuthService, scope: Scope_, receive: Receive) -> Response:
    assert s.issuer is not None
    ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return _oauth_error(400, "invalid_request", "expected an application/x-www-form-urlencoded body")
    try:
        raw = await _read_body(scope, receive, s.token_body_limit)
    except _TooLarge:
        return _oauth_error(413, "invalid_request", f"body larger than {s.token_body_limit} bytes")
    try:
        form = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the form is not UTF-8")
    if form.get("service") not in (None, s.service):
        return _oauth_error(400, "invalid_request", f"this endpoint issues tokens for {s.service!r}")
    if not form.get("client_id"):
        return _oauth_error(400, "invalid_request", "client_id is required")
    try:
        scopes = requested_scopes([form.get("scope", "")])
    except ScopeError as e:
        return _oauth_error(400, "invalid_scope", str(e))
    grant = form.get("grant_type")
    refresh: str | None = None
    if grant == "password":
        user, password = form.get("username", ""), form.get("password", "")
        if not user:
            return _oauth_error(400, "invalid_request", "username is required")
        checked = await s.check_password(_client(scope), user, password)
        if isinstance(checked, Response):
            if checked.status_code == 429:
                return _oauth_error(429, "invalid_grant", "too many failed logins from this address",
                                    {"Retry-After": checked.headers.get("Retry-After", "60")})
            return _oauth_error(401, "invalid_grant", "invalid username or password")
        identity = checked
        if form.get("access_type") == "offline":
            refresh = s.issuer.issue_refresh(user, version=_version(s, user))
    elif grant == "refresh_token":
        user, problem = _refresh_user(s, form.get("refresh_token", ""))
        if problem:
            return _oauth_error(401, "invalid_grant", problem)
        identity = s.policy.identity(user)
        refresh = form.get("refresh_token")
    else:
        return _oauth_error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")
    granted = s.policy.grant(identity, scopes)
    issued = s.issuer.issue(identity.name, granted)
    body: dict[str, Any] = {"access_token": issued.token, "token_type": "Bearer",
                            "scope": format_scopes(granted), "expires_in": issued.expires_in,
                            "issued_at": issued.issued_at}
    if refresh:
        body["refresh_token"] = refresh
    return Response(json.dumps(body), media_type="application/json", headers=_NO_STORE)
