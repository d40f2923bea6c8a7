"""Mark-and-sweep garbage collection of the blob store, safe to run beside a live registry.

What it does (Distribution's ``registry garbage-collect``, over the same layout):

* **mark**: walk every repository; every manifest revision is a root (with ``delete_untagged``
  only the tagged ones, plus what must stay with them, see below). A root marks its own digest,
  its config and layers, and its index children (recursively, through the repository's
  revisions): storage/graph.py's typed walker over the registry-layout ContentStore
  (storage/registrystore.py). With ``delete_untagged`` a manifest that no tag reaches is garbage
  unless it is an index child of a kept manifest, a referrer whose ``subject`` is kept (referrers live and die
  with their subject), or digest-marked from another repository; its revision link, its
  tag-history entries and its referrer links go too.
* **sweep**: every blob in ``blobs/`` that is not marked is deleted, with the repository
  ``_layers`` links that point at it (and links that point at nothing) and its verification record
  (``pyreg-verified/``, registry/verified.py; old records of blobs no longer stored go too).

Why it is safe beside live pushes, where Distribution's must run read-only: a push writes blobs
(and their ``_layers`` links) first and the manifest last, so between the two the blobs look like
garbage. Three rules close that gap:

1. **Grace period** (``grace``, default 1 h): a blob whose data, or any link to it (a layer
   link of any repository, a revision link), was written less than ``grace`` ago is never swept,
   and a revision younger than that is never treated as untagged garbage. Every way a blob enters
   a repository writes a fresh link: a finished upload (even when the blob already existed), a
   cross-repository mount, a manifest push. So a push whose blobs and manifest are less than
   ``grace`` apart — every real push — loses nothing. Upload sessions (``_uploads``) are never
   touched at all: their bytes are not in the blob store until they finish, and finishing
   writes a fresh link. Times are compared with the store's own modification times, so
   ``grace`` must exceed the clock skew between this host and the store (1 h does, widely).
2. **Set aside, settle, look again, then delete**: the old blobs that are still garbage lose
   their ``_layers`` links and their data is *moved* aside (to ``pyreg-gc/``, outside the
   layout), so from then on the registry says they are missing: a client that asks (HEAD)
   uploads the blob again, and a manifest that needs it is refused with MANIFEST_BLOB_UNKNOWN
   instead of accepted. GC then waits ``settle`` seconds (default 10: more than the server's
   lookup cache ttl, 1 s by default, plus one manifest PUT or upload finish) and walks the
   repositories again. Whatever a manifest or link written since the mark now needs is rescued:
   its data is moved back (unless a new upload already put fresh bytes there) and its links are
   restored. Only the rest is deleted. A run that dies half-way leaves data in ``pyreg-gc/``;
   the next run puts it back before it marks.
3. **Re-checks right before each destructive step**: an untagged revision is deleted only if
   its link is still old and no tag points at it (checked again after the deletions, and the
   revision restored if a tag moved onto it meanwhile).

The one assumption left: a server step that checks a blob and then writes a link or a manifest
(an upload finish, a manifest PUT, a mount) finishes within ``settle`` (a stalled store, or a
process paused for longer, could still slip past), and ``settle`` exceeds the server's cache ttl.
The price of setting aside: a push that, during a run, re-references a blob that was garbage at
the mark (an image deleted and pushed again, its blobs skipped as "already there") can find that
blob missing for up to ``settle`` seconds, until the second look puts it back. On the
filesystem the emptied ``blobs/…/<hex>/`` directories stay (removing one could race an upload of
the same bytes into it; nothing reads an empty one, Distribution neither). Run one GC at a
time. On S3 setting data aside is a server-side copy, so garbage is copied once before it is
deleted.

Only the driver's walk / list / stat / get_content / put_content / move / delete are used, so it works on
every driver. ``dry_run`` reports and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pyreg.registry import layout as paths
from pyreg.storage import graph
from pyreg.storage import mediatypes as mt
from pyreg.storage.content import ContentNotFound
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.distlayout import digest_at
from pyreg.storage.driver import Driver, FileInfo
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, parse_manifest
from pyreg.storage.registrystore import RegistryStore

log = logging.getLogger("pyreg.gc")

# Where a run moves garbage before the second look; outside Distribution's blobs/ and
# repositories/, so neither server nor either GC sees it as content.
QUARANTINE = f"{paths.ROOT}/pyreg-gc"
DEFAULT_GRACE = 3600.0
DEFAULT_SETTLE = 10.0
_DIGEST_IN_TEXT = re.compile(rb'"((?:sha256:[a-f0-9]{64})|(?:sha512:[a-f0-9]{128}))"')

T = TypeVar("T")


@dataclass(frozen=True)
class GCOptions:
    dry_run: bool = False
    delete_untagged: bool = False
    grace: float = DEFAULT_GRACE  # seconds: younger data or links are never swept
    settle: float = DEFAULT_SETTLE  # seconds between unlinking and the second look
    concurrency: int = 16  # driver calls in flight


@dataclass
class GCReport:
    """What a run found and did (or, dry run, would do)."""

    dry_run: bool
    delete_untagged: bool
    grace: float
    repositories: int = 0
    manifests: int = 0
    blobs: int = 0
    blobs_bytes: int = 0
    blobs_marked: int = 0
    blobs_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    blobs_kept_recent: int = 0  # unreferenced, but within the grace period
    blobs_rescued: int = 0  # unreferenced at mark time, referenced by a push during the run
    manifests_deleted: list[dict[str, str]] = field(default_factory=list)
    manifests_restored: int = 0
    layer_links_deleted: int = 0
    tag_history_deleted: int = 0
    referrer_links_deleted: int = 0
    uploads_in_progress: int = 0
    repositories_deleted: list[str] = field(default_factory=list)  # left empty (delete_untagged)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "delete_untagged": self.delete_untagged, "grace_seconds": self.grace,
            "repositories": self.repositories, "manifests": self.manifests, "blobs": self.blobs,
            "blobs_bytes": self.blobs_bytes, "blobs_marked": self.blobs_marked,
            "blobs_deleted": len(self.blobs_deleted), "bytes_freed": self.bytes_freed,
            "deleted_digests": sorted(self.blobs_deleted),
            "blobs_kept_recent": self.blobs_kept_recent, "blobs_rescued": self.blobs_rescued,
            "manifests_deleted": self.manifests_deleted, "manifests_restored": self.manifests_restored,
            "layer_links_deleted": self.layer_links_deleted,
            "tag_history_deleted": self.tag_history_deleted,
            "referrer_links_deleted": self.referrer_links_deleted,
            "uploads_in_progress": self.uploads_in_progress, "seconds": round(self.seconds, 3),
            "repositories_deleted": self.repositories_deleted,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        return (f"{self.repositories} repositories, {self.manifests} manifests, {self.blobs} blobs "
                f"({_human(self.blobs_bytes)}); {self.blobs_marked} blobs in use; {verb} "
                f"{len(self.blobs_deleted)} blobs ({_human(self.bytes_freed)}), "
                f"{len(self.manifests_deleted)} untagged manifests, {self.layer_links_deleted} layer links; "
                f"kept {self.blobs_kept_recent} recent unreferenced blobs (grace {self.grace:g}s), "
                f"rescued {self.blobs_rescued}")


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


# -- what the store holds ------------------------------------------------------------------------


@dataclass
class _Repo:
    name: str
    revisions: dict[Digest, datetime] = field(default_factory=dict)  # link modtime
    layers: dict[Digest, datetime] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)  # tags with a current link
    tag_history: dict[Digest, list[str]] = field(default_factory=dict)  # digest -> index entry dirs
    referrers: list[tuple[Digest, Digest, str, datetime]] = field(default_factory=list)  # subject, ref, dir
    uploads: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Blob:
    digest: Digest
    size: int
    modtime: datetime


def quarantine_path(digest: Digest) -> str:
    return f"{QUARANTINE}/{digest.algorithm}/{digest.hex}"


async def _files(driver: Driver, root: str) -> AsyncIterator[tuple[list[str], FileInfo]]:
    """Every file under ``root``, with its path split into the components below ``root``;
    nothing when ``root`` is missing."""
    prefix = root + "/"
    try:
        async for info in driver.walk(root):
            if not info.is_dir and info.path.startswith(prefix):
                yield info.path[len(prefix):].split("/"), info
    except PathNotFoundError:
        pass


async def scan_repositories(driver: Driver) -> dict[str, _Repo]:
    """Every repository's links, from one walk of ``repositories/`` (names may hold slashes)."""
    repos: dict[str, _Repo] = {}
    async for parts, info in _files(driver, paths.REPOSITORIES):
        i = next((k for k, p in enumerate(parts) if p.startswith("_")), None)
        if not i:
            continue
        name, kind, rest = "/".join(parts[:i]), parts[i], parts[i + 1:]
        repo = repos.get(name)
        if repo is None:
            repo = repos[name] = _Repo(name)
        _add_path(repo, kind, rest, info.modtime)
    return repos


