"""Pull, push and copy: manifests walked, blobs moved in parallel, everything verified.

Pull writes into the local store (blobs verified while they stream, layers extracted as soon as
each arrives, the name tagged last). Push reads from a local image, an OCI layout directory or an
archive, skips blobs the registry has (HEAD), mounts across repositories of the same registry,
and uploads the rest streamed or chunked. Copy moves registry to registry without touching disk.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from client.progress import Progress, human
from client.remote import connect
from storage import graph, mediatypes
from storage.content import ContentStore, LayoutStore, read_all
from storage.digest import Digest, DigestMismatchError
from storage.graph import Platform, select_platform
from storage.localstore import Extractor, LocalStore, chain_ids
from storage.manifest import Descriptor, Manifest, ManifestBlob, ManifestError, layout_index, ref_name
from storage.reference import Reference, parse
from storage.remote import RegistryClient, RemoteError

# ------------------------------------------------------------------------------------ results

@dataclass
class BlobResult:
    digest: str
    size: int
    status: str        # "exists", "pulled", "pushed", "mounted", "copied"


@dataclass
class TransferResult:
    reference: str
    digest: str
    media_type: str
    platform: str | None = None
    blobs: list[BlobResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "mediaType": self.media_type,
                "platform": self.platform, "blobs": [b.__dict__ for b in self.blobs]}


def _run_parallel(jobs: list[Callable[[], BlobResult]], parallel: int) -> list[BlobResult]:
    if parallel <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pyreg-blob")
    try:
        futures = [pool.submit(job) for job in jobs]
        results = []
        error: Exception | None = None
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                if error is None:
                    error = exc
                    for other in futures:
                        other.cancel()  # not started yet: no point once one blob failed
    except KeyboardInterrupt:
        # drop what has not started; running transfers end with the process (the CLI exits at
        # once), their partial files stay invisible in the ingest area for the next pull
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)  # a failed blob: the ones already running finish (or fail) first
    if error is not None:
        raise error
    return results


def _skip_or_mount(rc: RegistryClient, repository: str, digest: Digest, size: int,
                   mount_from: str | None, progress: Progress) -> BlobResult | str | None:
    """A blob the registry need not receive: its BlobResult when ``repository`` has it or a
    cross-repo mount from ``mount_from`` worked; else the upload location a refused mount opened
    (None when no mount was tried)."""
    label = _short(str(digest))
    if rc.blob_exists(repository, digest) is not None:
        progress.finish(label, "already exists")
        return BlobResult(str(digest), size, "exists")
    if mount_from is None:
        return None
    location = rc.mount_blob(repository, digest, mount_from)
    if location is None:
        progress.finish(label, f"mounted from {mount_from}")
        return BlobResult(str(digest), size, "mounted")
    return location


def _copy_missing(rc: RegistryClient, repository: str, blobs: dict[Digest, int], mount_from: str | None,
                  progress: Progress, parallel: int, status: str,
                  send: Callable[[Digest, int, str | None, Callable[[int], None]], None]) -> list[BlobResult]:
    """Copy what the target lacks, the one place for skip / mount / parallelism / progress: each
    blob the registry already has is skipped (HEAD), one it can mount from ``mount_from`` is
    mounted, the rest go through ``send(digest, size, upload location or None, advance)``."""
    def job(digest: Digest, size: int) -> BlobResult:
        label = _short(str(digest))
        location = _skip_or_mount(rc, repository, digest, size, mount_from, progress)
        if isinstance(location, BlobResult):
            return location
        advance = progress.task(label, size)
        send(digest, size, location, advance)
        progress.finish(label, f"{status} {human(size)}")
        return BlobResult(str(digest), size, status)

    return _run_parallel([partial(job, d, s) for d, s in blobs.items()], parallel)


def _short(digest: str) -> str:
    return digest.split(":")[-1][:12]


def _image(m: ManifestBlob) -> Manifest:
    """The validated image manifest of ``m`` (config and layers); RemoteError for anything else."""
    if m.media_type not in mediatypes.IMAGE_MANIFESTS:
        raise RemoteError(f"unsupported manifest type {m.media_type!r}")
    try:
        parsed = m.parsed
    except ManifestError as exc:
        raise RemoteError(f"manifest {m.digest} is invalid: {exc}") from None
    if parsed.config is None:
        raise RemoteError(f"manifest {m.digest} has no config")
    return parsed


def _graph(top: ManifestBlob, fetch: Callable[[Descriptor], ManifestBlob | None]
           ) -> tuple[list[ManifestBlob], dict[Digest, int]]:
    """Walk the graph below ``top`` (storage/graph.py): the manifests under it, children before
    parents, and every blob (config, layer) an image among them needs. ``fetch`` None: an absent
    child manifest, left out."""
    fetched: dict[Digest, ManifestBlob] = {top.digest: top}

    def parsed(desc: Descriptor) -> Manifest | None:
        blob = fetched.get(desc.digest) or fetch(desc)
        if blob is None:
            return None
        fetched[desc.digest] = blob
        return _image(blob) if blob.media_type in mediatypes.IMAGE_MANIFESTS else blob.parsed

    manifests: list[ManifestBlob] = []
    blobs: dict[Digest, int] = {}
    for node in graph.walk(top.descriptor, parsed):
        if node.manifest is not None:
            if node.descriptor.digest != top.digest:
                manifests.append(fetched[node.descriptor.digest])
        elif not graph.is_manifest(node.descriptor):
            blobs[node.descriptor.digest] = node.descriptor.size
    return manifests, blobs


# ------------------------------------------------------------------------------------ pull

def pull(ref: Reference, store: LocalStore, *, extractor: Extractor | None, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    progress = progress or Progress(enabled=False)
    wanted = platform or Platform.host()
    with connect(ref.registry, insecure=insecure, pool=parallel) as rc:
        top = rc.get_manifest(ref.repository, ref.reference, verify=ref.digest)
        chosen, plat = top, None
        if top.media_type in mediatypes.INDEXES:
            desc = select_platform(top.parsed, wanted)
            chosen = rc.get_manifest(ref.repository, str(desc.digest), verify=desc.digest)
            plat = desc.platform
        manifest = _image(chosen)
        result = TransferResult(str(ref), str(chosen.digest), chosen.media_type,
                                str(Platform.of(plat)) if plat else None)
        with store.writing():
            config_desc = manifest.config
            assert config_desc is not None
            if not store.has_blob(config_desc.digest):
                store.put_blob(rc.get_blob_bytes(ref.repository, config_desc.digest, size=config_desc.size),
                               config_desc.digest)
            config = store.read_json(config_desc.digest)
            layers = manifest.layers
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(layers):
                raise RemoteError(f"image config lists {len(diff_ids)} diff IDs for {len(layers)} layers")
            chains = chain_ids(diff_ids)

            def job(desc: Descriptor, diff_id: str, chain_id: str) -> BlobResult:
                digest, size = desc.digest, desc.size
                label = _short(str(digest))
                status = "exists"
                if not store.has_blob(digest):
                    advance = progress.task(label, size)
                    with store.blob_writer(digest, size) as writer:
                        if not writer.exists:
                            advance(writer.offset)
                            rc.download_blob(ref.repository, digest, writer, advance)
                            status = "pulled"
                if extractor is not None:
                    store.ensure_layer(desc, diff_id, chain_id, extractor)
                progress.finish(label, f"{status} {human(size)}" if status == "pulled" else "already exists")
                return BlobResult(str(digest), size, status)

            result.blobs = _run_parallel(
                [partial(job, d, i, c) for d, i, c in zip(layers, diff_ids, chains, strict=True)], parallel)
            store.put_blob(chosen.data, chosen.digest)
            store.tag(str(ref), chosen.digest, chosen.media_type, len(chosen.data), platform=plat)
    return result


# ------------------------------------------------------------------------------------ sources for push

@dataclass
class Source:
    """Something to push: the top manifest, the manifests under it (children before parents),
    the blobs its images need, and a way to open them."""

    top: ManifestBlob
    children: list[ManifestBlob]
    blobs: dict[Digest, int]
    store: ContentStore
    mount_from: tuple[str, str] | None = None   # (registry, repository) the blobs came from
    name: str = ""


def _fetcher(store: ContentStore) -> Callable[[Descriptor], ManifestBlob | None]:
    def fetch(desc: Descriptor) -> ManifestBlob | None:
        if store.info(desc.digest) is None:
            return None  # a platform this store never pulled
        return ManifestBlob.of(read_all(store, desc), desc.media_type, desc.digest)
    return fetch


def local_source(store: LocalStore, text: str) -> Source:
    record = store.lookup(text)
    top = ManifestBlob.of(store.read_blob(record.digest), record.media_type, record.digest)
    children, blobs = _graph(top, _fetcher(store))
    mount = None
    try:
        origin = parse(record.name)
        mount = (origin.registry, origin.repository)
    except ValueError:
        pass
    return Source(top, children, blobs, store, mount, record.name)


def layout_source(path: Path, tag: str | None) -> Source:
    """An OCI image layout directory; ``tag`` picks an index.json entry by its ref.name annotation."""
    entries = layout_index((path / "index.json").read_bytes())
    if tag is None:
        if len(entries) != 1:
            names = [ref_name(e) or "?" for e in entries]
            raise RemoteError(
                f"{path} holds {len(entries)} images ({', '.join(names)}): name one as DIR:TAG")
        entry = entries[0]
    else:
        for entry in entries:
            if ref_name(entry) == tag:
                break
        else:
            raise RemoteError(f"no image tagged {tag!r} in {path}/index.json")

    store = LayoutStore(path)
    try:
        top = ManifestBlob.of(read_all(store, entry), entry.media_type, entry.digest)
        children, blobs = _graph(top, _fetcher(store))
    except DigestMismatchError as exc:
        raise RemoteError(f"{path}: a blob does not match its digest ({exc})") from None
    return Source(top, children, blobs, store, None, str(path))


# ------------------------------------------------------------------------------------ push

def push(source: Source, dest: Reference, *, parallel: int = 4, chunk_size: int | None = None,
         insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    progress = progress or Progress(enabled=False)
    mount = None
    origin = source.mount_from
    if origin and origin[0] == dest.registry and origin[1] != dest.repository:
        mount = origin[1]
    with connect(dest.registry, insecure=insecure, pool=parallel) as rc:
        rc.ping()

        def upload(digest: Digest, size: int, location: str | None, advance: Callable[[int], None]) -> None:
            info = source.store.info(digest)
            if info is None or info.size != size:
                actual = "missing" if info is None else f"{info.size} bytes"
                raise RemoteError(f"blob {digest} is {actual}, its descriptor says {size} bytes")
            rc.upload_blob(dest.repository, digest, size, lambda: source.store.reader(digest), chunk_size,
                           location, advance)

        results = _copy_missing(rc, dest.repository, source.blobs, mount, progress, parallel, "pushed",
                                upload)
        for child in source.children:
            rc.put_manifest(dest.repository, str(child.digest), child.data, child.media_type)
        digest = rc.put_manifest(dest.repository, dest.reference, source.top.data, source.top.media_type)
    if dest.digest is not None and dest.digest != digest:
        raise RemoteError(f"pushed manifest is {digest}, not {dest.digest}")
    return TransferResult(str(dest), str(digest), source.top.media_type, None, results)


# ------------------------------------------------------------------------------------ copy

def copy(src: Reference, dest: Reference, *, all_platforms: bool = True, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    """Registry to registry. An index is copied whole unless a platform is asked for."""
    progress = progress or Progress(enabled=False)
    same_registry = src.registry == dest.registry
    mount = src.repository if same_registry and src.repository != dest.repository else None
    with connect(src.registry, insecure=insecure, pool=parallel) as sc:
        dc = sc if same_registry else connect(dest.registry, insecure=insecure, pool=parallel)
        try:
            top = sc.get_manifest(src.repository, src.reference, verify=src.digest)
            plat = None
            if top.media_type in mediatypes.INDEXES and (platform is not None or not all_platforms):
                desc = select_platform(top.parsed, platform or Platform.host())
                plat = desc.platform
                top = sc.get_manifest(src.repository, str(desc.digest), verify=desc.digest)
            children, blobs = _graph(
                top, lambda d: sc.get_manifest(src.repository, str(d.digest), verify=d.digest))
            dc.ping()

            def stream(digest: Digest, size: int, location: str | None,
                       advance: Callable[[int], None]) -> None:
                if location is not None:
                    dc.http.delete(location)  # the registry would not mount; stream it instead
                dc.copy_blob_from(sc, src.repository, dest.repository, digest, size, advance)

            results = _copy_missing(dc, dest.repository, blobs, mount, progress, parallel, "copied", stream)
            for child_manifest in children:
                dc.put_manifest(dest.repository, str(child_manifest.digest), child_manifest.data,
                                child_manifest.media_type)
            digest = dc.put_manifest(dest.repository, dest.reference, top.data, top.media_type)
        finally:
            if dc is not sc:
                dc.close()
    shown = str(Platform.of(plat)) if plat else None
    return TransferResult(str(dest), str(digest), top.media_type, shown, results)
