"""``docker-archive:``: the ``docker save`` format, read as an image graph and written as docker 25+
writes it.

Reading (``manifest.json``: one item per image, ``Config``, ``RepoTags``, ``Layers`` naming tar
members) gives each item a Docker schema 2 manifest made here: the config blob as it is, and each
layer as an *uncompressed* layer tar (``application/vnd.docker.image.rootfs.diff.tar``) whose
digest is its diff ID — what docker itself stores and what skopeo's docker-archive source serves.
A layer kept compressed in the archive is decompressed while it is read, and hashed once on open
to prove it matches its diff ID; an uncompressed one is verified by whoever writes it (every
store writer checks the digest), so a layer that does not match its diff ID is never stored.

Writing produces one tar that both kinds of reader load: ``manifest.json`` + ``repositories`` for
``docker load`` before 25 and skopeo/podman's docker-archive, and an OCI layout (``oci-layout``,
``index.json``, ``blobs/``) for docker 25+, containerd and ``oci-archive:`` readers. Layers go in
once, under ``blobs/sha256/<hex>``, and ``manifest.json`` points at those same members (old docker
decompresses a compressed layer on load), so the manifest digests of the layout are the image's own.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from pyreg.storage import graph
from pyreg.storage import mediatypes as mt
from pyreg.storage.content import ContentNotFound, ContentStore, Info
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.manifest import Descriptor
from pyreg.storage.transports import Image, has_manifest, manifest_of
from pyreg.storage.transports.ociarchive import ArchiveTarget, ReadOnly, blob_member
from pyreg.storage.transports.tarfiles import (
    DECOMPRESS_ERRORS,
    ArchiveError,
    TarIndex,
    compression_of,
    decompressed,
)

_CHUNK = 1 << 20
CONFIG_LIMIT = 8 << 20


@dataclass(frozen=True)
class _Member:
    """A layer: the tar member that holds it, and how it is compressed there."""

    name: str
    compression: str | None
    size: int  # uncompressed


def schema2_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A Docker schema 2 manifest in the byte form Go's encoding/json gives (containers/image's
    generated manifests: mediaType, size, digest in that order, no spaces)."""
    def desc(d: Descriptor) -> dict[str, Any]:
        return {"mediaType": d.media_type, "size": d.size, "digest": str(d.digest)}

    doc = {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST, "config": desc(config),
           "layers": [desc(d) for d in layers]}
    return json.dumps(doc, separators=(",", ":")).encode()


