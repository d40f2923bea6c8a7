"""``create_app(config) -> Starlette``: the registry as one ASGI application.

The app is a Starlette router with the /v2 API endpoint plus a middleware list built from the
configuration. Cross-cutting concerns (request ids, the API-version header, metrics and the
access log in one outermost layer; auth, read-only mode) are plain ASGI middleware in that list,
so the routes never know about them: to add one, append a ``Middleware(...)`` in
``build_middleware``. Handlers and middleware find the shared state in
``app.state.registry`` (config, driver, layout, uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pyreg.registry.config import Config, load_config
from pyreg.registry.drivers import make_driver
from pyreg.registry.errors import error_response
from pyreg.registry.layout import Layout
from pyreg.registry.routes import V2Endpoint
from pyreg.registry.routes.common import Registry
from pyreg.registry.shared_state import SharedState, make_shared_state
from pyreg.registry.uploads import Uploads
from pyreg.storage.errors import PathNotFoundError

if TYPE_CHECKING:
    from pyreg.registry.metrics import MetricsEndpoint

log = logging.getLogger("pyreg.app")

# How ``pyreg serve`` hands the resolved configuration to worker processes.
CONFIG_ENV = "_PYREG_SERVE_CONFIG_JSON"

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READY_TIMEOUT = 10.0  # seconds a /readyz storage check may take before it answers 503


class HeadersMiddleware:
    """``http.headers``: headers added to every response, as Distribution does (Debian's config
    sends ``X-Content-Type-Options: nosniff``); a header the response has already is kept."""

    def __init__(self, app: ASGIApp, headers: dict[str, list[str]]) -> None:
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                        for k, values in headers.items() for v in values]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class V2Shortcut:
    """Innermost: ``/v2`` and ``/v2/…`` go straight to the API endpoint, past Starlette's
    exception middleware and router (which would only try two patterns to find the same endpoint;
    the endpoint turns every error into a registry error itself). Other paths take the router."""

    def __init__(self, app: ASGIApp, endpoint: ASGIApp) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v2/") or path == "/v2":
                await self.endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ReadOnlyMiddleware:
    """storage.maintenance.readonly: every write to /v2 gets 405 UNSUPPORTED."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"].startswith("/v2")
                and scope["method"] not in _READ_METHODS):
            response = error_response("UNSUPPORTED", "the registry is in read-only mode", status=405)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_middleware(config: Config, shared: SharedState | None = None,
                     metrics: MetricsEndpoint | None = None) -> list[Middleware]:
    """The middleware stack, outermost first. ``metrics``: counted and served by the request layer."""
    middleware = []
    if config.http.headers:
        middleware.append(Middleware(HeadersMiddleware, headers=config.http.headers))
    # Auth (registry/auth) belongs here, before read-only mode, so a denied write is 401/403.
    from pyreg.registry.auth.setup import auth_middleware

    middleware.append(auth_middleware(config, shared))
    if config.storage.maintenance.readonly.enabled:
        middleware.append(Middleware(ReadOnlyMiddleware))
    if config.notifications.endpoints:  # innermost: webhooks for what auth and read-only let through
        from pyreg.registry.notifications import notifications_middleware

        middleware.append(notifications_middleware(config))
    # outermost: request ids, the API-version header, metrics (auth never sees /metrics), one log
    # line per request
    from pyreg.registry.accesslog import request_middleware

    middleware.insert(0, request_middleware(not config.log.accesslog.disabled, metrics))
    if config.proxy.trustforwarded:  # outermost: every layer sees the real client, or no X-Forwarded-*
        from pyreg.registry.proxy import forwarded_middleware

        middleware.insert(0, forwarded_middleware(config.proxy))
    return middleware


async def check_storage(registry: Registry) -> str | None:
    """None when storage answers a listing of its root within READY_TIMEOUT, else the reason."""
    try:
        await asyncio.wait_for(registry.driver.list("/"), READY_TIMEOUT)
    except PathNotFoundError:
        pass  # a fresh, empty store is ready
    except Exception as e:
        return str(e) or type(e).__name__
    return None