def _add_path(repo: _Repo, kind: str, rest: list[str], modtime: datetime) -> None:
    base = f"{paths.repo_path(repo.name)}/{kind}"
    if kind == "_uploads" and rest:
        repo.uploads.add(rest[0])
    elif kind == "_layers" and len(rest) == 3 and rest[2] == "link":
        d = digest_at(rest[0], rest[1])
        if d is not None:
            repo.layers[d] = modtime
    elif kind != "_manifests" or not rest:
        return
    elif rest[0] == "revisions" and len(rest) == 4 and rest[3] == "link":
        d = digest_at(rest[1], rest[2])
        if d is not None:
            repo.revisions[d] = modtime
    elif rest[0] == "tags" and len(rest) == 4 and rest[2:] == ["current", "link"]:
        repo.tags.add(rest[1])
    elif rest[0] == "tags" and len(rest) == 6 and rest[2] == "index" and rest[5] == "link":
        d = digest_at(rest[3], rest[4])
        if d is not None:
            repo.tag_history.setdefault(d, []).append("/".join([base, *rest[:5]]))
    elif rest[0] == "referrers" and len(rest) == 6 and rest[5] == "link":
        subject, ref = digest_at(rest[1], rest[2]), digest_at(rest[3], rest[4])
        if subject is not None and ref is not None:
            repo.referrers.append((subject, ref, "/".join([base, *rest[:5]]), modtime))


