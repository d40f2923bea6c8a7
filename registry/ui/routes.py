"""Routes of the web UI under ``ui.path``: the page, its static files and the JSON API.

Every API answer is computed for the caller the session names (or anonymous), through the same
access policy as /v2 (registry/auth/access.py): lists show only what the caller may pull, and
a delete needs the ``delete`` action, ``storage.delete.enabled``, a writable registry, the
session's CSRF token in ``X-CSRF-Token`` and a same-origin request.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pyreg.registry.auth.access import Identity
from pyreg.registry.auth.middleware import AuthService
from pyreg.registry.routes.common import Registry
from pyreg.registry.ui import views
from pyreg.registry.ui.session import COOKIE, LIFETIME, Session, SessionSigner, stored_key
from pyreg.storage.digest import Digest
from pyreg.storage.names import name_problem

STATIC = Path(__file__).parent / "static"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


class UI:
    def __init__(self, registry: Registry, auth: AuthService, path: str) -> None:
        self.registry = registry
        self.auth = auth
        self.path = path
        self._signer: SessionSigner | None = None
        self.catalog = views.Catalog(registry.layout)

    # -- sessions --------------------------------------------------------------------------------

    async def signer(self) -> SessionSigner:
        if self._signer is None:
            secret = self.registry.config.http.secret or await stored_key(self.registry.driver)
            self._signer = SessionSigner(secret)
        return self._signer

    async def session(self, request: Request) -> Session | None:
        return (await self.signer()).load(request.cookies.get(COOKIE))

    def identity(self, session: Session | None) -> Identity:
        return self.auth.policy.identity(session.user if session else None)

    async def _set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, (await self.signer()).dump(session), max_age=LIFETIME, path=self.path,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")

    def _json(self, body: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    def _error(self, status: int, message: str) -> JSONResponse:
        return self._json({"error": message}, status)

    def _same_origin(self, request: Request) -> bool:
        """A state-changing call must come from a page of this origin (Origin, else Referer)."""
        source = request.headers.get("origin") or request.headers.get("referer")
        if not source:
            return False
        return urlsplit(source).netloc == request.headers.get("host", "")

    def _csrf_ok(self, request: Request, session: Session | None) -> bool:
        sent = request.headers.get("x-csrf-token", "")
        return (session is not None and bool(sent) and hmac.compare_digest(sent, session.csrf)
                and self._same_origin(request))

    # -- endpoints --------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    async def redirect(self, request: Request) -> Response:
        return RedirectResponse(self.path + "/", status_code=308)

    async def session_info(self, request: Request) -> Response:
        session = await self.session(request)
        fresh = session is None
        if session is None:
            session = (await self.signer()).new(None)
        config = self.registry.config
        body = {"user": session.user, "csrf": session.csrf, "auth": self.auth.mode,
                "login": self.auth.htpasswd is not None,
                "deletes": config.storage.delete.enabled and not config.storage.maintenance.readonly.enabled,
                "catalog": self.auth.policy.may_list_catalog(self.identity(session))}
        response = self._json(body)
        if fresh:
            await self._set_cookie(request, response, session)
        return response

    async def login(self, request: Request) -> Response:
        if not self._same_origin(request):
            return self._error(403, "cross-origin login refused")
        if self.auth.htpasswd is None:
            return self._error(404, "this registry has no password logins")
        try:
            body = await request.json()
            user, password = str(body["username"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return self._error(400, "expected JSON with username and password")
        client = request.client.host if request.client else ""
        result = await self.auth.check_password(client, user, password)
        if not isinstance(result, Identity):
            status = 429 if result.status_code == 429 else 401
            message = "too many failed logins" if status == 429 else "wrong user name or password"
            return self._error(status, message)
        session = (await self.signer()).new(result.name)
        response = self._json({"user": session.user, "csrf": session.csrf})
        await self._set_cookie(request, response, session)
        return response

    async def logout(self, request: Request) -> Response:
        if not self._csrf_ok(request, await self.session(request)):
            return self._error(403, "missing or wrong CSRF token")
        response = self._json({"user": None})
        response.delete_cookie(COOKIE, path=self.path)
        return response

    async def repositories(self, request: Request) -> Response:
        who = self.identity(await self.session(request))
        policy = self.auth.policy
        if not policy.may_list_catalog(who):
            return self._error(401, "log in to see repositories")
        page, size = views.page_args(dict(request.query_params))
        q = request.query_params.get("q", "")[:200]
        body = await views.repositories_page(self.catalog, lambda n: policy.allows(who, n, "pull"),
                                             q, page, size)
        return self._json(body)

    async def _repo(self, request: Request, action: str = "pull") -> tuple[str, Identity] | Response:
        name = request.query_params.get("name", "")
        if name_problem(name) is not None:
            return self._error(400, "not a repository name")
        who = self.identity(await self.session(request))
        if not self.auth.policy.allows(who, name, action):
            # the same answer as for a repository that does not exist: nothing leaks
            return self._error(404, "no such repository, or you may not see it")
        return name, who

    async def tags(self, request: Request) -> Response:
        found = await self._repo(request)
        if isinstance(found, Response):
            return found
        name, who = found
        page, size = views.page_args(dict(request.query_params))
        body = await views.tags_page(self.registry.layout, name, request.query_params.get("q", "")[:200],
                                     page, size)
        if body is None:
            return self._error(404, "no such repository, or you may not see it")
        body["can_delete"] = self._may_delete(who, name)
        return self._json(body)

    def _may_delete(self, who: Identity, name: str) -> bool:
        storage = self.registry.config.storage
        return (storage.delete.enabled and not storage.maintenance.readonly.enabled
                and self.auth.policy.allows(who, name, "delete"))

    async def manifest(self, request: Request) -> Response:
        found = await self._repo(request)
        if isinstance(found, Response):
            return found
        name, who = found
        view = await views.manifest_view(self.registry.layout, name, request.query_params.get("ref", ""))
        if view is None:
            return self._error(404, "no such tag or manifest")
        view["can_delete"] = self._may_delete(who, name)
        return self._json(view)

    async def delete(self, request: Request) -> Response:
        session = await self.session(request)
        if not self._csrf_ok(request, session):
            return self._error(403, "missing or wrong CSRF token")
        found = await self._repo(request)
        if isinstance(found, Response):
            return found
        name, who = found
        if not self._may_delete(who, name):
            if not self.registry.config.storage.delete.enabled:
                return self._error(405, "deletes are disabled on this registry")
            return self._error(403, "you may not delete in this repository")
        layout = self.registry.layout
        tag, digest = request.query_params.get("tag"), request.query_params.get("digest")
        if tag:
            done = await layout.untag(name, tag)
        elif digest:
            try:
                done = await layout.delete_manifest(name, Digest.parse(digest))
            except ValueError:
                return self._error(400, "not a digest")
        else:
            return self._error(400, "name a tag or a digest")
        if not done:
            return self._error(404, "no such tag or manifest")
        notifier = (request.scope.get("state") or {}).get("notifier")
        if notifier is not None:  # webhooks hear of it as of an API DELETE
            target = {"repository": name, "tag": tag} if tag else {"digest": digest, "repository": name}
            notifier.publish([notifier.event(request.scope, "delete", target)])
        return self._json({"deleted": tag or digest})


def ui_routes(registry: Registry, auth: AuthService) -> list[BaseRoute]:
    """The UI's routes, mounted at ``ui.path`` (config.UIConfig)."""
    path = registry.config.ui.path.rstrip("/") or "/ui"
    ui = UI(registry, auth, path)
    return [
        Route(path, ui.redirect, methods=["GET"]),
        Route(path + "/", ui.page, methods=["GET"]),
        Route(path + "/api/session", ui.session_info, methods=["GET"]),
        Route(path + "/api/login", ui.login, methods=["POST"]),
        Route(path + "/api/logout", ui.logout, methods=["POST"]),
        Route(path + "/api/repositories", ui.repositories, methods=["GET"]),
        Route(path + "/api/tags", ui.tags, methods=["GET"]),
        Route(path + "/api/manifest", ui.manifest, methods=["GET"]),
        Route(path + "/api/delete", ui.delete, methods=["POST"]),
        Mount(path + "/static", app=StaticFiles(directory=STATIC), name="ui-static"),
    ]


__all__ = ["ui_routes"]