class StorageHealth:
    """``health.storagedriver`` (Distribution's): a check every ``interval``; unhealthy after
    ``threshold`` failures in a row, healthy again after one success."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.reason: str | None = None

    def record(self, reason: str | None) -> None:
        if reason is None:
            self.failures, self.reason = 0, None
        else:
            self.failures += 1
            self.reason = reason

    @property
    def problem(self) -> str | None:
        return self.reason if self.failures >= self.threshold else None


async def _health_loop(registry: Registry, health: StorageHealth, interval: float) -> None:
    while True:
        reason = await check_storage(registry)
        if reason is not None:
            log.warning("storage health check failed (%d in a row): %s", health.failures + 1, reason)
        health.record(reason)
        await asyncio.sleep(interval)


def build_routes(registry: Registry, health: StorageHealth | None = None) -> list[BaseRoute]:
    endpoint = V2Endpoint(registry)

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers. Never looks at storage, so a storage outage does not
        make Kubernetes restart every replica (that is /readyz's job: take it out of rotation)."""
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        """Readiness: storage is reachable (a list of the root) within a bounded time; with
        ``health.storagedriver`` the background check's verdict."""
        if health is not None:
            reason = health.problem
        else:
            reason = await check_storage(registry)
            if reason is not None:
                log.warning("readiness check: storage unreachable: %s", reason)
        if reason is not None:
            return JSONResponse({"status": "unavailable", "storage": reason[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "storage": registry.driver.name})

    return [Route("/v2", endpoint), Route("/v2/{path:path}", endpoint),
            Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]


async def _purge_loop(registry: Registry) -> None:
    purging = registry.config.storage.maintenance.uploadpurging
    while True:
        try:
            await registry.uploads.purge(purging.age, purging.dryrun)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("upload purging failed")
        await asyncio.sleep(purging.interval)


def create_app(config: Config | None = None) -> Starlette:
    """The registry app for ``config`` (defaults: filesystem under ./data, no auth)."""
    if config is None:
        config = load_config(environ={})
    driver = make_driver(config)
    cache = config.storage.cache
    shared = make_shared_state(config)  # redis: state every worker and replica shares
    layout = Layout(driver, cache.ttl, cache.maxentries, shared)
    layout.records.writable = not config.storage.maintenance.readonly.enabled  # read, never written
    registry = Registry(config, driver, layout, Uploads(layout))
    if config.mirror.upstreams:  # the pull-through cache, imported only when configured
        from pyreg.registry.mirror.cache import Mirror

        registry.mirror = Mirror(config.mirror, layout)
    storagedriver = config.health.storagedriver
    health = StorageHealth(storagedriver.threshold) if storagedriver.enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = []
        maintenance = config.storage.maintenance
        if maintenance.uploadpurging.enabled and not maintenance.readonly.enabled:
            tasks.append(asyncio.create_task(_purge_loop(registry)))
        if health is not None:
            tasks.append(asyncio.create_task(_health_loop(registry, health, storagedriver.interval)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if shared is not None:
                await shared.close()
            if registry.mirror is not None:
                registry.mirror.close()

    routes = build_routes(registry, health)
    if config.ui.enabled:  # imported only when on: start-up without the UI is unchanged
        from pyreg.registry.auth.setup import build_service
        from pyreg.registry.ui import ui_routes

        routes += ui_routes(registry, build_service(config, shared))
    metrics = None
    if config.metrics.enabled:
        from pyreg.registry.metrics import metrics_endpoint

        metrics = metrics_endpoint(config)
    middleware = build_middleware(config, shared, metrics)
    middleware.append(Middleware(V2Shortcut, endpoint=V2Endpoint(registry)))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.registry = registry
    app.state.config = config
    app.state.metrics = metrics.metrics if metrics is not None else None
    return app


def create_app_from_env() -> Starlette:
    """Factory for uvicorn workers: the configuration ``pyreg serve`` resolved, passed as JSON."""
    raw = os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = json.loads(raw) if raw else {}
    return create_app(load_config(data=data, environ={}))
