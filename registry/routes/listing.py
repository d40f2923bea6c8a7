"""Listings: tags (``n``/``last`` + ``Link``), the Docker ``_catalog``, and referrers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from registry.errors import name_unknown
from registry.routes.common import BASE_HEADERS, Registry, check_name, pagination, parse_digest
from storage import mediatypes as mt
from storage.manifest import ManifestError, parse_manifest


def _page(items: list[str], n: int | None, last: str | None) -> tuple[list[str], bool]:
    """The slice after ``last`` (lexical order), at most ``n`` long, and whether more follow."""
    if last is not None:
        items = [i for i in items if i > last]
    if n is None:
        return items, False
    return items[:n], len(items) > n


def _json(body: dict[str, Any], headers: dict[str, str]) -> Response:
    data = json.dumps(body).encode()
    return Response(data, headers={**BASE_HEADERS, "Content-Type": "application/json", **headers})


async def tags_list(request: Request, registry: Registry, name: str, _: str) -> Response:
    check_name(name)
    n, last = pagination(request)
    tags = await registry.layout.tags(name)
    if tags is None:
        raise name_unknown(name)
    page, more = _page(tags, n, last)
    headers = {}
    if more and page:
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    return _json({"name": name, "tags": page}, headers)


async def catalog(request: Request, registry: Registry, name: str, _: str) -> Response:
    n, last = pagination(request)
    repos = await registry.layout.repositories()
    auth = getattr(request.state, "auth", None)  # registry/auth: show only what the caller may pull
    if auth is not None:
        repos = [r for r in repos if auth.can(r, "pull")]
    page, more = _page(repos, n, last)
    headers = {}
    if more and page:
        query = urlencode({"n": n, "last": page[-1]})
        headers["Link"] = f'</v2/_catalog?{query}>; rel="next"'
    return _json({"repositories": page}, headers)


async def referrers(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    subject = parse_digest(reference)
    wanted = request.query_params.get("artifactType")
    descriptors: list[dict[str, Any]] = []
    for digest in await registry.layout.referrers(name, subject):
        stored = await registry.layout.manifest(name, digest)
        if stored is None:
            continue  # deleted since, or by another process
        try:
            manifest = parse_manifest(stored.data)
        except ManifestError:
            continue
        artifact_type = manifest.effective_artifact_type
        if wanted and artifact_type != wanted:
            continue
        entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(digest),
                                 "size": len(stored.data)}
        if artifact_type:
            entry["artifactType"] = artifact_type
        if manifest.annotations:
            entry["annotations"] = manifest.annotations
        descriptors.append(entry)
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    headers = {"Content-Type": mt.OCI_INDEX}
    if wanted:
        headers["OCI-Filters-Applied"] = "artifactType"
    return _json(body, headers)
