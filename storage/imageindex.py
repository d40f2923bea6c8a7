"""The local store's image index: names -> descriptors in the layout's ``index.json``
(containerd's ``images.Store``), each entry annotated with
``org.opencontainers.image.ref.name = "registry/repo:tag"`` so skopeo and umoci read it.

``index.json`` is replaced atomically under ``locks/index.lock``, and a name is written only
after the manifest it points at is stored (the blobs are storage/blobstore.py's).

An image with no name (an untagged ``pyreg build``, an unnamed image loaded from an archive:
docker's dangling ``<none>:<none>``) is an entry with no ``ref.name`` annotation, as the image
spec allows and skopeo, umoci and containerd read; in memory its record is keyed by its manifest
digest (``name == str(digest)``). It stays until a name is given to it (the unnamed entry then
goes) or ``pyreg prune`` drops it. A name moved to another image (:meth:`ImageIndex.tag`: pull,
build -t, tag, load) leaves the image it pointed at so, if no other name points at it. Older
stores named such entries ``sha256:…``: read the same.
"""

from __future__ import annotations

import contextlib
import json
import os

from pyreg.storage import mediatypes
from pyreg.storage.blobstore import BlobStore
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.frozen import Frozen
from pyreg.storage.manifest import ManifestError, layout_index
from pyreg.storage.reference import Reference, ReferenceError, parse
from pyreg.storage.storefiles import StoreError, atomic_write, flock

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any

    from pyreg.storage.storefiles import StrPath


class ImageNotFoundError(StoreError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"image not known locally: {ref}")
        self.ref = ref


