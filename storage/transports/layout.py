"""``oci:DIR[:NAME]``: an OCI image layout directory, as skopeo reads and writes it.

The name of an ``index.json`` entry is its ``org.opencontainers.image.ref.name`` annotation, taken
verbatim (skopeo's ``oci:DIR:latest`` writes ``latest``; pyreg's own store writes full references).
containerd and docker 25+ also write ``io.containerd.image.name`` (the full reference); when both
are there, that one names the image. Writing an entry under a name replaces the entry that had
it, as skopeo does; writing without a name adds an unnamed entry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pyreg.storage import mediatypes as mt
from pyreg.storage.content import ContentStore, LayoutStore
from pyreg.storage.manifest import Descriptor, ManifestError, layout_index
from pyreg.storage.transports import ArchiveError, Image


def entry_names(desc: Descriptor) -> list[str]:
    """The name an index entry gives its image (none when it is unnamed)."""
    annotations = desc.annotations or {}
    name = annotations.get(mt.ANNOTATION_CONTAINERD_NAME) or annotations.get(mt.ANNOTATION_REF_NAME)
    return [name] if name else []


def index_entries(image: Image) -> list[Descriptor]:
    """One ``index.json`` entry per name of ``image`` (one unnamed entry when it has none)."""
    base = image.descriptor
    if not image.names:
        return [Descriptor(base.media_type, base.digest, base.size, platform=base.platform)]
    out = []
    for name in image.names:
        annotations = {mt.ANNOTATION_REF_NAME: name}
        if "/" in name:
            annotations[mt.ANNOTATION_CONTAINERD_NAME] = name
        out.append(Descriptor(base.media_type, base.digest, base.size, annotations=annotations,
                              platform=base.platform))
    return out


def is_layout(path: Path) -> bool:
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


class LayoutSource:
    """The images of a layout directory (``store`` is its LayoutStore)."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise ArchiveError(f"{path}: no such directory (an OCI layout needs oci-layout and index.json)")
        if not is_layout(path):
            raise ArchiveError(f"{path}: not an OCI image layout (no oci-layout or index.json)")
        self.path = path
        self.store = LayoutStore(path)

    def images(self) -> list[Image]:
        try:
            entries = layout_index((self.path / "index.json").read_bytes())
        except ManifestError as exc:
            raise ArchiveError(f"{self.path}: {exc}") from None
        return [Image(e, entry_names(e)) for e in entries]


class LayoutTarget:
    """Writes into a layout directory (made if absent); ``index.json`` is replaced atomically
    once every added image's graph is in ``blobs/``."""

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise ArchiveError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not is_layout(path):
            raise ArchiveError(f"{path}: a non-empty directory that is not an OCI layout; "
                                 "refusing to write into it")
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._store = LayoutStore(path)
        self.added: list[Descriptor] = []

    @property
    def store(self) -> ContentStore:
        return self._store

    def add(self, image: Image, source: ContentStore) -> None:
        self.added.extend(index_entries(image))

    def close(self) -> None:
        try:
            entries = layout_index((self.path / "index.json").read_bytes())
        except FileNotFoundError:
            entries = []
        except ManifestError as exc:
            raise ArchiveError(f"{self.path}: {exc}") from None
        for new in self.added:
            name = (new.annotations or {}).get(mt.ANNOTATION_REF_NAME)
            entries = [e for e in entries
                       if not (name and (e.annotations or {}).get(mt.ANNOTATION_REF_NAME) == name)
                       and not (not name and e.digest == new.digest and not e.annotations)]
            entries.append(new)
        _atomic_write(self.path / "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [e.to_json() for e in entries]}
        _atomic_write(self.path / "index.json", json.dumps(doc, separators=(",", ":")).encode())

    def abort(self) -> None:
        """Blobs already written stay (unreferenced, as after an interrupted skopeo copy); the
        index is not touched, so no entry names an incomplete image."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
