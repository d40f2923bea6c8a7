"""The /v2 API: one ASGI endpoint that parses the path itself (names may contain slashes).

``/v2/<name>/(blobs|manifests|tags|referrers)/…`` is matched right to left (storage/routes.py), so
a name such as ``a/blobs/b`` still works; the name is then checked against the spec's grammar, which also
rules out traversal (``..``, ``//``, leading or trailing ``/``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from pyreg.registry.errors import RegistryError, error_response
from pyreg.registry.routes import blobs, listing, manifests
from pyreg.registry.routes.common import BASE_HEADERS, Registry
from pyreg.storage import routes
from pyreg.storage.errors import InvalidPathError, PathNotFoundError

log = logging.getLogger("pyreg.api")

Handler = Callable[[Request, Registry, str, str], Awaitable[Response]]


async def api_root(request: Request, registry: Registry, name: str, arg: str) -> Response:
    return Response(b"{}", headers={**BASE_HEADERS, "Content-Type": "application/json"})


ROOT: dict[str, Handler] = {"GET": api_root, "HEAD": api_root}
CATALOG: dict[str, Handler] = {"GET": listing.catalog, "HEAD": listing.catalog}
TAGS: dict[str, Handler] = {"GET": listing.tags_list, "HEAD": listing.tags_list}
MANIFESTS: dict[str, Handler] = {
    "GET": manifests.manifest_get, "HEAD": manifests.manifest_get, "PUT": manifests.manifest_put,
    "DELETE": manifests.manifest_delete}
UPLOAD_START: dict[str, Handler] = {"POST": blobs.upload_start}
UPLOAD: dict[str, Handler] = {
    "GET": blobs.upload_status, "PATCH": blobs.upload_patch, "PUT": blobs.upload_put,
    "DELETE": blobs.upload_cancel}
BLOBS: dict[str, Handler] = {"GET": blobs.blob_get, "HEAD": blobs.blob_get, "DELETE": blobs.blob_delete}
REFERRERS: dict[str, Handler] = {"GET": listing.referrers, "HEAD": listing.referrers}
# the 404 code for a resource deleted while a request on it was running
_VANISHED: dict[int, str] = {id(MANIFESTS): "MANIFEST_UNKNOWN", id(BLOBS): "BLOB_UNKNOWN",
                             id(UPLOAD_START): "BLOB_UPLOAD_UNKNOWN", id(UPLOAD): "BLOB_UPLOAD_UNKNOWN"}


_BY_KIND: dict[str, dict[str, Handler]] = {
    "base": ROOT, "catalog": CATALOG, "manifest": MANIFESTS, "blob": BLOBS,
    "upload_start": UPLOAD_START, "upload": UPLOAD, "tags": TAGS, "referrers": REFERRERS}


def match(path: str) -> tuple[dict[str, Handler], str, str] | None:
    """(handlers by method, name, argument) for the part of a path after ``/v2/``; the grammar is
    storage/routes.py's, shared with the auth middleware and the client."""
    route = routes.match(path)
    if route is None:
        return None
    return _BY_KIND[route.kind], route.name, route.arg


class V2Endpoint:
    """The ASGI app behind ``/v2`` and ``/v2/…``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        path = request.scope["path"]
        rest = path[4:] if path.startswith("/v2/") else ""
        head = request.method == "HEAD"
        found = match(rest)
        if found is None:
            return error_response("NAME_UNKNOWN" if rest else "UNSUPPORTED",
                                  f"no such endpoint: {path[:200]}", status=404, head=head)
        handlers, name, arg = found
        handler = handlers.get(request.method)
        if handler is None:
            return error_response("UNSUPPORTED", f"method {request.method} is not allowed here",
                                  status=405, headers={"Allow": ", ".join(sorted(handlers))}, head=head)
        mirror = self.registry.mirror
        if mirror is not None and name and request.method not in ("GET", "HEAD") and mirror.route(name):
            return error_response("UNSUPPORTED", f"{name} is a mirror of another registry: pulls only "
                                  "(push to a namespace listed in mirror.local)", status=405, head=head)
        try:
            return await handler(request, self.registry, name, arg)
        except RegistryError as e:
            return e.response(head=head)
        except ClientDisconnect:
            return error_response("BLOB_UPLOAD_INVALID", "the client disconnected before the body ended",
                                  head=head)
        except InvalidPathError as e:
            return error_response("NAME_INVALID", str(e), head=head)
        except (PathNotFoundError, FileNotFoundError):
            # storage that vanished under the request: a concurrent delete won the race
            code = _VANISHED.get(id(handlers), "NAME_UNKNOWN")
            return error_response(code, "deleted while the request was running", status=404, head=head)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, path)
            return error_response("UNKNOWN", "internal server error", status=500, head=head)