class ImageRecord(Frozen):
    """One entry of index.json: a local image name and the manifest it points at."""

    __slots__ = ("name", "digest", "media_type", "size", "annotations", "platform")  # noqa: RUF023
    name: str
    digest: Digest
    media_type: str
    size: int
    annotations: dict[str, str]
    platform: dict[str, Any] | None

    def __init__(self, name: str, digest: Digest, media_type: str, size: int,
                 annotations: dict[str, str] | None = None, platform: dict[str, Any] | None = None) -> None:
        self._set("name", name)
        self._set("digest", digest)
        self._set("media_type", media_type)
        self._set("size", size)
        self._set("annotations", annotations if annotations is not None else {})
        self._set("platform", platform)

    @property
    def dangling(self) -> bool:
        """No name: docker's ``<none>:<none>`` (keyed by its manifest digest)."""
        return is_unnamed(self.name)

    def descriptor(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        annotations = dict(self.annotations)
        if not self.dangling:
            annotations[mediatypes.ANNOTATION_REF_NAME] = self.name
        if annotations:
            out["annotations"] = annotations
        return out


def is_unnamed(name: str) -> bool:
    """A record key that is a digest, not a reference: the entry has no name."""
    try:
        Digest.parse(name)
    except DigestError:
        return False
    return True


def _orphaned(before: list[ImageRecord], after: list[ImageRecord]) -> list[ImageRecord]:
    """Images a re-pointed name leaves with no name at all, as unnamed entries: docker's
    ``<none>:<none>`` when ``pull``/``build -t``/``tag``/``load`` moves a name, kept (runnable by
    ID, its containers' image) until ``prune`` or ``rmi`` instead of silently unreachable."""
    still = {r.digest for r in after}
    out: list[ImageRecord] = []
    for r in before:
        if r.digest not in still:
            out.append(ImageRecord(str(r.digest), r.digest, r.media_type, r.size,
                                   dict(r.annotations), r.platform))
            still.add(r.digest)
    return out


class Match(Frozen):
    """What a lookup text named: ``records`` (one for a name or manifest digest; every entry of
    the image for an image ID) and whether it was an image ID (docker's rmi/save treat those
    differently)."""

    __slots__ = ("records", "by_id")  # noqa: RUF023 - __init__'s order (repr, pickling)
    records: list[ImageRecord]
    by_id: bool

    def __init__(self, records: list[ImageRecord], by_id: bool) -> None:
        self._set("records", records)
        self._set("by_id", by_id)


class ImageIndex:
    """Local image names over ``index.json``; reads the blob store to check and to find IDs."""

    def __init__(self, root: StrPath, blobs: BlobStore) -> None:
        self.root = root
        self.blobs = blobs
        # file names as str: os functions take them, and a pull's start-up imports no pathlib
        self.path = os.path.join(root, "index.json")
        self.lock = os.path.join(root, "locks", "index.lock")

    def write(self, records: list[ImageRecord], sync: bool = True) -> None:
        """Replace ``index.json`` (the caller holds ``self.lock``); ``sync=False`` only for a new
        store's empty one (storage/localstore.py)."""
        doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
               "manifests": [r.descriptor() for r in records]}
        atomic_write(self.path, json.dumps(doc, indent=2).encode(), sync=sync)

    def images(self) -> list[ImageRecord]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        try:
            entries = layout_index(data)
        except ManifestError as exc:
            raise StoreError(f"{self.path}: {exc}") from None
        out = []
        for desc in entries:
            annotations = dict(desc.annotations or {})
            name = annotations.pop(mediatypes.ANNOTATION_REF_NAME, None) or str(desc.digest)
            out.append(ImageRecord(name, desc.digest, desc.media_type, desc.size, annotations, desc.platform))
        return out

    def tag(self, name: str, digest: Digest | str, media_type: str, size: int,
            platform: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> ImageRecord:
        """Point the local name at a stored manifest (its blobs must all be stored already)."""
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        if not self.blobs.has_blob(d):
            raise StoreError(f"cannot tag {name}: manifest {d} is not stored")
        if is_unnamed(name):
            name = str(d)  # one unnamed entry per manifest, whatever digest text was given
        record = ImageRecord(name, d, media_type, size, dict(annotations or {}), platform)
        with flock(self.lock):
            current = self.images()
            if record.dangling:
                named = [r for r in current if r.digest == d and not r.dangling]
                if named:
                    return named[0]  # it has a name: not dangling, nothing to record
            records = [r for r in current if r.name != name and not (r.dangling and r.digest == d)]
            records.append(record)
            records.extend(_orphaned(current, records))
            self.write(records)
        return record

    def drop_dangling(self, keep: tuple[Digest, ...] = ()) -> list[ImageRecord]:
        """Forget every unnamed image but those in ``keep`` (used by containers); prune's first step."""
        with flock(self.lock):
            records = self.images()
            gone = [r for r in records if r.dangling and r.digest not in keep]
            if gone:
                self.write([r for r in records if r not in gone])
            return gone

    def untag(self, name: str) -> bool:
        with flock(self.lock):
            records = self.images()
            kept = [r for r in records if r.name != name]
            if len(kept) == len(records):
                return False
            self.write(kept)
            return True

    def lookup(self, ref: str | Reference) -> ImageRecord:
        """Find a local image by reference (``busybox``, ``reg/x:1``, ``x@sha256:…``), by full
        manifest digest, or by its image ID (config digest): whole or a unique prefix of at least
        4 hex digits, with or without ``sha256:``, as docker takes it."""
        return self.find(ref).records[0]

    def find(self, ref: str | Reference) -> Match:
        """The one resolver of what a user typed for a local image (:meth:`lookup`). A name wins
        over an ID prefix that happens to read the same (as docker); an ID prefix two images
        share is refused. Raises ImageNotFoundError, or StoreError when ambiguous."""
        text = str(ref)
        records = self.images()
        parsed: Reference | None = None
        if isinstance(ref, Reference):
            parsed = ref
        else:
            with contextlib.suppress(ReferenceError, ValueError):
                parsed = parse(text)
        if parsed is not None:
            for r in records:
                if r.name == str(parsed):
                    return Match([r], False)
            if parsed.digest is not None:
                for r in records:
                    if r.digest == parsed.digest and r.name.startswith(parsed.name + "@"):
                        return Match([r], False)
                for r in records:
                    if r.digest == parsed.digest and r.name.rsplit(":", 1)[0] == parsed.name:
                        return Match([r], False)
        if not isinstance(ref, Reference):
            with contextlib.suppress(DigestError):
                d = Digest.parse(text)
                for r in records:
                    if r.digest == d:
                        return Match([r], False)
            prefix = text.removeprefix("sha256:")
            if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
                hits: dict[str, list[ImageRecord]] = {}
                for r in records:
                    with contextlib.suppress(StoreError, ManifestError, ValueError):
                        image_id = self.image_id(r)
                        if image_id.hex.startswith(prefix):
                            hits.setdefault(str(image_id), []).append(r)
                if len(hits) == 1:
                    same = next(iter(hits.values()))
                    return Match(sorted(same, key=lambda r: r.dangling), True)  # named first
                if len(hits) > 1:
                    ids = ", ".join(sorted(h.removeprefix("sha256:")[:12] for h in hits))
                    raise StoreError(f"image ID prefix {prefix} is ambiguous: it matches {len(hits)} "
                                     f"images ({ids}); give more of the ID")
        raise ImageNotFoundError(text)

    def image_id(self, record: ImageRecord) -> Digest:
        """The image ID is the config digest (as Docker and podman show it)."""
        if record.media_type in mediatypes.INDEXES:
            return record.digest
        config = self.blobs.read_manifest(record.digest, record.media_type).config
        if config is None:
            raise StoreError(f"{record.name}: manifest {record.digest} has no config")
        return config.digest
