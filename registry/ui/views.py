"""What the UI pages show, read straight from the storage layout (registry/layout.py).

Each function answers one page in one call, so the browser never makes a request per tag:
a page of repositories with their tag counts, a page of tags with digest, size, platforms and
times, one manifest with its config, layers, platforms and referrers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from pyreg.registry.layout import Layout, blob_data_path, tag_current_path
from pyreg.storage.digest import Digest
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.manifest import Manifest, ManifestError, parse_manifest

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
CATALOG_TTL = 5.0  # seconds the full repository walk is reused (a big registry has 10,000s)
CONFIG_LIMIT = 4 * 1024 * 1024  # bytes of an image config the UI will read


def page_args(query: dict[str, str]) -> tuple[int, int]:
    """(page, size) from ``?page=&size=``, clamped to sane values."""
    try:
        page = max(1, int(query.get("page", "1")))
    except ValueError:
        page = 1
    try:
        size = min(MAX_PAGE_SIZE, max(1, int(query.get("size", str(PAGE_SIZE)))))
    except ValueError:
        size = PAGE_SIZE
    return page, size


def _slice(items: list[Any], page: int, size: int) -> list[Any]:
    return items[(page - 1) * size: page * size]


class Catalog:
    """The repository list, walked at most every CATALOG_TTL seconds. Once walked, an old list is
    answered at once while a background walk refreshes it (a walk of 10,000 repositories takes
    seconds on a filesystem); only the very first request waits."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._names: list[str] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    async def _walk(self) -> None:
        async with self._lock:
            self._names = await self.layout.repositories()
            self._at = time.monotonic()

    async def names(self) -> list[str]:
        if self._names is None:
            await self._walk()
        elif time.monotonic() - self._at > CATALOG_TTL and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self._walk())
        return self._names or []

async def repositories_page(catalog: Catalog, may_pull: Callable[[str], bool], q: str,
                            page: int, size: int) -> dict[str, Any]:
    names = [n for n in await catalog.names() if may_pull(n) and (not q or q.lower() in n.lower())]
    shown = _slice(names, page, size)
    counts = await asyncio.gather(*(catalog.layout.tags(n) for n in shown))
    items = [{"name": n, "tags": len(t or [])} for n, t in zip(shown, counts, strict=True)]
    return {"total": len(names), "page": page, "size": size, "items": items}


def _parse(data: bytes) -> Manifest | None:
    try:
        return parse_manifest(data)
    except ManifestError:
        return None


def _platform(p: dict[str, Any] | None) -> str | None:
    if not p:
        return None
    text = f"{p.get('os', '?')}/{p.get('architecture', '?')}"
    return text + (f"/{p['variant']}" if p.get("variant") else "")


