"""Pull, push and copy: manifests walked, blobs moved in parallel, everything verified.

Pull writes into the local store (blobs verified while they stream, layers extracted as soon as
each arrives, the name tagged last). Push reads from a local image, an OCI layout directory or an
archive, skips blobs the registry has (HEAD), mounts across repositories of the same registry,
and uploads the rest streamed or chunked. Copy moves registry to registry without touching disk.
"""

from __future__ import annotations

import json
import platform as _platform
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from client.progress import Progress, human
from client.remote import Manifest, RegistryClient, RegistryError
from storage import mediatypes
from storage.digest import Digest
from storage.localstore import Extractor, LocalStore, chain_ids
from storage.reference import Reference, parse

# ------------------------------------------------------------------------------------ platforms

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], _ARCH.get(parts[1], parts[1]), parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        machine = _platform.machine().lower()
        variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
        return cls("linux", _ARCH.get(machine, machine), variant)

    def matches(self, p: dict[str, Any] | None) -> bool:
        if not p:
            return False
        if p.get("os") != self.os or p.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        other = p.get("variant") or ("v8" if self.architecture == "arm64" else None)
        return other == self.variant


def select_platform(index: dict[str, Any], wanted: Platform) -> dict[str, Any]:
    candidates = [d for d in index.get("manifests") or [] if d.get("mediaType") in mediatypes.MANIFESTS
                  or "mediaType" not in d]
    for desc in candidates:
        if wanted.matches(desc.get("platform")):
            return desc
    available = ", ".join(
        str(Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant")))
        for p in (d.get("platform") or {} for d in candidates) if p) or "none"
    raise RegistryError(f"no image for platform {wanted} (available: {available})")


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


def _short(digest: str) -> str:
    return digest.split(":")[-1][:12]


def _manifest_of(m: Manifest) -> dict[str, Any]:
    """The JSON of an image manifest, validated by storage.manifest (descriptors, digests, sizes)."""
    from storage.manifest import ManifestError, parse_manifest

    if m.media_type not in mediatypes.IMAGE_MANIFESTS:
        raise RegistryError(f"unsupported manifest type {m.media_type!r}")
    try:
        parsed = parse_manifest(m.data, m.media_type)
    except ManifestError as exc:
        raise RegistryError(f"manifest {m.digest} is invalid: {exc}") from None
    if parsed.config is None:
        raise RegistryError(f"manifest {m.digest} has no config")
    return m.json()


# ------------------------------------------------------------------------------------ pull

def pull(ref: Reference, store: LocalStore, *, extractor: Extractor | None, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    progress = progress or Progress(enabled=False)
    wanted = platform or Platform.host()
    with RegistryClient(ref.registry, insecure=insecure, pool=parallel) as rc:
        top = rc.get_manifest(ref.repository, ref.reference, verify=ref.digest)
        chosen, plat = top, None
        if top.media_type in mediatypes.INDEXES:
            desc = select_platform(top.json(), wanted)
            child = Digest.parse(desc["digest"])
            chosen = rc.get_manifest(ref.repository, str(child), verify=child)
            plat = desc.get("platform")
        manifest = _manifest_of(chosen)
        result = TransferResult(str(ref), str(chosen.digest), chosen.media_type,
                                str(Platform(plat["os"], plat["architecture"], plat.get("variant")))
                                if plat else None)
        with store.writing():
            config_desc = manifest["config"]
            config_digest = Digest.parse(config_desc["digest"])
            if not store.has_blob(config_digest):
                store.put_blob(rc.get_blob_bytes(ref.repository, config_digest,
                                                 size=int(config_desc["size"])), config_digest)
            config = store.read_json(config_digest)
            layers = manifest.get("layers") or []
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(layers):
                raise RegistryError(f"image config lists {len(diff_ids)} diff IDs for {len(layers)} layers")
            chains = chain_ids(diff_ids)

            def job(desc: dict[str, Any], diff_id: str, chain_id: str) -> BlobResult:
                digest = Digest.parse(desc["digest"])
                size = int(desc["size"])
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
    """Something to push: manifests (children before parents) and a way to open blobs."""

    top: Manifest
    children: list[Manifest]
    open_blob: Callable[[Digest], IO[bytes]]
    blob_size: Callable[[Digest], int]
    mount_from: tuple[str, str] | None = None   # (registry, repository) the blobs came from
    name: str = ""


def local_source(store: LocalStore, text: str) -> Source:
    record, _ = store.manifest(text)
    data = store.read_blob(record.digest)
    top = Manifest(data, record.media_type, record.digest)
    children: list[Manifest] = []
    if record.media_type in mediatypes.INDEXES:
        for d in top.json().get("manifests") or []:
            if store.has_blob(d["digest"]):
                children.append(Manifest(store.read_blob(d["digest"]), d["mediaType"],
                                         Digest.parse(d["digest"])))
    mount = None
    try:
        origin = parse(record.name)
        mount = (origin.registry, origin.repository)
    except ValueError:
        pass
    return Source(top, children, lambda d: open(store.blob_path(d), "rb"),
                  lambda d: store.blob_path(d).stat().st_size, mount, record.name)


def layout_source(path: Path, tag: str | None) -> Source:
    """An OCI image layout directory; ``tag`` picks an index.json entry by its ref.name annotation."""
    index = json.loads((path / "index.json").read_text())
    entries = index.get("manifests") or []
    if tag is None:
        if len(entries) != 1:
            names = [e.get("annotations", {}).get(mediatypes.ANNOTATION_REF_NAME, "?") for e in entries]
            raise RegistryError(
                f"{path} holds {len(entries)} images ({', '.join(names)}): name one as DIR:TAG")
        entry = entries[0]
    else:
        for entry in entries:
            if (entry.get("annotations") or {}).get(mediatypes.ANNOTATION_REF_NAME) == tag:
                break
        else:
            raise RegistryError(f"no image tagged {tag!r} in {path}/index.json")

    def blob(d: Digest | str) -> Path:
        d = Digest.parse(d) if isinstance(d, str) else d
        return path / "blobs" / d.algorithm / d.hex

    def read(d: Digest | str) -> bytes:
        data = blob(d).read_bytes()
        digest = Digest.parse(d) if isinstance(d, str) else d
        if Digest.of(data, digest.algorithm) != digest:
            raise RegistryError(f"{blob(d)} does not match its digest")
        return data

    top = Manifest(read(entry["digest"]), entry["mediaType"], Digest.parse(entry["digest"]))
    children = []
    if top.media_type in mediatypes.INDEXES:
        for d in top.json().get("manifests") or []:
            if blob(d["digest"]).exists():
                children.append(Manifest(read(d["digest"]), d["mediaType"], Digest.parse(d["digest"])))
    return Source(top, children, lambda d: open(blob(d), "rb"), lambda d: blob(d).stat().st_size,
                  None, str(path))


def _image_blobs(m: Manifest) -> list[tuple[Digest, int]]:
    doc = _manifest_of(m)
    out = [(Digest.parse(doc["config"]["digest"]), int(doc["config"]["size"]))]
    out += [(Digest.parse(d["digest"]), int(d["size"])) for d in doc.get("layers") or []]
    return out


# ------------------------------------------------------------------------------------ push

def push(source: Source, dest: Reference, *, parallel: int = 4, chunk_size: int | None = None,
         insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    progress = progress or Progress(enabled=False)
    images = source.children if source.top.media_type in mediatypes.INDEXES else [source.top]
    blobs: dict[Digest, int] = {}
    for m in images:
        for digest, size in _image_blobs(m):
            blobs[digest] = size
    mount = None
    origin = source.mount_from
    if origin and origin[0] == dest.registry and origin[1] != dest.repository:
        mount = origin[1]
    with RegistryClient(dest.registry, insecure=insecure, pool=parallel) as rc:
        rc.ping()

        def job(digest: Digest, size: int) -> BlobResult:
            label = _short(str(digest))
            location = _skip_or_mount(rc, dest.repository, digest, size, mount, progress)
            if isinstance(location, BlobResult):
                return location
            actual = source.blob_size(digest)
            if actual != size:
                raise RegistryError(f"blob {digest} is {actual} bytes, its descriptor says {size}")
            advance = progress.task(label, size)
            rc.upload_blob(dest.repository, digest, size, lambda: source.open_blob(digest), chunk_size,
                           location, advance)
            progress.finish(label, f"pushed {human(size)}")
            return BlobResult(str(digest), size, "pushed")

        results = _run_parallel([partial(job, d, s) for d, s in blobs.items()], parallel)
        if source.top.media_type in mediatypes.INDEXES:
            for child in source.children:
                rc.put_manifest(dest.repository, str(child.digest), child.data, child.media_type)
        digest = rc.put_manifest(dest.repository, dest.reference, source.top.data, source.top.media_type)
    if dest.digest is not None and dest.digest != digest:
        raise RegistryError(f"pushed manifest is {digest}, not {dest.digest}")
    return TransferResult(str(dest), str(digest), source.top.media_type, None, results)


# ------------------------------------------------------------------------------------ copy

def copy(src: Reference, dest: Reference, *, all_platforms: bool = True, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    """Registry to registry. An index is copied whole unless a platform is asked for."""
    progress = progress or Progress(enabled=False)
    same_registry = src.registry == dest.registry
    mount = src.repository if same_registry and src.repository != dest.repository else None
    with RegistryClient(src.registry, insecure=insecure, pool=parallel) as sc:
        dc = sc if same_registry else RegistryClient(dest.registry, insecure=insecure, pool=parallel)
        try:
            top = sc.get_manifest(src.repository, src.reference, verify=src.digest)
            plat = None
            if top.media_type in mediatypes.INDEXES and (platform is not None or not all_platforms):
                desc = select_platform(top.json(), platform or Platform.host())
                plat = desc.get("platform")
                child = Digest.parse(desc["digest"])
                top = sc.get_manifest(src.repository, str(child), verify=child)
            children: list[Manifest] = []
            if top.media_type in mediatypes.INDEXES:
                for d in top.json().get("manifests") or []:
                    child = Digest.parse(d["digest"])
                    children.append(sc.get_manifest(src.repository, str(child), verify=child))
            images = children if children else [top]
            blobs: dict[Digest, int] = {}
            for m in images:
                if m.media_type in mediatypes.IMAGE_MANIFESTS:
                    for digest, size in _image_blobs(m):
                        blobs[digest] = size
            dc.ping()

            def job(digest: Digest, size: int) -> BlobResult:
                label = _short(str(digest))
                location = _skip_or_mount(dc, dest.repository, digest, size, mount, progress)
                if isinstance(location, BlobResult):
                    return location
                if location is not None:
                    dc.http.delete(location)  # the registry would not mount; stream it instead
                advance = progress.task(label, size)
                dc.copy_blob_from(sc, src.repository, dest.repository, digest, size, advance)
                progress.finish(label, f"copied {human(size)}")
                return BlobResult(str(digest), size, "copied")

            results = _run_parallel([partial(job, d, s) for d, s in blobs.items()], parallel)
            for child_manifest in children:
                dc.put_manifest(dest.repository, str(child_manifest.digest), child_manifest.data,
                                child_manifest.media_type)
            digest = dc.put_manifest(dest.repository, dest.reference, top.data, top.media_type)
        finally:
            if dc is not sc:
                dc.close()
    shown = str(Platform(plat["os"], plat["architecture"], plat.get("variant"))) if plat else None
    return TransferResult(str(dest), str(digest), top.media_type, shown, results)
