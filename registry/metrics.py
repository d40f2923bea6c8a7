"""Prometheus metrics: every request counted, and the ``/metrics`` endpoint (both done by the
request layer in registry/accesslog.py).

Labels are bounded on purpose: the route *kind* (``blob``, ``manifest``, ``upload``, ``tags``,
``catalog``, ``referrers``, ``base``, ``other``), never the path, so a million repositories or
digests make no new series; methods outside the HTTP set become ``OTHER``.

* ``pyreg_http_requests_total{method,route,status}``
* ``pyreg_http_request_duration_seconds{method,route}`` (histogram, request start to last byte)
* ``pyreg_http_received_bytes_total{route}``, ``pyreg_http_sent_bytes_total{route}`` (bodies)
* ``pyreg_http_requests_in_flight``
* ``pyreg_uploads_started_total``, ``pyreg_uploads_completed_total``, ``pyreg_uploads_failed_total``
  (a monolithic POST counts as started and completed; a mount is not an upload; failed = a
  PATCH/PUT/monolithic POST answered 4xx/5xx)
* ``pyreg_blob_verifications_total{how}``: stored blobs checked against their digest, and how
  (hashed while served, served unhashed as verified before, read back, trusted, store checksum:
  registry/layout.py)
* with webhooks configured: ``pyreg_notifications_events_total{endpoint,outcome}`` (delivered,
  dropped), ``pyreg_notifications_failures_total{endpoint}``, ``pyreg_notifications_pending{endpoint}``

Scrapes of ``/metrics`` are not counted. The endpoint sits in front of auth (it is not under
``/v2``), so registry auth never blocks it; ``metrics.token`` makes it require
``Authorization: Bearer <token>`` instead, and ``metrics.path`` moves it.

Several workers (``pyreg serve --workers N``): each worker is its own process with its own
counters, and a scrape reaches whichever worker the kernel hands the connection to, so per-process
numbers would jump around. ``pyreg serve`` therefore calls :func:`prepare_workers`, which points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (removed when serve exits) before the workers
start; prometheus_client then keeps every worker's values in files there, and each scrape sums
them over all workers (the in-flight gauge counts live workers only). A directory set by the
operator is used as is: it must be emptied between runs, as prometheus_client requires.
"""

from __future__ import annotations

import atexit
import hmac
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import Scope, Send

