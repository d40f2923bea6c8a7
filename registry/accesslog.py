"""Access logs and request ids: the outermost ASGI middleware, one log record per request.

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
import re
import time
import uuid
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("pyreg.access")

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def request_id(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key == REQUEST_ID_HEADER and _SANE_ID.match(value):
            return bytes(value).decode("ascii")
    return uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        header = (REQUEST_ID_HEADER, rid.encode())
        counts: dict[str, Any] = {"status": 500, "in": 0, "out": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = int(message["status"])
                message["headers"] = [*message.get("headers", []), header]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, counting_receive, tagging_send)
        finally:
            if self.enabled:
                self._log(scope, counts, (time.perf_counter() - start) * 1000)

    def _log(self, scope: Scope, counts: dict[str, Any], duration_ms: float) -> None:
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else "-"
        auth = (scope.get("state") or {}).get("auth")
        user = getattr(auth, "user", None)
        agent = next((bytes(v).decode("latin-1") for k, v in scope.get("headers", ()) if k == b"user-agent"),
                     "")
        query = scope.get("query_string", b"").decode("latin-1")
        fields = {
            "method": scope["method"], "path": scope["path"], "query": query[:2000],
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}", "status": counts["status"],
            "bytes_in": counts["in"], "bytes_out": counts["out"], "duration_ms": round(duration_ms, 3),
            "remote_addr": remote, "user": user, "request_id": scope["state"]["request_id"],
            "user_agent": agent[:500],
        }
        target = scope["path"] + (f"?{query[:2000]}" if query else "")
        log.info('%s - %s "%s %s %s" %d %d %.1fms rid=%s', remote, user or "-", fields["method"], target,
                 fields["protocol"], fields["status"], fields["bytes_out"], duration_ms,
                 fields["request_id"], extra={"access": fields})


def access_log_middleware(enabled: bool) -> Middleware:
    return Middleware(AccessLogMiddleware, enabled=enabled)