async def _config(layout: Layout, m: Manifest) -> dict[str, Any] | None:
    if m.config is None or m.config.size > CONFIG_LIMIT or "json" not in m.config.media_type:
        return None
    try:
        data = json.loads(await layout.driver.get_content(blob_data_path(m.config.digest)))
    except (PathNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _image_platform(config: dict[str, Any] | None) -> str | None:
    if not config or "os" not in config:
        return None
    return _platform(config)


async def _pushed(layout: Layout, name: str, tag: str) -> str | None:
    try:
        info = await layout.driver.stat(tag_current_path(name, tag))
    except PathNotFoundError:
        return None
    return info.modtime.isoformat()


async def _child_blobs(layout: Layout, child: Digest) -> dict[str, int]:
    stored = await layout.manifest_content(child)
    m = _parse(stored.data) if stored else None
    if m is None:
        return {}
    return {str(d.digest): d.size for d in ([m.config] if m.config else []) + list(m.layers)}


async def _index_size(layout: Layout, index: Manifest) -> int:
    """Compressed size of everything an index's platforms pull (each blob counted once)."""
    blobs: dict[str, int] = {}
    for child in index.manifests:
        blobs[str(child.digest)] = child.size
        blobs.update(await _child_blobs(layout, child.digest))
    return sum(blobs.values())


async def tag_row(layout: Layout, name: str, tag: str) -> dict[str, Any] | None:
    digest = await layout.resolve_tag(name, tag)
    if digest is None:
        return None
    stored = await layout.manifest_content(digest)
    row: dict[str, Any] = {"tag": tag, "digest": str(digest), "pushed": await _pushed(layout, name, tag)}
    if stored is None:
        return row
    m = _parse(stored.data)
    row["media_type"] = stored.media_type
    if m is None:
        return row
    if m.manifests:
        row["kind"] = "index"
        row["platforms"] = [p for p in (_platform(d.platform) for d in m.manifests) if p]
        row["size"] = await _index_size(layout, m)
        return row
    config = await _config(layout, m)
    row["kind"] = "image"
    row["size"] = sum(d.size for d in m.layers) + (m.config.size if m.config else 0)
    row["platforms"] = [p for p in [_image_platform(config)] if p]
    row["created"] = config.get("created") if config else None
    return row


async def tags_page(layout: Layout, name: str, q: str, page: int, size: int) -> dict[str, Any] | None:
    tags = await layout.tags(name)
    if tags is None:
        return None
    matching = [t for t in tags if not q or q.lower() in t.lower()]
    rows = await asyncio.gather(*(tag_row(layout, name, t) for t in _slice(matching, page, size)))
    return {"name": name, "total": len(matching), "page": page, "size": size,
            "items": [r for r in rows if r is not None]}


async def _referrers(layout: Layout, name: str, digest: Digest) -> list[dict[str, Any]]:
    out = []
    for ref in await layout.referrers(name, digest):
        stored = await layout.manifest(name, ref)
        m = _parse(stored.data) if stored else None
        if m is None:
            continue
        kind = m.artifact_type or (m.config.media_type if m.config else None) or "unknown"
        out.append({"digest": str(ref), "artifact_type": kind, "annotations": m.annotations or {}})
    return sorted(out, key=lambda r: (r["artifact_type"], r["digest"]))


async def manifest_view(layout: Layout, name: str, ref: str) -> dict[str, Any] | None:
    try:
        digest = Digest.parse(ref) if ":" in ref else await layout.resolve_tag(name, ref)
    except ValueError:
        return None
    if digest is None:
        return None
    stored = await layout.manifest(name, digest)
    if stored is None:
        return None
    tags = [t for t in await layout.tags(name) or [] if await layout.resolve_tag(name, t) == digest]
    view: dict[str, Any] = {"name": name, "digest": str(digest), "media_type": stored.media_type,
                            "manifest_size": len(stored.data), "tags": tags,
                            "manifest": json.loads(stored.data)}
    m = _parse(stored.data)
    if m is None:
        return view
    if m.manifests:
        view["kind"] = "index"
        view["platforms"] = [{"digest": str(d.digest), "media_type": d.media_type,
                              "size": d.size + sum((await _child_blobs(layout, d.digest)).values()),
                              "platform": _platform(d.platform) or "unknown",
                              "artifact_type": d.artifact_type} for d in m.manifests]
        view["size"] = await _index_size(layout, m)
    else:
        view["kind"] = "image"
        config = await _config(layout, m)
        inner = (config or {}).get("config") or {}
        view["config"] = {
            "digest": str(m.config.digest) if m.config else None,
            "media_type": m.config.media_type if m.config else None,
            "platform": _image_platform(config), "created": (config or {}).get("created"),
            "env": inner.get("Env") or [], "cmd": inner.get("Cmd"), "entrypoint": inner.get("Entrypoint"),
            "workdir": inner.get("WorkingDir"), "user": inner.get("User"),
            "labels": inner.get("Labels") or {}, "history": (config or {}).get("history") or [],
        }
        view["layers"] = [{"digest": str(d.digest), "size": d.size, "media_type": d.media_type}
                          for d in m.layers]
        view["size"] = sum(d.size for d in m.layers) + (m.config.size if m.config else 0)
    view["subject"] = str(m.subject.digest) if m.subject else None
    view["referrers"] = await _referrers(layout, name, digest)
    return view