from pyreg.registry.config import Config

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def prepare_workers(workers: int) -> None:
    """Before uvicorn starts ``workers`` > 1 processes: shared metric files, so scrapes add up."""
    if workers <= 1 or multiprocess_dir():
        return
    path = tempfile.mkdtemp(prefix="pyreg-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, True)


def render_all_workers() -> bytes:
    """Every worker's metrics summed (the supervisor's view, for the ``metrics.addr`` listener)."""
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return bytes(generate_latest(merged))


def route_kind(path: str) -> str:
    """The bounded label for a request path (the /v2 router's own matching, nothing else)."""
    # a few hot paths (HEAD/GET of the same blobs and tags) take most requests; long ones are
    # not remembered, so the cache holds at most ~1 MiB of paths whatever clients send
    return _route_kind(path) if len(path) <= 256 else _route_kind.__wrapped__(path)


@lru_cache(maxsize=4096)
def _route_kind(path: str) -> str:
    if path in ("/v2", "/v2/"):
        return "base"
    if not path.startswith("/v2/"):
        return "other"
    from pyreg.registry import routes

    found = routes.match(path[4:])
    if found is None:
        return "other"
    handlers = found[0]
    for kind, table in (("blob", routes.BLOBS), ("manifest", routes.MANIFESTS), ("upload", routes.UPLOAD),
                        ("upload", routes.UPLOAD_START), ("tags", routes.TAGS), ("catalog", routes.CATALOG),
                        ("referrers", routes.REFERRERS), ("base", routes.ROOT)):
        if handlers is table:
            return kind
    return "other"


class RegistryMetrics:
    """The metric objects of one app (a registry of its own, so several apps can share a process)."""

    def __init__(self, notifications: bool = False, mirror: bool = False) -> None:
        self.multiprocess = multiprocess_dir() is not None
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._by_request: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}  # one lookup each
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("pyreg_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=reg)
        self.duration = Histogram("pyreg_http_request_duration_seconds",
                                  "Time from the request's start to its last response byte",
                                  ["method", "route"], buckets=_BUCKETS, registry=reg)
        self.received = Counter("pyreg_http_received_bytes_total", "Request body bytes received",
                                ["route"], registry=reg)
        self.sent = Counter("pyreg_http_sent_bytes_total", "Response body bytes sent", ["route"],
                            registry=reg)
        self.in_flight = Gauge("pyreg_http_requests_in_flight", "Requests being answered now",
                               registry=reg, multiprocess_mode="livesum")
        self.uploads_started = Counter("pyreg_uploads_started_total", "Blob uploads started", registry=reg)
        self.uploads_completed = Counter("pyreg_uploads_completed_total",
                                         "Blob uploads finished and stored", registry=reg)
        self.uploads_failed = Counter("pyreg_uploads_failed_total",
                                      "Blob upload requests refused or failed (4xx/5xx)", registry=reg)
        from pyreg.registry.layout import METRICS as LAYOUT_METRICS  # blob verifications

        for counter in LAYOUT_METRICS:
            reg.register(counter)
        if notifications:  # webhook deliveries (registry/notifications.py)
            from pyreg.registry.notifications import METRICS

            for metric in METRICS:
                reg.register(metric)
        if mirror:  # the pull-through cache's counters (registry/mirror/metrics.py)
            from pyreg.registry.mirror.metrics import METRICS as MIRROR_METRICS

            for metric in MIRROR_METRICS:
                reg.register(metric)
        if not self.multiprocess:
            from prometheus_client import PlatformCollector, ProcessCollector

            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)

    def render(self) -> bytes:
        if not self.multiprocess:
            return bytes(generate_latest(self.registry))
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return bytes(generate_latest(merged))

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)``, remembered (the label sets are few and fixed)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, method: str, kind: str, status: int, seconds: float, received: int, sent: int,
                query: bytes) -> None:
        key = (method, kind, status)
        children = self._by_request.get(key)
        if children is None:
            children = self._by_request[key] = (
                self._child(self.requests, method, kind, str(status)),
                self._child(self.duration, method, kind),
                self._child(self.received, kind), self._child(self.sent, kind))
        requests, duration, received_bytes, sent_bytes = children
        requests.inc()
        duration.observe(seconds)
        if received:
            received_bytes.inc(received)
        if sent:
            sent_bytes.inc(sent)
        if kind == "upload":
            self._count_upload(method, status, query)

    def _count_upload(self, method: str, status: int, query: bytes) -> None:
        monolithic = method == "POST" and b"digest=" in query
        if method == "POST":
            if status == 202 or (status == 201 and monolithic):
                self.uploads_started.inc()
            if status == 201 and monolithic:
                self.uploads_completed.inc()
        elif method == "PUT" and status == 201:
            self.uploads_completed.inc()
        if status >= 400 and (method in ("PATCH", "PUT") or monolithic):
            self.uploads_failed.inc()


class MetricsEndpoint:
    """The metrics of one app as the request layer (registry/accesslog.py) uses them: count each
    request, and answer the scrape endpoint at ``path`` (None: not on this listener)."""

    def __init__(self, metrics: RegistryMetrics, path: str | None = "/metrics",
                 token: str | None = None) -> None:
        self.metrics = metrics
        self.path = path
        self._token = f"Bearer {token}".encode() if token else None
        self.started = metrics.in_flight.inc

    def finished(self, scope: Scope, path: str, status: int, seconds: float, received: int,
                 sent: int) -> None:
        m = self.metrics
        m.in_flight.dec()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        m.observe(method, route_kind(path), status, seconds, received, sent, scope.get("query_string", b""))

    async def scrape(self, scope: Scope, send: Send) -> None:
        headers: list[tuple[bytes, bytes]]
        if self._token is not None and not self._authorized(scope):
            status, body = 401, b"metrics: a bearer token is required\n"
            headers = [(b"www-authenticate", b'Bearer realm="metrics"')]
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, headers = 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")]
        else:
            status, body, headers = 200, self.metrics.render(), []
        content_type = CONTENT_TYPE_LATEST if status == 200 else "text/plain; charset=utf-8"
        headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def _authorized(self, scope: MutableMapping[str, Any]) -> bool:
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                return self._token is not None and hmac.compare_digest(bytes(value), self._token)
        return False


def metrics_endpoint(config: Config) -> MetricsEndpoint:
    """The metrics of one app (a metrics registry of its own), for ``build_middleware``."""
    section = config.metrics
    metrics = RegistryMetrics(notifications=bool(config.notifications.endpoints),
                              mirror=bool(config.mirror.upstreams))
    path = None if section.addr else section.path  # with metrics.addr: served there only
    return MetricsEndpoint(metrics, path=path, token=section.token)
