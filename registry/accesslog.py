"""Request ids, access logs (and metrics, the API-version header): the outermost ASGI middleware.

Each request gets an id: the client's (or the proxy's) ``X-Request-Id`` when it is a sane token
(nginx's ``$request_id``, a UUID), else a new one. It is echoed in the ``X-Request-Id`` response
header, kept in ``scope["state"]["request_id"]`` (webhook events carry it), and logged.

When the request is over, the ``pyreg.access`` logger writes one record with the fields
``method``, ``path``, ``query``, ``protocol``, ``status``, ``bytes_in``, ``bytes_out`` (body bytes),
``duration_ms``, ``remote_addr`` (the client; behind a trusted proxy, uvicorn has already put the
forwarded address there), ``user`` (when auth identified one), ``request_id`` and ``user_agent``.
With ``log.format: json`` that is one JSON object per line (registry/logs.py); in text it is a
Common-Log-like line. ``log.accesslog.disabled`` turns it off; uvicorn's own access log stays off,
so there is exactly one line per request.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyreg.registry.errors import API_VERSION, API_VERSION_HEADER

if TYPE_CHECKING:
    from pyreg.registry.metrics import MetricsEndpoint

log = logging.getLogger("pyreg.access")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_API_VERSION = (API_VERSION_HEADER.lower().encode(), API_VERSION.encode())
_getrandbits = random.getrandbits  # reseeded by CPython in every forked child


def request_id(scope: Scope) -> str:
    """The client's sane ``X-Request-Id``, else 128 fresh random bits in hex (a uuid4's length).
    Not a secret, only a label, so the non-cryptographic generator is enough and ~10x cheaper than
    ``uuid4`` (a syscall and an object per request)."""
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID_HEADER and _SANE_ID.match(value):
            return bytes(value).decode("ascii")
    return f"{_getrandbits(128):032x}"


class RequestMiddleware:
    """The per-request layer, outermost: request id, the API-version header on /v2 answers,
    Prometheus metrics (and their scrape endpoint), and the access-log line.

    One ASGI layer instead of three, so every response message passes one ``send`` wrapper and
    every request-body message one ``receive`` wrapper (on a HEAD blob the wrappers and their
    closures were a measurable share of the request). Metrics time the whole request; scrapes of
    the metrics endpoint are logged but not counted, and registry auth never sees them.
    """

    def __init__(self, app: ASGIApp, enabled: bool = True, metrics: MetricsEndpoint | None = None) -> None:
        self.app = app
        self.enabled = enabled  # the access log
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        header = (REQUEST_ID_HEADER, rid.encode())
        path: str = scope["path"]
        metrics = self.metrics
        if metrics is not None and path == metrics.path:  # a scrape: logged, not counted
            await self._scrape(scope, metrics, send, header)
            return
        api = path.startswith("/v2")
        counts = [500, 0, 0]  # status, body bytes in, body bytes out

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts[1] += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                counts[2] += len(message.get("body", b""))
            elif message["type"] == "pyreg.sendfile":  # file bytes the kernel sends (registry/zerocopy.py)
                counts[2] += int(message["count"])
            elif message["type"] == "http.response.start":
                counts[0] = int(message["status"])
                headers = list(message.get("headers", ()))
                if api and not any(k == _API_VERSION[0] for k, _ in headers):
                    headers.append(_API_VERSION)
                headers.append(header)
                message["headers"] = headers
            await send(message)

        if metrics is not None:
            metrics.started()
        start = time.perf_counter()
        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            seconds = time.perf_counter() - start
            direct = (scope.get("extensions") or {}).get("pyreg.directbody")
            if direct:  # body bytes a thread received (registry/directbody.py)
                counts[1] += direct.get("received", 0)
            if metrics is not None:
                metrics.finished(scope, path, counts[0], seconds, counts[1], counts[2])
            if self.enabled and log.isEnabledFor(logging.INFO):
                self._log(scope, counts, seconds * 1000)

    async def _scrape(self, scope: Scope, metrics: MetricsEndpoint, send: Send,
                      header: tuple[bytes, bytes]) -> None:
        counts = [500, 0, 0]

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts[0] = int(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            elif message["type"] == "http.response.body":
                counts[2] += len(message.get("body", b""))
            await send(message)

        start = time.perf_counter()
        try:
            await metrics.scrape(scope, tagging_send)
        finally:
            if self.enabled and log.isEnabledFor(logging.INFO):
                self._log(scope, counts, (time.perf_counter() - start) * 1000)

    def _log(self, scope: Scope, counts: list[int], duration_ms: float) -> None:
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else "-"
        auth = (scope.get("state") or {}).get("auth")
        user = getattr(auth, "user", None)
        agent = next((bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if k == b"user-agent"),
                     "")
        query = scope.get("query_string", b"").decode("latin-1")
        fields = {
            "method": scope["method"], "path": scope["path"], "query": query[:2000],
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}", "status": counts[0],
            "bytes_in": counts[1], "bytes_out": counts[2], "duration_ms": round(duration_ms, 3),
            "remote_addr": remote, "user": user, "request_id": scope["state"]["request_id"],
            "user_agent": agent[:500],
        }
        target = scope["path"] + (f"?{query[:2000]}" if query else "")
        log.info('%s - %s "%s %s %s" %d %d %.1fms rid=%s', remote, user or "-", fields["method"], target,
                 fields["protocol"], fields["status"], fields["bytes_out"], duration_ms,
                 fields["request_id"], extra={"access": fields})


def request_middleware(enabled: bool, metrics: MetricsEndpoint | None = None) -> Middleware:
    """The ``Middleware`` entry for ``build_middleware``: ``enabled`` is the access log."""
    return Middleware(RequestMiddleware, enabled=enabled, metrics=metrics)
