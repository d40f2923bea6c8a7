"""The pull-through cache: manifests and blobs of mirrored names, from storage or upstream.

Manifests by tag: the stored tag is served while younger than the upstream's ``tagttl`` (when
it was last checked is kept in storage, so every worker and replica agrees); an older one is
checked with a HEAD upstream, and fetched again only when the digest moved. When upstream is
unreachable, answers 5xx or 429, the stored copy is served anyway ("stale", with a ``Warning``
header and a log line). By digest: storage first, then upstream (verified against the digest).
Indexes are stored byte for byte (same digest); their children, like blobs, are fetched when a
client asks for them.

Blobs: registry/mirror/fill.py. Every manifest served records when it was last pulled (at most
once per ``ttl``/10 per worker), which ``pyreg gc`` reads (registry/mirror/expiry.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from pyreg.registry.config import MirrorConfig
from pyreg.registry.errors import RegistryError, blob_unknown, manifest_unknown
from pyreg.registry.layout import ROOT, Layout, StoredManifest, blob_data_path
from pyreg.registry.mirror import metrics
from pyreg.registry.mirror.answer import fill_response
from pyreg.registry.mirror.config import Route, route
from pyreg.registry.mirror.fill import Fill
from pyreg.registry.mirror.upstream import Upstream, unavailable
from pyreg.storage.digest import Digest
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.manifest import ManifestError, parse_manifest
from pyreg.storage.remote import RemoteError

log = logging.getLogger("pyreg.mirror")

T = TypeVar("T")
STATE: Final = f"{ROOT}/pyreg-mirror"
STALE_WARNING: Final = '110 pyreg "Response is stale: upstream unavailable"'


def checked_path(name: str, tag: str) -> str:
    """When this tag was last found current upstream (seconds since the epoch)."""
    return f"{STATE}/repositories/{name}/_tags/{tag}"


def taglist_path(name: str) -> str:
    """Upstream's tag list of a name as last fetched: ``{"fetched": <epoch>, "tags": [...]}``."""
    return f"{STATE}/repositories/{name}/_taglist"


def pulled_path(name: str, digest: Digest) -> str:
    """When this manifest was last pulled through the mirror (seconds since the epoch)."""
    return f"{STATE}/repositories/{name}/_pulled/{digest.algorithm}/{digest.hex}"


class SingleFlight:
    """Concurrent calls with one key in this worker share one run of the work."""

    def __init__(self) -> None:
        self._running: dict[Any, asyncio.Future[Any]] = {}

    async def do(self, key: Any, work: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Any] = asyncio.ensure_future(work())
        self._running[key] = future
        future.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(future)


def unavailable_error(upstream: Upstream, what: str, e: RemoteError) -> RegistryError:
    return RegistryError("UNAVAILABLE", f"{what} is not cached and upstream {upstream.host} "
                         f"cannot serve it: {e}", status=503 if unavailable(e) else 502)


