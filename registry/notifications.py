"""Webhooks: Distribution-style event envelopes POSTed to ``notifications.endpoints``.

After a manifest push (PUT answered 201), a manifest or tag delete (DELETE answered 202) and,
for endpoints that ask for ``pull``, a manifest GET (200), every configured endpoint gets::

    POST <url>   Content-Type: application/vnd.docker.distribution.events.v1+json
    {"events": [{"id", "timestamp", "action": "push" | "pull" | "delete",
                 "target": {"mediaType", "size", "length", "digest", "repository", "url", "tag"},
                 "request": {"id", "addr", "host", "method", "useragent"},
                 "actor": {"name"}, "source": {"addr", "instanceID"}}]}

as Distribution sends them (its receivers work unchanged). A tag delete's target has the
repository, the tag and the digest it pointed at; a manifest delete's the repository and digest.
Blobs (layers and configs) have events too, as in Distribution: ``push`` when an upload finishes
(PUT, or a POST with the digest, answered 201), ``mount`` for a cross-repository mount (its
target names ``fromRepository``; sent where ``push`` events are wanted) and, for endpoints that
ask, ``pull`` on a blob GET (200, or 307 to storage). Their ``mediaType`` is
``application/octet-stream``, which ``ignoredmediatypes: [application/octet-stream]`` filters
out, as with Distribution.

The client's request is never delayed or failed by a webhook: the event is built from what the
request and its answer already carry (one ASGI middleware, so the routes know nothing of it) and
dropped into the endpoint's own bounded in-memory queue (``queuesize``, default 1000; when it is
full the new event is dropped and logged). One task per endpoint and process sends the queue in
order, several events per envelope when they have piled up, and retries a failed delivery (an
error, a timeout, or a status outside 2xx/3xx) until it succeeds: at once up to ``threshold``
consecutive failures, then every ``backoff``, as Distribution does. On shutdown the queues get a
few seconds to drain. Events live in memory only: a crash loses the undelivered ones, and every
worker process has its own queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import Counter, Gauge
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyreg.registry.config import Config, NotificationEndpoint

log = logging.getLogger("pyreg.notifications")

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what Distribution's blob events name
_MAX_BATCH = 100
_MAX_BODY = 4 * 1024 * 1024 + 1  # the route refuses bigger manifests (413)
_SHUTDOWN_DRAIN = 5.0

# Process-wide, registered into each app's metrics registry by registry/metrics.py (and summed over
# workers in multiprocess mode like every other metric). ``endpoint`` is a configured name.
EVENTS = Counter("pyreg_notifications_events_total", "Webhook events by endpoint and outcome",
                 ["endpoint", "outcome"], registry=None)
FAILURES = Counter("pyreg_notifications_failures_total", "Failed webhook delivery attempts (retried)",
                   ["endpoint"], registry=None)
PENDING = Gauge("pyreg_notifications_pending", "Webhook events waiting in memory", ["endpoint"],
                registry=None, multiprocess_mode="livesum")
METRICS = (EVENTS, FAILURES, PENDING)


class Endpoint:
    """One webhook target: its filter, bounded queue and sender task."""

    def __init__(self, config: NotificationEndpoint) -> None:
        self.config = config
        self.name = config.name
        self.ignored_types = {t.lower() for t in [*config.ignoredmediatypes, *config.ignore.mediatypes]}
        self.actions = set(config.events) - set(config.ignore.actions)
        self.queue: asyncio.Queue[dict[str, Any]] | None = None
        self.task: asyncio.Task[None] | None = None
        self.sending = False
        self.dropped = 0
        self.failures = 0

    def wants(self, event: dict[str, Any]) -> bool:
        media_type = str(event["target"].get("mediaType", "")).lower()
        action = "push" if event["action"] == "mount" else event["action"]  # a mount pushes by reference
        return action in self.actions and media_type not in self.ignored_types

    def offer(self, event: dict[str, Any]) -> None:
        """Queue an event without waiting; drop it (and say so) when the queue is full."""
        if self.queue is None:
            self.queue = asyncio.Queue(maxsize=self.config.queuesize)
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"webhook {self.name}")
        try:
            self.queue.put_nowait(event)
            PENDING.labels(self.name).inc()
        except asyncio.QueueFull:
            self.dropped += 1
            EVENTS.labels(self.name, "dropped").inc()
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("notifications: endpoint %s is behind, %d event(s) dropped so far (queuesize %d)",
                            self.name, self.dropped, self.config.queuesize)

    async def _run(self) -> None:
        assert self.queue is not None
        queue = self.queue
        headers = {k: ", ".join(v) for k, v in self.config.headers.items()}
        headers["Content-Type"] = EVENTS_MEDIA_TYPE
        async with httpx.AsyncClient(timeout=self.config.timeout, follow_redirects=False) as client:
            while True:
                batch = [await queue.get()]
                while len(batch) < _MAX_BATCH and not queue.empty():
                    batch.append(queue.get_nowait())
                self.sending = True
                try:
                    await self._deliver(client, json.dumps({"events": batch}).encode(), headers)
                finally:
                    self.sending = False
                    for _ in batch:
                        queue.task_done()
                    PENDING.labels(self.name).dec(len(batch))
                EVENTS.labels(self.name, "delivered").inc(len(batch))

    async def _deliver(self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> None:
        failures = 0
        while True:
            try:
                response = await client.post(self.config.url, content=body, headers=headers)
                if 200 <= response.status_code < 400:
                    return
                problem = f"status {response.status_code}"
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            failures += 1
            self.failures += 1
            FAILURES.labels(self.name).inc()
            if failures == 1 or failures % 10 == 0:
                log.warning("notifications: endpoint %s failed (%s), attempt %d; retrying", self.name,
                            problem, failures)
            await asyncio.sleep(self.config.backoff if failures >= self.config.threshold
                                else min(0.1, self.config.backoff))

    async def close(self, drain: float) -> None:
        """Give the queue ``drain`` seconds to empty, then stop the sender."""
        if self.task is None or self.queue is None:
            return
        if not self.queue.empty() or self.sending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), drain)
        if not self.queue.empty() or self.sending:
            log.warning("notifications: endpoint %s: %d undelivered event(s) dropped at shutdown",
                        self.name, self.queue.qsize() + (1 if self.sending else 0))
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.task = None
        self.queue = None


class Notifier:
    """Builds events and hands them to every endpoint that wants them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoints = [Endpoint(e) for e in config.notifications.endpoints if not e.disabled]
        self.instance_id = str(uuid.uuid4())
        self.source_addr = f"{socket.gethostname()}:{config.port}"
        for e in self.endpoints:
            log.info("notifications: endpoint %s (%s), timeout %gs, threshold %d, backoff %gs",
                     e.name, e.config.url, e.config.timeout, e.config.threshold, e.config.backoff)

    def wants_pulls(self) -> bool:
        return any("pull" in e.actions for e in self.endpoints)

    def publish(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            for endpoint in self.endpoints:
                if endpoint.wants(event):
                    endpoint.offer(event)

    async def close(self, drain: float = _SHUTDOWN_DRAIN) -> None:
        await asyncio.gather(*(e.close(drain) for e in self.endpoints))

    # -- events --------------------------------------------------------------------------------

    def event(self, scope: Scope, action: str, target: dict[str, Any]) -> dict[str, Any]:
        state = scope.get("state") or {}
        auth = state.get("auth")
        user = getattr(auth, "user", None)
        client = scope.get("client")
        return {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "action": action,
            "target": target,
            "request": {
                "id": str(state.get("request_id") or _header(scope, b"x-request-id") or uuid.uuid4()),
                "addr": f"{client[0]}:{client[1]}" if client else "",
                "host": _header(scope, b"host") or "",
                "method": scope["method"],
                "useragent": _header(scope, b"user-agent") or "",
            },
            "actor": {"name": user} if user else {},
            "source": {"addr": self.source_addr, "instanceID": self.instance_id},
        }

    def manifest_url(self, scope: Scope, name: str, digest: str, kind: str = "manifests") -> str:
        base = self.config.http.host
        if not base:
            base = f"{scope.get('scheme', 'http')}://{_header(scope, b'host') or self.config.addr}"
        return f"{base.rstrip('/')}/v2/{name}/{kind}/{digest}"


def _header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _response_headers(message: Message) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in message.get("headers", ()):
        out.setdefault(bytes(key).decode("latin-1").lower(), []).append(bytes(value).decode("latin-1"))
    return out


async def _blob_size(scope: Scope, digest: str) -> int:
    """The stored blob's size (the lookup cache has it from the request just answered)."""
    from pyreg.storage.digest import Digest, DigestError

    app = scope.get("app")
    registry = getattr(getattr(app, "state", None), "registry", None)
    if registry is None:
        return 0
    try:
        return await registry.layout.blob_size(Digest.parse(digest)) or 0
    except DigestError:
        return 0


def _media_type(body: bytes, content_type: str | None) -> str:
    from pyreg.storage.manifest import ManifestError, base_media_type, parse_manifest

    try:
        return parse_manifest(body, content_type).media_type
    except ManifestError:
        return base_media_type(content_type)


class NotificationsMiddleware:
    """Watches manifest PUT / DELETE / GET answers and publishes their events."""

    def __init__(self, app: ASGIApp, notifier: Notifier) -> None:
        self.app = app
        self.notifier = notifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        method = scope.get("method")
        path: str = scope.get("path", "")
        if scope["type"] == "http":  # for deletes made outside /v2 (the web UI): registry/ui/routes.py
            scope.setdefault("state", {})["notifier"] = self.notifier
        if scope["type"] == "http" and method == "POST" and path.endswith("/blobs/uploads/"):
            await self._blob(scope, receive, send, "POST", path[4:-len("/blobs/uploads/")], "")
            return
        if (scope["type"] != "http" or not path.startswith("/v2/")
                or method not in ("PUT", "DELETE", "GET")
                or (method == "GET" and not self.notifier.wants_pulls())):
            await self.app(scope, receive, send)
            return
        from pyreg.registry import routes

        found = routes.match(path[4:])
        if found is not None and (found[0], method) in ((routes.UPLOAD, "PUT"), (routes.BLOBS, "GET")):
            await self._blob(scope, receive, send, method, found[1], found[2])
            return
        if found is None or found[0] is not routes.MANIFESTS:
            await self.app(scope, receive, send)
            return
        _, name, reference = found
        scope.setdefault("state", {})
        body = bytearray()
        answer: dict[str, Any] = {}

        async def capturing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _MAX_BODY:
                body.extend(message.get("body", b"")[: _MAX_BODY - len(body)])
            return message

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = _response_headers(message)
            await send(message)

        await self.app(scope, capturing_receive if method == "PUT" else receive, capturing_send)
        try:
            self._publish(scope, str(method), name, reference, bytes(body), answer)
        except Exception:  # a webhook never fails the request
            log.exception("notifications: could not build the event for %s %s", method, path[:200])

    def _publish(self, scope: Scope, method: str, name: str, reference: str, body: bytes,
                 answer: dict[str, Any]) -> None:
        status = answer.get("status")
        headers: dict[str, list[str]] = answer.get("headers", {})
        digest = (headers.get("docker-content-digest") or [""])[0]
        by_digest = ":" in reference
        n = self.notifier
        events: list[dict[str, Any]] = []
        if method == "PUT" and status == 201 and digest:
            target = {"mediaType": _media_type(body, _header(scope, b"content-type")), "size": len(body),
                      "digest": digest, "length": len(body), "repository": name,
                      "url": n.manifest_url(scope, name, digest)}
            tags = [] if by_digest else [reference]
            tags += [t for t in headers.get("oci-tag", []) if t not in tags]
            events = [n.event(scope, "push", {**target, "tag": t}) for t in tags] or [
                n.event(scope, "push", target)]
        elif method == "DELETE" and status == 202:
            if by_digest:
                events = [n.event(scope, "delete", {"digest": reference, "repository": name})]
            else:
                target = {"repository": name, "tag": reference}
                if digest:
                    target["digest"] = digest
                events = [n.event(scope, "delete", target)]
        elif method == "GET" and status == 200 and digest:
            size = int((headers.get("content-length") or ["0"])[0] or 0)
            target = {"mediaType": (headers.get("content-type") or [""])[0], "size": size, "digest": digest,
                      "length": size, "repository": name, "url": n.manifest_url(scope, name, digest)}
            if not by_digest:
                target["tag"] = reference
            events = [n.event(scope, "pull", target)]
        if events:
            n.publish(events)

    async def _blob(self, scope: Scope, receive: Receive, send: Send, method: str, name: str,
                    reference: str) -> None:
        """A blob upload's finish (PUT, POST with the digest), a mount, or a GET: its event."""
        answer: dict[str, Any] = {}

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = _response_headers(message)
            await send(message)

        if method == "GET" and not self.notifier.wants_pulls():
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, capturing_send)
        try:
            await self._publish_blob(scope, method, name, reference, answer)
        except Exception:  # a webhook never fails the request
            log.exception("notifications: could not build the blob event for %s %s", method, name[:200])

    async def _publish_blob(self, scope: Scope, method: str, name: str, reference: str,
                            answer: dict[str, Any]) -> None:
        status = answer.get("status")
        headers: dict[str, list[str]] = answer.get("headers", {})
        digest = (headers.get("docker-content-digest") or [reference if method == "GET" else ""])[0]
        if not digest or status not in ((200, 307) if method == "GET" else (201,)):
            return
        action, extra = ("pull" if method == "GET" else "push"), {}
        if method == "POST":
            from urllib.parse import parse_qs

            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("mount") and query.get("from"):  # still there: the mount was allowed
                action, extra = "mount", {"fromRepository": query["from"][0]}
        size = await _blob_size(scope, digest)
        n = self.notifier
        target = {"mediaType": BLOB_MEDIA_TYPE, "size": size, "digest": digest, "length": size,
                  "repository": name, "url": n.manifest_url(scope, name, digest, "blobs"), **extra}
        n.publish([n.event(scope, action, target)])

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.notifier.close()
            return message

        return wrapped


def notifications_middleware(config: Config) -> Middleware:
    """The ``Middleware`` entry for ``build_middleware`` (one notifier per app)."""
    return Middleware(NotificationsMiddleware, notifier=Notifier(config))
