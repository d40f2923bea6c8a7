"""Expiry of cached content, run by ``pyreg gc`` before it marks.

A manifest of a mirrored name that nobody pulled within its upstream's ``ttl`` is deleted (its
revision, the tags on it, its referrer link), as a user's DELETE would; the mark-and-sweep that
follows then removes the blobs nothing references any more, like any unreferenced data (with
GC's own grace period). The last pull is the stamp registry/mirror/cache.py writes; a manifest
without one counts from when it was stored. Local names (``mirror.local``, or names no
upstream's namespace matches) are never expired.
"""

from __future__ import annotations

import logging
import time

from pyreg.registry.config import Config
from pyreg.registry.layout import Layout, delete_path, repo_path, revision_link_path
from pyreg.registry.mirror.cache import pulled_path
from pyreg.registry.mirror.config import route
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.driver import Driver
from pyreg.storage.errors import PathNotFoundError

log = logging.getLogger("pyreg.mirror")


async def _revisions(driver: Driver, name: str) -> list[Digest]:
    found: list[Digest] = []
    base = f"{repo_path(name)}/_manifests/revisions"
    try:
        algorithms = await driver.list(base)
    except PathNotFoundError:
        return found
    for alg_path in algorithms:
        try:
            entries = await driver.list(alg_path)
        except PathNotFoundError:
            continue
        for entry in entries:
            try:
                found.append(Digest.parse(f"{alg_path.rsplit('/', 1)[-1]}:{entry.rsplit('/', 1)[-1]}"))
            except DigestError:
                continue
    return found


async def _last_pull(driver: Driver, name: str, digest: Digest) -> float | None:
    try:
        return float((await driver.get_content(pulled_path(name, digest))).decode())
    except (PathNotFoundError, ValueError):
        pass
    try:
        return (await driver.stat(revision_link_path(name, digest))).modtime.timestamp()
    except PathNotFoundError:
        return None


async def expire(driver: Driver, config: Config, dry_run: bool = False,
                 now: float | None = None) -> list[dict[str, str]]:
    """Delete (or with ``dry_run`` only list) the cached manifests not pulled within their ttl;
    ``[{"repository", "digest", "reason"}]`` of each."""
    if not config.mirror.upstreams:
        return []
    now = time.time() if now is None else now
    layout = Layout(driver, 0)
    expired: list[dict[str, str]] = []
    for name in await layout.repositories():
        where = route(config.mirror, name)
        if where is None:
            continue
        ttl = config.mirror.upstreams[where.upstream].ttl
        for digest in await _revisions(driver, name):
            pulled = await _last_pull(driver, name, digest)
            if pulled is None or now - pulled <= ttl:
                continue
            expired.append({"repository": name, "digest": str(digest),
                            "reason": f"mirror: not pulled for {now - pulled:.0f}s (ttl {ttl:g}s)"})
            if dry_run:
                continue
            await layout.delete_manifest(name, digest)
            await delete_path(driver, pulled_path(name, digest))
            log.info("mirror: expired %s@%s (not pulled within %gs)", name, digest, ttl)
    return expired