class Mirror:
    """The cache of every configured upstream; one per app (``Registry.mirror``)."""

    def __init__(self, config: MirrorConfig, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        self.driver = layout.driver
        self.upstreams = [Upstream(u) for u in config.upstreams]
        self._flights = SingleFlight()
        self._fills: dict[Digest, Fill] = {}
        self._pulled: dict[tuple[str, Digest], float] = {}

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()

    def route(self, name: str) -> Route | None:
        return route(self.config, name)

    # -- bookkeeping in storage ----------------------------------------------------------------

    async def _stamp(self, path: str) -> None:
        await self.driver.put_content(path, f"{time.time():.3f}".encode())

    async def _stamp_time(self, path: str) -> float | None:
        try:
            return float((await self.driver.get_content(path)).decode())
        except (PathNotFoundError, ValueError):
            return None

    async def record_pull(self, name: str, digest: Digest, ttl: float) -> None:
        """Note the pull for expiry; cheap: one small write per manifest per ttl/10 per worker."""
        now = time.monotonic()
        last = self._pulled.get((name, digest))
        if last is not None and now - last < min(ttl / 10, 3600.0):
            return
        self._pulled[(name, digest)] = now
        if len(self._pulled) > 100_000:
            self._pulled.clear()
        await self._stamp(pulled_path(name, digest))

    # -- manifests -----------------------------------------------------------------------------

    async def manifest(self, name: str, reference: str, digest: Digest | None,
                       where: Route) -> tuple[StoredManifest, str | None]:
        """The manifest for a GET/HEAD of a mirrored name, and a Warning header when stale."""
        upstream = self.upstreams[where.upstream]
        if digest is not None:
            stored = await self.layout.manifest(name, digest)
            if stored is not None:
                metrics.HITS.labels(upstream.name, "manifest").inc()
            else:
                stored = await self._flights.do(("manifest", name, str(digest)),
                                                lambda: self._fetch(name, where, str(digest), digest))
            await self.record_pull(name, stored.digest, upstream.config.ttl)
            return stored, None
        found, warning = await self._flights.do(("tag", name, reference),
                                                lambda: self._by_tag(name, reference, where))
        await self.record_pull(name, found.digest, upstream.config.ttl)
        return found, warning

    async def _by_tag(self, name: str, tag: str, where: Route) -> tuple[StoredManifest, str | None]:
        upstream = self.upstreams[where.upstream]
        local = await self.layout.resolve_tag(name, tag)
        stored = await self.layout.manifest(name, local) if local is not None else None
        if stored is None:  # nothing to revalidate: one GET by tag instead of HEAD, then GET
            fetched = await self._fetch(name, where, tag, None)
            await self.layout.tag(name, tag, fetched.digest)
            await self._stamp(checked_path(name, tag))
            return fetched, None
        checked = await self._stamp_time(checked_path(name, tag))
        if checked is not None and 0 <= time.time() - checked < upstream.config.tagttl:
            metrics.HITS.labels(upstream.name, "manifest").inc()
            return stored, None
        try:
            current, _ = await upstream.call(upstream.head_manifest, where.remote, tag)
        except RemoteError as e:
            metrics.ERRORS.labels(upstream.name).inc()
            if unavailable(e):
                metrics.STALE.labels(upstream.name).inc()
                log.warning("mirror: serving %s:%s stale (%s): %s", name, tag, stored.digest, e)
                return stored, STALE_WARNING
            raise unavailable_error(upstream, f"{name}:{tag}", e) from None
        if current is None:
            raise manifest_unknown(tag)
        if current == stored.digest:
            await self._stamp(checked_path(name, tag))
            metrics.HITS.labels(upstream.name, "manifest").inc()
            return stored, None
        moved = await self.layout.manifest(name, current)
        if moved is None:
            moved = await self._fetch(name, where, tag, current)
        else:
            metrics.HITS.labels(upstream.name, "manifest").inc()
        await self.layout.tag(name, tag, moved.digest)
        await self._stamp(checked_path(name, tag))
        return moved, None

    async def _fetch(self, name: str, where: Route, reference: str,
                     digest: Digest | None) -> StoredManifest:
        """GET a manifest upstream by digest (verified against it) or, for a tag not stored
        yet, by the tag itself (one round trip; checked against Docker-Content-Digest when
        upstream sends it), store it as is and link it."""
        upstream = self.upstreams[where.upstream]
        metrics.MISSES.labels(upstream.name, "manifest").inc()
        what = f"{name}@{digest}" if digest is not None else f"{name}:{reference}"
        try:
            blob = await upstream.call(upstream.get_manifest, where.remote,
                                       reference if digest is None else str(digest), digest)
        except RemoteError as e:
            metrics.ERRORS.labels(upstream.name).inc()
            if e.status == 404:
                raise manifest_unknown(reference) from None
            raise unavailable_error(upstream, what, e) from None
        digest = blob.digest
        metrics.UPSTREAM_BYTES.labels(upstream.name).inc(len(blob.data))
        try:
            parsed = parse_manifest(blob.data, blob.media_type)
        except ManifestError as e:
            raise RegistryError("UNAVAILABLE", f"upstream {upstream.host} sent an invalid manifest "
                                f"for {what}: {e}", status=502) from None
        await self.layout.put_manifest(name, digest, blob.data, parsed)
        return StoredManifest(digest, blob.data, parsed.media_type)

    # -- tag listing ---------------------------------------------------------------------------

    async def tags(self, name: str, where: Route) -> tuple[list[str] | None, str | None]:
        """Upstream's tags of a mirrored name (sorted; None: no such repository) and a Warning
        header. The list is kept in storage for the upstream's ``tagttl``, like a tag; when
        upstream is unavailable the last list fetched is served stale, or, if none ever was,
        the tags the mirror holds."""
        return await self._flights.do(("tags", name), lambda: self._tags(name, where))

    async def _tags(self, name: str, where: Route) -> tuple[list[str] | None, str | None]:
        upstream = self.upstreams[where.upstream]
        cached: list[str] | None = None
        fetched: float | None = None
        try:
            doc = json.loads(await self.driver.get_content(taglist_path(name)))
            cached, fetched = sorted(str(t) for t in doc["tags"]), float(doc["fetched"])
        except (PathNotFoundError, ValueError, KeyError, TypeError):
            pass
        if cached is not None and fetched is not None and 0 <= time.time() - fetched < upstream.config.tagttl:
            metrics.HITS.labels(upstream.name, "tags").inc()
            return cached, None
        metrics.MISSES.labels(upstream.name, "tags").inc()
        try:
            tags = await upstream.call(upstream.tags, where.remote)
        except RemoteError as e:
            metrics.ERRORS.labels(upstream.name).inc()
            if e.status == 404:
                return None, None
            if not unavailable(e):
                raise unavailable_error(upstream, f"the tags of {name}", e) from None
            metrics.STALE.labels(upstream.name).inc()
            log.warning("mirror: serving the tags of %s %s (%s)", name,
                        "stale" if cached is not None else "held here", e)
            return (cached if cached is not None else await self.layout.tags(name)), STALE_WARNING
        tags = sorted(set(tags))
        await self.driver.put_content(taglist_path(name), json.dumps(
            {"fetched": time.time(), "tags": tags}).encode())
        return tags, None

    async def referrers(self, name: str, digest: Digest, artifact_type: str | None,
                        where: Route) -> tuple[bytes, bool] | None:
        """Upstream's referrers index for a mirrored name (its entries are then fetched by
        digest on demand); None when upstream cannot say: the stored referrers answer."""
        upstream = self.upstreams[where.upstream]
        try:
            found = await upstream.call(upstream.referrers, where.remote, digest, artifact_type)
        except RemoteError as e:
            metrics.ERRORS.labels(upstream.name).inc()
            log.warning("mirror: referrers of %s@%s from storage: %s", name, digest, e)
            return None
        if found is not None:
            try:
                doc = json.loads(found[0])
                ok = isinstance(doc, dict) and isinstance(doc.get("manifests"), list)
            except ValueError:
                ok = False
            if not ok:
                return None
        return found

    def _forget_fill(self, digest: Digest) -> None:
        self._fills.pop(digest, None)

    # -- blobs ---------------------------------------------------------------------------------

    async def blob(self, request: Request, registry: Any, name: str, digest: Digest,
                   where: Route) -> Response:
        from pyreg.registry.routes.blobs import serve_blob  # the one way a stored blob is answered

        upstream = self.upstreams[where.upstream]
        size = await self.layout.repo_blob_size(name, digest)
        if size is None and await self.layout.blob_size(digest) is not None:
            await self.layout.link_blob(name, digest)  # cached through another name already
            size = await self.layout.repo_blob_size(name, digest)
        if size is not None:
            metrics.HITS.labels(upstream.name, "blob").inc()
            return await serve_blob(request, registry, str(digest), blob_data_path(digest), size)
        if request.method == "HEAD":
            try:
                size = await upstream.call(upstream.blob_size, where.remote, digest)
            except RemoteError as e:
                metrics.ERRORS.labels(upstream.name).inc()
                raise unavailable_error(upstream, f"blob {digest}", e) from None
            if size is None:
                raise blob_unknown(str(digest))
            return Response(b"", headers={"Docker-Content-Digest": str(digest), "Content-Length": str(size),
                                          "Content-Type": "application/octet-stream"})
        fill = self._fills.get(digest)
        if fill is None:
            metrics.MISSES.labels(upstream.name, "blob").inc()
            fill = Fill(self.layout, upstream, where.remote, name, digest)
            self._fills[digest] = fill
            fill.start(lambda: self._forget_fill(digest))
        else:
            metrics.HITS.labels(upstream.name, "blob").inc()
        await fill.ready.wait()
        if fill.error is not None:
            if fill.upstream_missing:
                raise blob_unknown(str(digest))
            raise RegistryError("UNAVAILABLE", f"blob {digest}: {fill.error}", status=502)
        if request.headers.get("range") and fill.task is not None:
            await asyncio.shield(fill.task)  # a part of it: answered from the finished blob
            if not fill.published:
                raise RegistryError("UNAVAILABLE", f"blob {digest}: {fill.error}", status=502)
            size = await self.layout.repo_blob_size(name, digest)
            if size is None:
                raise blob_unknown(str(digest))
            return await serve_blob(request, registry, str(digest), blob_data_path(digest), size)
        assert fill.size is not None
        headers = {"Docker-Content-Digest": str(digest), "Content-Type": "application/octet-stream",
                   "Content-Length": str(fill.size), "Accept-Ranges": "bytes", "ETag": f'"{digest}"'}

        return fill_response(fill, request.scope, headers)
