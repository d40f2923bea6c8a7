"""``dir:PATH``: skopeo's directory format (containers/image ``directory`` transport, version 1.1).

    version                        "Directory Transport Version: 1.1\\n"
    manifest.json                  the top manifest (or index), byte for byte
    <hex>.manifest.json            each child manifest of an index (``skopeo copy --all``)
    <hex>                          every other blob (configs, layers), named by its sha256 hex

One image per directory, unnamed. Blobs are written aside and renamed once verified (as in the
other stores); ``manifest.json`` is written last, so a directory without it is not an image.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pyreg.storage.content import BlobFiles, ContentNotFound, ContentStore, Info, _FileWriter
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.manifest import Descriptor, sniff_media_type
from pyreg.storage.transports import ArchiveError, Image, manifest_of

VERSION = b"Directory Transport Version: 1.1\n"


class DirStore(BlobFiles):
    """The ContentStore of a skopeo ``dir:`` directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._top: tuple[Digest, Path] | None = None

    def _top_manifest(self) -> tuple[Digest, Path] | None:
        if self._top is None:
            top = self.path / "manifest.json"
            with contextlib.suppress(FileNotFoundError):
                self._top = (Digest.of(top.read_bytes()), top)
        return self._top

    def blob_file(self, digest: Digest) -> Path:
        if digest.algorithm != "sha256":
            raise ArchiveError(f"dir: holds sha256 blobs only, not {digest}")
        plain = self.path / digest.hex
        if plain.exists():
            return plain
        child = self.path / f"{digest.hex}.manifest.json"
        if child.exists():
            return child
        top = self._top_manifest()
        if top is not None and top[0] == digest:
            return top[1]
        return plain

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        try:
            return super().reader(digest, offset)
        except ArchiveError:
            raise ContentNotFound(digest) from None

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[_FileWriter]:
        if digest.algorithm != "sha256":
            raise ArchiveError(f"dir: holds sha256 blobs only, not {digest}")
        w = _FileWriter(self.path / digest.hex, digest, size)
        try:
            yield w
        finally:
            w.abort()

    def walk(self) -> Iterator[Info]:
        for p in sorted(self.path.iterdir()):
            name = p.name.removesuffix(".manifest.json")
            if name == "manifest":
                top = self._top_manifest()
                if top is not None:
                    yield Info(top[0], p.stat().st_size)
                continue
            with contextlib.suppress(DigestError):
                yield Info(Digest.parse(f"sha256:{name}"), p.stat().st_size)


class DirSource:
    def __init__(self, path: Path) -> None:
        if not (path / "manifest.json").is_file():
            raise ArchiveError(f"{path}: not a dir: image (no manifest.json; make one with "
                                 "skopeo copy ... dir:PATH or pyreg copy ... dir:PATH)")
        self.store = DirStore(path)

    def images(self) -> list[Image]:
        data = (self.store.path / "manifest.json").read_bytes()
        desc = Descriptor(sniff_media_type(data), Digest.of(data), len(data))
        return [Image(desc, [])]


class DirTarget:
    """Writes one image; an existing dir: image there is replaced (as skopeo does)."""

    def __init__(self, path: Path) -> None:
        if path.exists() and not path.is_dir():
            raise ArchiveError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not (path / "version").is_file():
            raise ArchiveError(f"{path}: a non-empty directory that is not a dir: image; "
                                 "refusing to write into it")
        path.mkdir(parents=True, exist_ok=True)
        if (path / "version").is_file():
            for p in path.iterdir():
                if p.is_file() and not p.is_symlink():
                    p.unlink()
        self.path = path
        self._store = DirStore(path)
        self.root: Image | None = None

    @property
    def store(self) -> ContentStore:
        return self._store

    def add(self, image: Image, source: ContentStore) -> None:
        if self.root is not None:
            raise ArchiveError("dir: holds one image; copy one at a time")
        self.root = image

    def close(self) -> None:
        if self.root is None:
            raise ArchiveError("no image was copied")
        desc = self.root.descriptor
        top = manifest_of(self._store, desc)
        for child in top.manifests:
            plain = self.path / child.digest.hex
            if plain.exists():
                os.replace(plain, self.path / f"{child.digest.hex}.manifest.json")
        (self.path / "version").write_bytes(VERSION)
        os.replace(self.path / desc.digest.hex, self.path / "manifest.json")

    def abort(self) -> None:
        """What was written stays, without manifest.json: not an image to any reader."""