async def scan_blobs(driver: Driver) -> dict[Digest, _Blob]:
    """Every ``blobs/<alg>/<xx>/<hex>/data`` in the store; anything else there is left alone."""
    blobs: dict[Digest, _Blob] = {}
    async for parts, info in _files(driver, paths.BLOBS):
        if len(parts) != 4 or parts[3] != "data" or parts[2][:2] != parts[1]:
            continue
        d = digest_at(parts[0], parts[2])
        if d is not None:
            blobs[d] = _Blob(d, info.size, info.modtime)
    return blobs


# -- the collector -------------------------------------------------------------------------------


class GarbageCollector:
    def __init__(self, driver: Driver, options: GCOptions | None = None, now: datetime | None = None,
                 invalidate: Callable[[], Awaitable[None]] | None = None) -> None:
        self.driver = driver
        self.invalidate = invalidate  # drops the servers' shared lookup cache (redis)
        self.options = options or GCOptions()
        self._now = now
        self.store = RegistryStore(driver)  # blobs by digest (storage/registrystore.py)
        self._manifests: dict[Digest, Manifest | None] = {}
        self._sem = asyncio.Semaphore(max(1, self.options.concurrency))

    def _cutoff(self) -> datetime:
        now = self._now or datetime.now(UTC)
        return now - timedelta(seconds=self.options.grace)

    async def _limited(self, coro: Awaitable[T]) -> T:
        async with self._sem:
            return await coro

    async def _each(self, fn: Callable[[Any], Awaitable[T]], items: Iterable[Any]) -> list[T]:
        return list(await asyncio.gather(*(self._limited(fn(item)) for item in items)))

    async def _delete(self, path: str) -> bool:
        return await paths.delete_path(self.driver, path)

    async def manifest(self, digest: Digest) -> Manifest | None:
        """A stored manifest in the typed model (None: its bytes are not in the blob store).

        A document we cannot parse (schema 1, something newer) is scanned for every digest in it,
        so it keeps more rather than less: it stands as an index of those digests.
        """
        if digest in self._manifests:
            return self._manifests[digest]
        try:
            data = await self.store.get(digest)
        except ContentNotFound:
            try:  # set aside by this run a moment ago
                data = await self.driver.get_content(quarantine_path(digest))
            except PathNotFoundError:
                self._manifests[digest] = None
                return None
        found: Manifest
        try:
            found = parse_manifest(data)
        except ManifestError:
            digests = []
            for raw in _DIGEST_IN_TEXT.findall(data[: 8 * 1024 * 1024]):
                with contextlib.suppress(DigestError):
                    digests.append(Digest.parse(raw.decode()))
            found = Manifest(mt.OCI_INDEX, manifests=tuple(Descriptor(mt.OCI_MANIFEST, d, 0)
                                                           for d in digests))
        self._manifests[digest] = found
        return found

    def _descriptor(self, digest: Digest) -> Descriptor:
        """A root for the walker: a revision link names a digest only, its bytes the type."""
        m = self._manifests.get(digest)
        return Descriptor(m.media_type if m is not None else mt.OCI_MANIFEST, digest, 0)

    def _walk_once(self, roots: list[Digest], expand: Container[Digest], skip: Container[Digest],
                   refresh: set[Digest] | None) -> tuple[set[Digest], set[Digest], set[Digest]]:
        """One round of ``_reach`` over the manifests read so far: (reached, followed, unread)."""
        missing: set[Digest] = set()
        followed: set[Digest] = set()
        is_root = set(roots)

        def fetch(desc: Descriptor) -> Manifest | None:
            d = desc.digest
            if d in skip or (d not in is_root and d not in expand):
                return None
            if d not in self._manifests or (refresh is not None and d not in refresh):
                missing.add(d)
                return None
            m = self._manifests[d]
            if m is not None:
                followed.add(d)
            return m

        reached = {node.descriptor.digest for d in roots for node in graph.walk(self._descriptor(d), fetch)}
        return reached, followed, missing

    async def _reach(self, roots: list[Digest], expand: Container[Digest], skip: Container[Digest] = (),
                     refresh: set[Digest] | None = None) -> set[Digest]:
        """Every digest reachable from ``roots``, walked by storage/graph.py's walker.

        A manifest's references are followed when it is a root, or in ``expand`` (the
        repository's revisions: an index child is found through them, as in Distribution) and
        not in ``skip`` (followed by an earlier walk). With ``refresh``, each manifest is read
        again once (a blob may have been rewritten since the mark) and added to it.

        The walker is synchronous and driver reads are not: it walks over the manifests read so
        far, notes those it lacks, which are then read side by side, and walks again — one round
        per level of the graph, a handful at most.
        """
        roots = list(dict.fromkeys(roots))
        while True:
            reached, followed, missing = self._walk_once(roots, expand, skip, refresh)
            is_root = set(roots)
            # a revision reached under a media type the walker does not descend into (an index
            # child typed as something else) is followed too, as a root of its own
            extra = [d for d in reached if d in expand and d not in is_root and d not in skip
                     and d not in followed and d not in missing and self._manifests.get(d) is not None]
            if not missing and not extra:
                return reached
            if refresh is not None:
                for d in missing:
                    self._manifests.pop(d, None)
                    refresh.add(d)
            await self._each(self.manifest, missing)
            roots += extra

    async def _tag_targets(self, repo: str, tags: Iterable[str]) -> dict[str, Digest]:
        async def read(tag: str) -> tuple[str, Digest | None]:
            try:
                raw = await self.driver.get_content(paths.tag_current_path(repo, tag))
            except PathNotFoundError:
                return tag, None
            try:
                return tag, Digest.parse(raw.decode("ascii", "replace").strip())
            except DigestError:
                return tag, None

        return {t: d for t, d in await self._each(read, sorted(tags)) if d is not None}

    async def _mark_repo(self, repo: _Repo, marked: set[Digest], cutoff: datetime,
                         tag_targets: dict[str, Digest]) -> set[Digest]:
        """Mark what ``repo`` keeps; returns the revisions it keeps."""
        kept: set[Digest] = set()
        await self._each(self.manifest, repo.revisions)  # read every manifest concurrently, once

        async def visit(roots: list[Digest]) -> None:
            reached = await self._reach(roots, repo.revisions, skip=kept)
            marked.update(reached)  # even a tag whose revision is gone: keep its bytes
            kept.update(roots)
            kept.update(d for d in reached if d in repo.revisions)

        if not self.options.delete_untagged:
            await visit(list(repo.revisions))
            return kept
        young = [d for d, modtime in repo.revisions.items() if modtime > cutoff]  # a push may be tagging it
        await visit([*tag_targets.values(), *young])
        # referrers stay with a kept subject (and referrers of those): the subject relation, typed
        by_subject: dict[Digest, list[Digest]] = {}
        for d in repo.revisions:
            m = self._manifests.get(d)
            if m is not None and m.subject is not None:
                by_subject.setdefault(m.subject.digest, []).append(d)
        while new := [r for s in list(kept) for r in by_subject.get(s, ()) if r not in kept]:
            await visit(new)
        return kept

    async def run(self) -> GCReport:
        opts = self.options
        started = time.monotonic()
        report = GCReport(dry_run=opts.dry_run, delete_untagged=opts.delete_untagged, grace=opts.grace)
        if not opts.dry_run:
            await self._recover()
        # After the put-back: on S3 a blob put back is a copy with a new LastModified (whole
        # seconds), which must not count as younger than the cutoff of the run that restored it.
        cutoff = self._cutoff()

        # -- mark ----------------------------------------------------------------------------
        repos = await scan_repositories(self.driver)
        blobs = await scan_blobs(self.driver)
        report.repositories = sum(1 for r in repos.values() if r.revisions or r.tags)
        report.manifests = sum(len(r.revisions) for r in repos.values())
        report.blobs = len(blobs)
        report.blobs_bytes = sum(b.size for b in blobs.values())
        report.uploads_in_progress = sum(len(r.uploads) for r in repos.values())

        marked: set[Digest] = set()
        kept_by_repo: dict[str, set[Digest]] = {}

        async def mark(repo: _Repo) -> None:  # repositories side by side; driver calls stay bounded
            targets = await self._tag_targets(repo.name, repo.tags) if opts.delete_untagged else {}
            kept_by_repo[repo.name] = await self._mark_repo(repo, marked, cutoff, targets)

        await asyncio.gather(*(mark(repo) for repo in repos.values()))
        report.blobs_marked = len(marked & blobs.keys())

        # untagged manifests (only with delete_untagged): old, unkept, not marked from anywhere
        untagged: dict[str, set[Digest]] = {}
        if opts.delete_untagged:
            for repo in repos.values():
                gone = [d for d, modtime in repo.revisions.items()
                        if d not in kept_by_repo[repo.name] and d not in marked and modtime <= cutoff]
                if gone:
                    untagged[repo.name] = set(gone)

        # newest link to each digest anywhere: a young link keeps a blob
        newest: dict[Digest, datetime] = {}
        for repo in repos.values():
            for links in (repo.layers, repo.revisions):
                for d, modtime in links.items():
                    if d in untagged.get(repo.name, ()):
                        continue
                    if d not in newest or modtime > newest[d]:
                        newest[d] = modtime

        candidates: dict[Digest, _Blob] = {}
        for d, blob in blobs.items():
            if d in marked:
                continue
            if blob.modtime > cutoff or newest.get(d, cutoff) > cutoff:
                report.blobs_kept_recent += 1
                continue
            candidates[d] = blob

        # layer links to blobs being swept, or to nothing at all
        dead_links: dict[Digest, list[str]] = {}
        for repo in repos.values():
            for d, modtime in repo.layers.items():
                if d in candidates or (d not in blobs and d not in marked and modtime <= cutoff):
                    dead_links.setdefault(d, []).append(repo.name)

        for d in candidates:
            log.debug("blob eligible for deletion: %s", d)

        if opts.dry_run:
            report.manifests_deleted = [{"repository": name, "digest": str(d)}
                                        for name, gone in sorted(untagged.items()) for d in sorted(gone)]
            report.blobs_deleted = [str(d) for d in candidates]
            report.bytes_freed = sum(b.size for b in candidates.values())
            report.layer_links_deleted = sum(len(v) for v in dead_links.values())
            for name, gone_set in untagged.items():
                repo = repos[name]
                report.tag_history_deleted += sum(len(repo.tag_history.get(d, [])) for d in gone_set)
                report.referrer_links_deleted += sum(1 for _, r, _, _ in repo.referrers if r in gone_set)
            report.seconds = time.monotonic() - started
            return report

        # -- sweep, step 1: untagged manifests ---------------------------------------------------
        deleted_revisions: dict[str, list[Digest]] = {}
        for name, doomed in sorted(untagged.items()):
            deleted_revisions[name] = await self._delete_manifests(repos[name], sorted(doomed), cutoff,
                                                                   report)
            report.manifests_deleted += [{"repository": name, "digest": str(d)}
                                         for d in deleted_revisions[name]]

        # dangling referrer links: the referrer's revision is gone (or going) and the link is old
        for repo in repos.values():
            gone_here = set(deleted_revisions.get(repo.name, ()))
            for _subject, ref, path, modtime in repo.referrers:
                if ref in gone_here:
                    continue  # counted by _delete_manifests
                if ref not in repo.revisions and modtime <= cutoff and await self._delete(path):
                    report.referrer_links_deleted += 1

        # -- step 2: unlink the garbage and move its data aside ---------------------------------
        # From here on a client that asks is told the blob is missing (it uploads it again), and
        # a manifest that needs it is refused, while the bytes can still be put back.
        unlinked: dict[Digest, list[str]] = {}

        async def unlink(item: tuple[Digest, str]) -> None:
            d, name = item
            if await self._delete(paths.layer_link_path(name, d).rsplit("/", 1)[0]):
                unlinked.setdefault(d, []).append(name)
                report.layer_links_deleted += 1

        await self._each(unlink, [(d, name) for d, names in dead_links.items() for name in names])

        async def set_aside(blob: _Blob) -> _Blob | None:
            try:
                await self.driver.move(paths.blob_data_path(blob.digest), quarantine_path(blob.digest))
            except PathNotFoundError:
                return None  # gone already
            return blob

        aside = {b.digest: b for b in await self._each(set_aside, list(candidates.values())) if b is not None}
        if self.invalidate is not None:  # what the servers cached in Redis goes with it (rule 2)
            await self.invalidate()

        # -- step 3: settle, look again: rescue what a push started to use meanwhile -------------
        rescued: set[Digest] = set()
        if aside or deleted_revisions:
            if opts.settle > 0:
                await asyncio.sleep(opts.settle)
            rescued = await self._second_look(repos, aside, deleted_revisions, cutoff)
            report.blobs_rescued = len(rescued)
            for d in rescued:
                await self._put_back(d)
                for name in unlinked.get(d, []):
                    await self.driver.put_content(paths.layer_link_path(name, d), str(d).encode())
                    report.layer_links_deleted -= 1

        # -- step 4: delete the data set aside ---------------------------------------------------
        async def sweep(blob: _Blob) -> None:
            if not await self._delete(quarantine_path(blob.digest)):
                return
            log.info("deleted blob %s (%d bytes)", blob.digest, blob.size)
            report.blobs_deleted.append(str(blob.digest))
            report.bytes_freed += blob.size
            await self._delete(paths.verified_path(blob.digest))  # its verification record
            # The emptied blob directory stays (filesystem): removing it could race an upload of
            # the same bytes renaming its data into it. Nothing reads an empty one.

        await self._each(sweep, [b for d, b in aside.items() if d not in rescued])
        await self._drop_stale_records(blobs, cutoff)
        if opts.delete_untagged:
            report.repositories_deleted = await self._drop_empty_repositories(sorted(repos), cutoff)
        report.seconds = time.monotonic() - started
        log.info("garbage collection: %s", report.summary())
        return report

    async def _drop_empty_repositories(self, names: list[str], cutoff: datetime) -> list[str]:
        """``delete_untagged``: a repository left with no manifest, tag, upload or young layer link
        (a push in progress) loses ``_manifests`` and ``_layers``, so ``_catalog`` stops listing it
        (nested repositories stay). Checked right before each delete, as rule 3 does."""
        dropped = []
        for name in names:
            base = paths.repo_path(name)
            files = [(sub, info) for sub in ("_manifests", "_uploads", "_layers")
                     for info in await self._files_under(f"{base}/{sub}")]
            if any(sub != "_layers" or info.modtime > cutoff for sub, info in files):
                continue
            # (on S3 an emptied _manifests is gone already: old _layers links may be all there is)
            if (await self._delete(f"{base}/_manifests")) | (await self._delete(f"{base}/_layers")):
                log.info("deleted empty repository %s", name)
                dropped.append(name)
        return dropped

    async def _drop_stale_records(self, blobs: Container[Digest], cutoff: datetime) -> None:
        """Verification records (registry/verified.py) of blobs that were not there at the mark and
        are older than the cutoff: left by a blob deleted some other way (Distribution's own
        garbage-collect knows nothing of them). A younger one may be a blob published since."""
        stale = [info.path async for parts, info in _files(self.driver, paths.VERIFIED)
                 if len(parts) == 2 and info.modtime <= cutoff
                 and (d := digest_at(parts[0], parts[1])) is not None and d not in blobs]
        await self._each(self._delete, stale)
        if stale:
            log.info("deleted %d verification records of blobs no longer stored", len(stale))

    async def _files_under(self, path: str) -> list[FileInfo]:
        try:
            return [info async for info in self.driver.walk(path) if not info.is_dir]
        except PathNotFoundError:
            return []

    async def _put_back(self, digest: Digest) -> None:
        """Undo ``set_aside``: the data returns unless a new upload already put fresh bytes there."""
        try:
            await self.driver.stat(paths.blob_data_path(digest))
        except PathNotFoundError:
            with contextlib.suppress(PathNotFoundError):
                await self.driver.move(quarantine_path(digest), paths.blob_data_path(digest))
            return
        await self._delete(quarantine_path(digest))

    async def _recover(self) -> int:
        """Put back data an interrupted run had set aside (the next mark judges it afresh)."""
        restored = 0
        try:
            items = [info.path async for info in self.driver.walk(QUARANTINE) if not info.is_dir]
        except PathNotFoundError:
            return 0
        for path in items:
            parts = path[len(QUARANTINE) + 1:].split("/")
            d = digest_at(*parts) if len(parts) == 2 else None
            if d is not None:
                await self._put_back(d)
                restored += 1
        return restored

    async def _delete_manifests(self, repo: _Repo, gone: list[Digest], cutoff: datetime,
                                report: GCReport) -> list[Digest]:
        """Delete untagged revisions whose link is still old and that no tag points at now."""
        current = await self._tag_targets(repo.name, await self._list_tags(repo.name))
        tagged_now = set(current.values())
        deleted: list[Digest] = []
        for d in gone:
            link = paths.revision_link_path(repo.name, d)
            try:
                info = await self.driver.stat(link)
            except PathNotFoundError:
                continue
            if info.modtime > cutoff or d in tagged_now:
                continue
            for entry in repo.tag_history.get(d, []):
                if await self._delete(entry):
                    report.tag_history_deleted += 1
            for _subject, ref, path, _ in repo.referrers:
                if ref == d and await self._delete(path):
                    report.referrer_links_deleted += 1
            if await self._delete(link.rsplit("/", 1)[0]):
                log.info("deleted untagged manifest %s@%s", repo.name, d)
                deleted.append(d)
        # a tag moved onto one of them while we deleted: put the revision back
        current = await self._tag_targets(repo.name, await self._list_tags(repo.name))
        for d in set(current.values()) & set(deleted):
            await self.driver.put_content(paths.revision_link_path(repo.name, d), str(d).encode())
            deleted.remove(d)
            report.manifests_restored += 1
        return deleted

    async def _list_tags(self, name: str) -> list[str]:
        try:
            return [p.rsplit("/", 1)[-1] for p in await self.driver.list(paths.tags_path(name))]
        except PathNotFoundError:
            return []

    async def _second_look(self, before: dict[str, _Repo], candidates: dict[Digest, _Blob],
                           deleted: dict[str, list[Digest]], cutoff: datetime) -> set[Digest]:
        """Candidates that a manifest or link written since the mark phase now needs."""
        now_repos = await scan_repositories(self.driver)
        needed: set[Digest] = set()
        refreshed: set[Digest] = set()  # manifests read again since the mark
        for repo in now_repos.values():
            old = before.get(repo.name)
            for d, modtime in repo.layers.items():
                if modtime > cutoff:
                    needed.add(d)
            # young, new since the mark, put back, or a live manifest that looked like garbage
            fresh = [d for d, modtime in repo.revisions.items()
                     if modtime > cutoff or old is None or d not in old.revisions
                     or d in deleted.get(repo.name, ()) or d in candidates]
            needed.update(await self._reach(fresh, repo.revisions, refresh=refreshed))
        rescued = needed & candidates.keys()
        for d in rescued:
            log.info("blob %s is in use again (a push during collection): kept", d)
        return rescued


async def collect_garbage(driver: Driver, options: GCOptions | None = None,
                          now: datetime | None = None,
                          invalidate: Callable[[], Awaitable[None]] | None = None) -> GCReport:
    """Run one mark-and-sweep over ``driver``; see the module docstring for the rules."""
    return await GarbageCollector(driver, options, now, invalidate).run()
