"""Registry authentication as an ``httpx.Auth`` generator flow: Basic and Docker Bearer tokens.

The flow (``response = yield request``) is the Docker token dance: send; on ``401`` read
``WWW-Authenticate``; for ``Basic`` resend with credentials; for ``Bearer`` ask the realm for a
token covering the request's scopes (anonymously when there are no credentials), resend with it;
on ``insufficient_scope`` ask again for the scopes the challenge names. Tokens are cached per
scope set until they expire, and once the scheme is known later requests are authorised up front
(so a streamed upload body is never sent twice). A refresh token (``identitytoken`` from
``docker login``, or one the token server hands back) is used with the OAuth2 POST form.

Where credentials go: only to the registry's own origin (scheme, host, port), and to the token
realm the registry names. Any other URL the registry hands us — an upload ``Location``, a blob
redirect to S3 (httpx itself strips ``Authorization`` on a cross-origin redirect) — is requested
without them, and its challenges are not answered. The realm may be another host (Docker's design:
Docker Hub's is auth.docker.io), but credentials (a password or a refresh token) go to it only
over https, or to the registry's own origin, or to a host the user allowed plain HTTP (loopback,
``insecure_registries``) — as docker's first token client refused "to send token credentials over
insecure channel". An anonymous token request may go anywhere the registry says.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from pyreg.storage import routes
from pyreg.storage.netaddr import is_loopback

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def _host_port(url: httpx.URL) -> tuple[str, int | None]:
    return url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


class Credentials(Protocol):
    """What the flow needs of a user's credentials (the client's credential files hand over
    their own record; the registry's pull-through cache its configured upstream login)."""

    @property
    def username(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def identity_token(self) -> str | None: ...


@dataclass(frozen=True)
class Login:
    """A plain ``Credentials``: a username and password (or an OAuth2 refresh token)."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None


class AuthError(Exception):
    """Authentication failed in a way the user must fix (bad credentials, token server refused)."""


@dataclass
class Challenge:
    scheme: str                     # "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        return self.params.get("scope", "").split()


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse one ``WWW-Authenticate`` header value (the first challenge we understand)."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme, params)


def request_scopes(request: httpx.Request) -> list[str]:
    """The token scopes a registry request needs: storage/routes.py parses the path as the
    registry does (right to left, so ``team/blobs/x`` is one repository)."""
    route = routes.parse_path(request.url.path)
    return routes.token_scopes(route, request.method, request.url.params.get("from"))


merge_scopes = routes.merge_scopes


class RegistryAuth(httpx.Auth):
    """Auth for one registry; shared by the threads of one command (token cache is locked)."""

    def __init__(self, credentials: Callable[[], Credentials | None] | Credentials | None = None,
                 host: str | None = None, plain_realm: Callable[[str], bool] = is_loopback) -> None:
        self.host = host            # the registry's host[:port]; None: every URL is the registry's
        self.plain_realm = plain_realm  # may credentials go to this host[:port] over plain HTTP?
        self.origin: httpx.URL | None = None  # scheme://host[:port] once the client has chosen one
        self._credentials_source = credentials
        self._credentials: Credentials | None = None
        self._loaded = not callable(credentials)
        if not callable(credentials):
            self._credentials = credentials
        self.scheme: str | None = None
        self.realm: str | None = None
        self.service: str | None = None
        self.refresh_token: str | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def credentials(self) -> Credentials | None:
        if not self._loaded:
            source = self._credentials_source
            self._credentials = source() if callable(source) else source
            self._loaded = True
            if self._credentials and self._credentials.identity_token:
                self.refresh_token = self._credentials.identity_token
        return self._credentials

    def _basic_header(self) -> str | None:
        creds = self.credentials
        if not creds or creds.username is None or creds.password is None:
            return None  # nothing, or an identity token only (used as a refresh token)
        raw = f"{creds.username}:{creds.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _cached(self, scopes: list[str]) -> str | None:
        key = " ".join(sorted(scopes))
        with self._lock:
            hit = self._tokens.get(key)
            if hit and hit[1] > time.monotonic():
                return hit[0]
            # a token for a superset of scopes also serves
            for k, (token, expiry) in self._tokens.items():
                if expiry > time.monotonic() and set(scopes) <= set(k.split()):
                    return token
        return None

    def own(self, url: httpx.URL) -> bool:
        """Is ``url`` on the registry's own origin (the only place Basic credentials and
        registry tokens are sent)?"""
        if self.host is None:
            return True
        if url.scheme not in ("http", "https"):
            return False
        if self.origin is not None:
            return url.scheme == self.origin.scheme and _host_port(url) == _host_port(self.origin)
        try:
            return _host_port(url) == _host_port(httpx.URL(f"{url.scheme}://{self.host}"))
        except httpx.InvalidURL:
            return False

    def _check_realm(self, realm: str, with_credentials: bool) -> None:
        try:
            url = httpx.URL(realm)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise AuthError(f"the registry named an invalid token realm {realm[:200]!r}")
        if not with_credentials or url.scheme == "https" or self.own(url):
            return
        netloc = url.netloc.decode("ascii", "replace")
        if self.plain_realm(netloc):
            return
        raise AuthError(f"token realm {realm} is plain HTTP on another host than the registry: "
                        "refusing to send your credentials there (the realm must be https, or "
                        f"list {netloc} in insecure_registries)")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self.own(request.url):
            # an upload Location or a Link on another host: it gets nothing of the user's
            request.headers.pop("Authorization", None)
            yield request
            return
        scopes = request_scopes(request)
        if "authorization" not in request.headers:
            if self.scheme == "basic":
                header = self._basic_header()
                if header:
                    request.headers["Authorization"] = header
            elif self.scheme == "bearer":
                token = self._cached(scopes)
                if token is None and self.realm:
                    token = yield from self._fetch_token(request, scopes)
                if token:
                    request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code not in (401, 403):
            return
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        if challenge is None:
            return
        if response.status_code == 403 and challenge.params.get("error") != "insufficient_scope":
            return
        self.scheme = challenge.scheme
        if challenge.scheme == "basic":
            header = self._basic_header()
            if header is None or request.headers.get("authorization") == header:
                return  # no credentials, or they were refused
            request.headers["Authorization"] = header
            yield request
            return
        self.realm = challenge.params.get("realm") or self.realm
        self.service = challenge.params.get("service", self.service)
        if not self.realm:
            raise AuthError("registry asked for a Bearer token but named no realm")
        wanted = merge_scopes(scopes, challenge.scopes)
        token = yield from self._fetch_token(request, wanted)
        if token is None:
            return
        if request.headers.get("authorization") == f"Bearer {token}":
            return  # the same token was just refused: nothing more to try
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    def _fetch_token(self, request: httpx.Request, scopes: list[str]
                     ) -> Generator[httpx.Request, httpx.Response, str | None]:
        assert self.realm is not None
        creds = self.credentials
        self._check_realm(self.realm, bool(self.refresh_token or self._basic_header()))
        params: list[tuple[str, Any]] = []
        if self.service:
            params.append(("service", self.service))
        response: httpx.Response | None = None
        if self.refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": self.refresh_token,
                    "client_id": "pyreg", "scope": " ".join(scopes)}
            if self.service:
                form["service"] = self.service
            token_request = httpx.Request("POST", self.realm, data=form,
                                          extensions={"pyreg_origin_only": self.realm})
            response = yield token_request
            response.read()
            if response.status_code in (404, 405):
                response = None  # no OAuth2 endpoint: fall back to GET
            elif response.status_code in (400, 401) and creds is not None and creds.password:
                self.refresh_token = None  # expired or revoked: log in again with the password
                response = None
        if response is None:
            params += [("scope", s) for s in scopes]
            headers = {}
            basic = self._basic_header()
            if basic and creds is not None and creds.username is not None:
                headers["Authorization"] = basic
                params += [("account", creds.username), ("client_id", "pyreg"), ("offline_token", "true")]
            token_request = httpx.Request("GET", self.realm, params=params, headers=headers)
            response = yield token_request
            response.read()
        if response.status_code in (401, 403):
            who = f"as {creds.username}" if creds and creds.username else "anonymously"
            raise AuthError(f"token server {self.realm} refused to authenticate {who}"
                            f" ({response.status_code})")
        if response.status_code != 200:
            raise AuthError(f"token server {self.realm} answered {response.status_code}")
        try:
            doc = json.loads(response.content)
        except ValueError:
            raise AuthError(f"token server {self.realm} sent no JSON") from None
        if not isinstance(doc, dict):
            raise AuthError(f"token server {self.realm} sent no JSON object")
        token = doc.get("token") or doc.get("access_token")
        if not token or not isinstance(token, str):
            raise AuthError(f"token server {self.realm} sent no token")
        if isinstance(doc.get("refresh_token"), str) and doc["refresh_token"]:
            self.refresh_token = doc["refresh_token"]
        try:
            expires_in = min(int(doc.get("expires_in") or 60), 86400)
        except (TypeError, ValueError, OverflowError):
            expires_in = 60
        with self._lock:
            self._tokens[" ".join(sorted(scopes))] = (token, time.monotonic() + max(10, expires_in - 10))
        return str(token)
