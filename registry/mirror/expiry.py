"""Expiry of cached content, run by ``pyreg gc`` before it marks.

A manifest of a mirrored name that nobody pulled within its upstream's ``ttl`` is deleted (its
revision, the tags on it, its referrer link), as a user's DELETE would; the mark-and-sweep that
follows then removes the blobs nothing references any more, like any unreferenced data (with
GC's own grace period). The last pull is the stamp registry/mirror/cache.py writes; a manifest
without one counts from when it was stored. Local names (``mirror.local``, or names no
upstream's namespace matches) are never expired.

The mirror's own state of a name (``pyreg-mirror/repositories/<name>``: upstream's tag list,
when each tag was last checked) goes with its last manifest. A tag list fetched longer ago than
the ttl goes too, also for names only ever listed, never pulled (they have no repository).
"""

from __future__ import annotations

import json
import logging
import time

from pyreg.registry.config import Config
from pyreg.registry.layout import Layout, delete_path, repo_path, revision_link_path
from pyreg.registry.mirror.cache import STATE, pulled_path, taglist_path
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


async def _expire_taglists(driver: Driver, config: Config, now: float, dry_run: bool) -> None:
    """Drop the tag lists fetched longer ago than their name's ttl (unreadable ones too)."""
    prefix = f"{STATE}/repositories/"
    found: list[str] = []
    try:
        async for info in driver.walk(f"{STATE}/repositories"):
            if info.path.startswith(prefix) and info.path.endswith("/_taglist"):
                found.append(info.path[len(prefix):-len("/_taglist")])
    except PathNotFoundError:
        return
    for name in found:
        where = route(config.mirror, name)
        if where is None:
            continue
        ttl = config.mirror.upstreams[where.upstream].ttl
        try:
            fetched = float(json.loads(await driver.get_content(taglist_path(name)))["fetched"])
        except PathNotFoundError:
            continue
        except (ValueError, KeyError, TypeError):
            fetched = None
        if fetched is not None and now - fetched <= ttl:
            continue
        log.info("mirror: %s the tag list of %s (not listed within %gs)",
                 "would expire" if dry_run else "expired", name, ttl)
        if not dry_run:
            await delete_path(driver, taglist_path(name))


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
        revisions = await _revisions(driver, name)
        kept = len(revisions)
        for digest in revisions:
            pulled = await _last_pull(driver, name, digest)
            if pulled is None or now - pulled <= ttl:
                continue
            expired.append({"repository": name, "digest": str(digest),
                            "reason": f"mirror: not pulled for {now - pulled:.0f}s (ttl {ttl:g}s)"})
            kept -= 1
            if dry_run:
                continue
            await layout.delete_manifest(name, digest)
            await delete_path(driver, pulled_path(name, digest))
            log.info("mirror: expired %s@%s (not pulled within %gs)", name, digest, ttl)
        if kept == 0 and revisions and not dry_run:  # its tag list and tag checks go with it
            for part in ("_taglist", "_tags", "_pulled"):  # not the folder: it holds names below
                await delete_path(driver, f"{STATE}/repositories/{name}/{part}")
    await _expire_taglists(driver, config, now, dry_run)
    return expired
