"""Listings: tags (``n``/``last`` + ``Link``), the Docker ``_catalog``, and referrers."""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from pyreg.registry.errors import name_unknown
from pyreg.registry.routes.common import (
    BASE_HEADERS,
    LOOKUP_CONCURRENCY,
    MAX_MANIFEST_SIZE,
    Registry,
    bounded_gather,
    check_name,
    pagination,
    parse_digest,
)
from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest
from pyreg.storage.manifest import ManifestError, parse_manifest

MAX_REFERRERS: Final = 1000  # referrers per response page (each one a manifest read)


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
    where = registry.mirror.route(name) if registry.mirror is not None else None
    warning = None
    if where is not None:  # a mirrored name: upstream's list (registry/mirror/)
        tags, warning = await registry.mirror.tags(name, where)
    else:
        tags = await registry.layout.tags(name)
    if tags is None:
        raise name_unknown(name)
    page, more = _page(tags, n, last)
    headers = {"Warning": warning} if warning else {}
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


async def _referrer_entry(registry: Registry, name: str, digest: Digest,
                          wanted: str | None) -> dict[str, Any] | None:
    """The descriptor of one referrer (None: gone, unreadable or filtered out)."""
    stored = await registry.layout.manifest(name, digest)
    if stored is None:
        return None  # deleted since, or by another process
    try:
        manifest = parse_manifest(stored.data)
    except ManifestError:
        return None
    artifact_type = manifest.effective_artifact_type
    if wanted and artifact_type != wanted:
        return None
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(digest),
                             "size": len(stored.data)}
    if artifact_type:
        entry["artifactType"] = artifact_type
    if manifest.annotations:
        entry["annotations"] = manifest.annotations
    return entry


async def referrers(request: Request, registry: Registry, name: str, reference: str) -> Response:
    """The referrers index of a subject, paginated so that one response stays bounded.

    A page reads at most MAX_REFERRERS manifests (LOOKUP_CONCURRENCY at a time) and its body
    stays under MAX_MANIFEST_SIZE (annotations can be large); a longer list gets a
    ``Link: <…?last=<digest>>; rel="next"`` header, as the spec allows. With an
    ``artifactType`` filter a page may hold fewer entries.
    """
    check_name(name)
    subject = parse_digest(reference)
    wanted = request.query_params.get("artifactType")
    where = registry.mirror.route(name) if registry.mirror is not None else None
    if where is not None:  # a mirrored name: upstream's list (registry/mirror/)
        found = await registry.mirror.referrers(name, subject, wanted, where)
        if found is not None:
            headers = {"Content-Type": mt.OCI_INDEX}
            if found[1]:
                headers["OCI-Filters-Applied"] = "artifactType"
            return Response(found[0], headers=headers)
    n, last = pagination(request)
    limit = MAX_REFERRERS if n is None else min(n, MAX_REFERRERS)
    after = parse_digest(last) if last is not None else None
    candidates = [d for d in await registry.layout.referrers(name, subject) if after is None or d > after]
    more = len(candidates) > limit
    descriptors: list[dict[str, Any]] = []
    budget = MAX_MANIFEST_SIZE - 1024
    next_last: Digest | None = None
    page = candidates[:limit]
    at = 0
    while at < len(page):  # a batch at a time: only LOOKUP_CONCURRENCY manifests in memory
        batch = page[at:at + LOOKUP_CONCURRENCY]
        entries = await bounded_gather([_referrer_entry(registry, name, d, wanted) for d in batch],
                                       LOOKUP_CONCURRENCY)
        for digest, entry in zip(batch, entries, strict=True):
            cost = len(json.dumps(entry)) + 2 if entry is not None else 0
            if cost > budget and next_last is not None:
                more, at = True, len(page)  # the body is full: the rest goes to the next page
                break
            budget -= cost
            next_last = digest
            if entry is not None:
                descriptors.append(entry)
        at += LOOKUP_CONCURRENCY
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    headers = {"Content-Type": mt.OCI_INDEX}
    if wanted:
        headers["OCI-Filters-Applied"] = "artifactType"
    if more and next_last is not None:
        params: dict[str, str | int] = {"last": str(next_last)}
        if n is not None:
            params["n"] = n
        if wanted:
            params["artifactType"] = wanted
        headers["Link"] = f'</v2/{name}/referrers/{subject}?{urlencode(params)}>; rel="next"'
    return _json(body, headers)
