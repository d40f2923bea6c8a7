"""The one walker over an image graph of typed descriptors (containerd's ``images.Walk``).

An image is a graph: an index points at manifests, a manifest at its config and layers, and an
artifact at its ``subject`` (the referrers relation, walked the other way). Every command that
moves or counts content — pull, push, copy, save, load, prune, ``images`` — walks it here, over
``storage.manifest``'s validated model, instead of reading ``["digest"]`` out of raw JSON. The
walker knows nothing of where bytes live: the caller hands it ``fetch(descriptor) -> manifest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest
from pyreg.storage.frozen import Frozen
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, parse_manifest

# Platforms and the host's (what a pull of a present image needs, without this module's model):
# storage/platforms.py; named here too, where callers have always found them.
from pyreg.storage.platforms import Platform as Platform
from pyreg.storage.platforms import PlatformError as PlatformError
from pyreg.storage.platforms import platform_warning as platform_warning


def select_platform(index: Manifest, wanted: Platform) -> Descriptor:
    """The first child manifest of ``index`` for ``wanted``; PlatformError names what there is."""
    candidates = [d for d in index.manifests if d.media_type in mt.MANIFESTS]
    for desc in candidates:
        if wanted.matches(desc.platform):
            return desc
    available = ", ".join(str(Platform.of(d.platform)) for d in candidates if d.platform) or "none"
    raise PlatformError(f"no image for platform {wanted} (available: {available})")


def is_manifest(desc: Descriptor) -> bool:
    """Does the walker descend into this descriptor (an index or a manifest)?"""
    return desc.media_type in mt.MANIFESTS


def children(manifest: Manifest) -> tuple[Descriptor, ...]:
    """What a manifest points to: an index's manifests, an image's config then layers."""
    return manifest.manifests + manifest.blobs


class Node(Frozen):
    """One visited descriptor; ``manifest`` is set for indexes and manifests that were fetched."""

    __slots__ = ("descriptor", "manifest")
    descriptor: Descriptor
    manifest: Manifest | None

    def __init__(self, descriptor: Descriptor, manifest: Manifest | None = None) -> None:
        self._set("descriptor", descriptor)
        self._set("manifest", manifest)


Fetch = Callable[[Descriptor], "Manifest | None"]


def walk(root: Descriptor, fetch: Fetch, *, platform: Platform | None = None) -> Iterator[Node]:
    """Every descriptor reachable from ``root``, each once, children before their parent (the
    order a copy must write them in). ``fetch`` returns the parsed manifest of an index or
    manifest descriptor, or None when it is absent (then it is yielded as a leaf). With
    ``platform`` an index contributes only its child for that platform."""
    seen: set[Digest] = set()

    def visit(desc: Descriptor) -> Iterator[Node]:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        manifest = fetch(desc) if is_manifest(desc) else None
        if manifest is not None:
            kids: Iterable[Descriptor] = children(manifest)
            if platform is not None and manifest.is_index:
                kids = [select_platform(manifest, platform)]
            for child in kids:
                yield from visit(child)
        yield Node(desc, manifest)

    yield from visit(root)


def referrers(subject: Digest, candidates: Iterable[Node]) -> list[Descriptor]:
    """The descriptors among ``candidates`` whose manifest names ``subject`` as its subject."""
    return [n.descriptor for n in candidates
            if n.manifest is not None and n.manifest.subject is not None
            and n.manifest.subject.digest == subject]


def parse_as(desc: Descriptor, data: bytes) -> Manifest:
    """Bytes fetched for ``desc``: verified against its digest and parsed as its media type."""
    if Digest.of(data, desc.digest.algorithm) != desc.digest:
        raise ManifestError(f"{desc.digest}: the content does not match its digest")
    return parse_manifest(data, desc.media_type)


def image_blobs(manifest: Manifest) -> tuple[Descriptor, ...]:
    """An image manifest's config and layers; ManifestError for anything else."""
    if manifest.media_type not in mt.IMAGE_MANIFESTS or manifest.config is None:
        raise ManifestError(f"not an image manifest: {manifest.media_type}")
    return manifest.blobs
