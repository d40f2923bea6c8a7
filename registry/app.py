"""``create_app(config) -> Starlette``: the registry as one ASGI application.

The app is a Starlette router with the /v2 API endpoint plus a middleware list built from the
configuration. Cross-cutting concerns (the API-version header, auth, read-only mode, metrics)
are plain ASGI middleware in that list, so the routes never know about them: to add one, append
a ``Middleware(...)`` in ``build_middleware``. Handlers and middleware find the shared state in
``app.state.registry`` (config, driver, layout, uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.config import Config, load_config
from registry.drivers import make_driver
from registry.errors import API_VERSION, API_VERSION_HEADER, error_response
from registry.layout import Layout
from registry.routes import V2Endpoint
from registry.routes.common import Registry
from registry.shared_state import SharedState, make_shared_state
from registry.uploads import Uploads
from storage.errors import PathNotFoundError

log = logging.getLogger("pyreg.app")

# How ``pyreg serve`` hands the resolved configuration to worker processes.
CONFIG_ENV = "_PYREG_SERVE_CONFIG_JSON"

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class APIVersionMiddleware:
    """Adds ``Docker-Distribution-API-Version: registry/2.0`` to every /v2 answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = (API_VERSION_HEADER.lower().encode(), API_VERSION.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v2"):
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k == self._header[0] for k, _ in headers):
                    headers.append(self._header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_header)


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


def build_middleware(config: Config, shared: SharedState | None = None) -> list[Middleware]:
    """The middleware stack, outermost first."""
    middleware = [Middleware(APIVersionMiddleware)]
    # Auth (registry/auth) belongs here, before read-only mode, so a denied write is 401/403.
    from registry.auth.setup import auth_middleware

    middleware.append(auth_middleware(config, shared))
    if config.storage.maintenance.readonly.enabled:
        middleware.append(Middleware(ReadOnlyMiddleware))
    if config.notifications.endpoints:  # innermost: webhooks for what auth and read-only let through
        from registry.notifications import notifications_middleware

        middleware.append(notifications_middleware(config))
    if config.metrics.enabled:  # outermost: it times everything, and auth never sees /metrics
        from registry.metrics import metrics_middleware

        middleware.insert(0, metrics_middleware(config))
    from registry.accesslog import access_log_middleware  # outermost: request ids, one log line each

    middleware.insert(0, access_log_middleware(not config.log.accesslog.disabled))
    if config.proxy.trustforwarded:  # outermost: every layer sees the real client, or no X-Forwarded-*
        from registry.proxy import forwarded_middleware

        middleware.insert(0, forwarded_middleware(config.proxy))
    return middleware


def build_routes(registry: Registry) -> list[BaseRoute]:
    endpoint = V2Endpoint(registry)

    async def healthz(request: Request) -> Response:
        """Liveness and storage reachability for load balancers, compose and Kubernetes probes."""
        try:
            await registry.driver.list("/")
        except PathNotFoundError:
            pass  # a fresh, empty store is healthy
        except Exception as e:
            log.warning("health check: storage unreachable: %s", e)
            return JSONResponse({"status": "unhealthy", "storage": str(e)[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "storage": registry.driver.name})

    return [Route("/v2", endpoint), Route("/v2/{path:path}", endpoint),
            Route("/healthz", healthz, methods=["GET"])]


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
    registry = Registry(config, driver, layout, Uploads(layout))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        maintenance = config.storage.maintenance
        if maintenance.uploadpurging.enabled and not maintenance.readonly.enabled:
            task = asyncio.create_task(_purge_loop(registry))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if shared is not None:
                await shared.close()

    app = Starlette(routes=build_routes(registry), middleware=build_middleware(config, shared),
                    lifespan=lifespan)
    app.state.registry = registry
    app.state.config = config
    return app


def create_app_from_env() -> Starlette:
    """Factory for uvicorn workers: the configuration ``pyreg serve`` resolved, passed as JSON."""
    raw = os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = json.loads(raw) if raw else {}
    return create_app(load_config(data=data, environ={}))
