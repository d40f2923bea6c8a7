"""The one walker over an image graph of typed descriptors (containerd's ``images.Walk``).

An image is a graph: an index points at manifests, a manifest at its config and layers, and an
artifact at its ``subject`` (the referrers relation, walked the other way). Every command that
moves or counts content — pull, push, copy, save, load, prune, ``images`` — walks it here, over
``storage.manifest``'s validated model, instead of reading ``["digest"]`` out of raw JSON. The
walker knows nothing of where bytes live: the caller hands it ``fetch(descriptor) -> manifest``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, parse_manifest

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


class PlatformError(ValueError):
    """No child of an index is for the wanted platform."""


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]`` with Go's architecture names (``aarch64`` is ``arm64``)."""

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
    def of(cls, p: dict[str, Any]) -> Platform:
        """A descriptor's ``platform`` object (validated to hold os and architecture)."""
        return cls(str(p.get("os", "?")), str(p.get("architecture", "?")), p.get("variant"))

    @classmethod
    def host(cls) -> Platform:
        import os  # uname, not the platform module: what platform.machine() reads, without its import

        machine = os.uname().machine.lower()
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


def platform_warning(config: dict[str, Any], host: Platform | None = None) -> str | None:
    """docker's warning for an image config whose platform is not this host's (it may still run,
    through binfmt emulation, or fail with 'exec format error': the user should know which)."""
    host = host or Platform.host()
    p = {k: config.get(k) for k in ("os", "architecture", "variant") if config.get(k)}
    if not p.get("os") or not p.get("architecture") or host.matches(p):
        return None
    return (f"WARNING: The requested image's platform ({Platform.of(p)}) does not match the "
            f"detected host platform ({host})")


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


@dataclass(frozen=True)
class Node:
    """One visited descriptor; ``manifest`` is set for indexes and manifests that were fetched."""

    descriptor: Descriptor
    manifest: Manifest | None = None


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