class DockerArchiveSource(ReadOnly):
    """A ContentStore of the images of a docker-save tar (made-up manifests, configs, layers)."""

    def __init__(self, tar: TarIndex) -> None:
        self.tar = tar
        self.where = tar.where
        if "manifest.json" not in tar:
            raise ArchiveError(f"{self.where}: not a docker archive (no manifest.json)")
        self.data: dict[Digest, bytes] = {}          # manifests and configs
        self.layers: dict[Digest, _Member] = {}
        self._images: list[Image] = []
        try:
            items = json.loads(tar.read("manifest.json"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ArchiveError(f"{self.where}: malformed manifest.json, not valid JSON ({exc})") from None
        if not isinstance(items, list):
            raise ArchiveError(f"{self.where}: malformed manifest.json, not a list")
        for i, item in enumerate(items):
            self._images.append(self._item(item, f"manifest.json[{i}]"))

    def _item(self, item: object, where: str) -> Image:
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise ArchiveError(f"{self.where}: malformed {where}: no Config")
        layers = item.get("Layers") or []
        tags = item.get("RepoTags") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"{self.where}: malformed {where}: Layers is not a list of paths")
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise ArchiveError(f"{self.where}: malformed {where}: RepoTags is not a list of names")
        config = self.tar.read(item["Config"], CONFIG_LIMIT)
        try:
            doc = json.loads(config)
            diff_ids = [Digest.parse(d) for d in doc["rootfs"]["diff_ids"]]
        except (ValueError, UnicodeDecodeError, RecursionError, KeyError, TypeError, DigestError) as exc:
            raise ArchiveError(f"{self.where}: {item['Config']} is not an image config with "
                               f"rootfs.diff_ids ({type(exc).__name__}: {str(exc)[:120]})") from None
        if len(diff_ids) != len(layers):
            raise ArchiveError(f"{self.where}: config lists {len(diff_ids)} diff IDs "
                               f"for {len(layers)} layers")
        config_desc = Descriptor(mt.DOCKER_CONFIG, Digest.of(config), len(config))
        self.data[config_desc.digest] = config
        layer_descs = [self._layer(name, diff_id) for name, diff_id in zip(layers, diff_ids, strict=True)]
        manifest = schema2_manifest(config_desc, layer_descs)
        desc = Descriptor(mt.DOCKER_MANIFEST, Digest.of(manifest), len(manifest),
                          platform=_platform_of(doc))
        self.data[desc.digest] = manifest
        return Image(desc, list(tags))

    def _layer(self, name: str, diff_id: Digest) -> Descriptor:
        known = self.layers.get(diff_id)
        if known is None:
            size = self.tar.size(name)
            if size is None:
                raise ArchiveError(f"{self.where}: archive has no layer {name[:200]!r}")
            with self.tar.open(name) as f:
                kind = compression_of(f.read(6))
            if kind is not None:
                size = self._check_compressed(name, kind, diff_id)
            known = self.layers[diff_id] = _Member(name, kind, size)
        return Descriptor(mt.DOCKER_LAYER, diff_id, known.size)

    def _check_compressed(self, name: str, kind: str, diff_id: Digest) -> int:
        """Hash a compressed layer's content: it must be its diff ID. Returns its size."""
        h = hashlib.new(diff_id.algorithm)
        size = 0
        try:
            with self.tar.open(name) as raw, decompressed(raw, kind) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except DECOMPRESS_ERRORS as exc:
            raise ArchiveError(f"{self.where}: layer {name} is a damaged {kind} stream ({exc})") from None
        if h.hexdigest() != diff_id.hex:
            raise ArchiveError(f"{self.where}: layer {name} does not match its diff ID {diff_id} "
                               f"(its content is {diff_id.algorithm}:{h.hexdigest()})")
        return size

    def images(self) -> list[Image]:
        return list(self._images)

    # ContentStore (read side)
    def info(self, digest: Digest) -> Info | None:
        if digest in self.data:
            return Info(digest, len(self.data[digest]))
        layer = self.layers.get(digest)
        return None if layer is None else Info(digest, layer.size)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        if digest in self.data:
            return io.BytesIO(self.data[digest][offset:])
        layer = self.layers.get(digest)
        if layer is None:
            raise ContentNotFound(digest)
        f = self.tar.open(layer.name)
        if layer.compression is not None:
            f = decompressed(f, layer.compression)
        if offset:
            f.seek(offset)
        return f

    def walk(self) -> Iterator[Info]:
        for d in [*self.data, *self.layers]:
            info = self.info(d)
            assert info is not None
            yield info


def _platform_of(config: dict[str, Any]) -> dict[str, Any] | None:
    os_, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        return None
    out: dict[str, Any] = {"architecture": arch, "os": os_}
    if isinstance(config.get("variant"), str):
        out["variant"] = config["variant"]
    return out


class DockerArchiveTarget(ArchiveTarget):
    """An OCI archive plus ``manifest.json`` and ``repositories`` (docker 25+'s ``docker save``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: list[dict[str, Any]] = []
        self.repositories: dict[str, dict[str, str]] = {}

    def add(self, image: Image, source: ContentStore) -> None:
        super().add(image, source)
        desc = image.descriptor
        manifest = manifest_of(source, desc)
        if manifest.is_index:  # manifest.json lists images: the host's (or the first present) child
            present = [d for d in manifest.manifests if d.media_type in mt.IMAGE_MANIFESTS
                       and has_manifest(source, d)]
            if not present:
                return
            host = graph.Platform.host()
            desc = next((d for d in present if host.matches(d.platform)), present[0])
            manifest = manifest_of(source, desc)
        if manifest.config is None or manifest.media_type not in mt.IMAGE_MANIFESTS:
            return
        tags = [n for n in image.names if _tag_of(n) is not None]
        self.items.append({"Config": blob_member(manifest.config.digest), "RepoTags": tags or None,
                           "Layers": [blob_member(d.digest) for d in manifest.layers]})
        top = manifest.layers[-1].digest.hex if manifest.layers else manifest.config.digest.hex
        for name in tags:
            repo, tag = _tag_of(name) or ("", "")
            self.repositories.setdefault(repo, {})[tag] = top

    def extra_files(self) -> list[tuple[str, bytes]]:
        return [("manifest.json", json.dumps(self.items, separators=(",", ":")).encode()),
                ("repositories", json.dumps(self.repositories, separators=(",", ":")).encode())]


def _tag_of(name: str) -> tuple[str, str] | None:
    """(repository, tag) of ``registry/repo:tag``; None for a name with a digest or no tag."""
    if "@" in name:
        return None
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag or not repo:
        return None
    return repo, tag

