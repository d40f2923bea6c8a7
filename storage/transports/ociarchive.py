"""``oci-archive:``: a tar of an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``).

Read: the tar is indexed (storage/transports/tarfiles.py) and each blob read in place. Write: a
``TarStream`` — blobs as ``copy_graph`` hands them over (verified against their digest while they
stream), then ``index.json`` naming each root — to a file written aside and renamed when complete,
or to a pipe. ``ArchiveTarget`` is also the base of the docker-archive writer, which adds its
``manifest.json`` and ``repositories`` beside the same layout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pyreg.storage import mediatypes as mt
from pyreg.storage.content import ContentNotFound, ContentStore, Info, Writer
from pyreg.storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier
from pyreg.storage.manifest import Descriptor, ManifestError, layout_index
from pyreg.storage.transports import ArchiveError, Image
from pyreg.storage.transports.layout import entry_names, index_entries
from pyreg.storage.transports.tarfiles import TarIndex, TarStream


class ReadOnly:
    """The write half of ContentStore for sources: refused."""

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractContextManager[Writer]:
        raise ArchiveError("this image source is read-only")

    def delete(self, digest: Digest) -> bool:
        return False


def blob_member(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex}"


class OciArchiveSource(ReadOnly):
    """A ContentStore over the blobs of an OCI archive; ``images()`` its ``index.json`` entries."""

    def __init__(self, tar: TarIndex) -> None:
        self.tar = tar
        if "index.json" not in tar:
            raise ArchiveError(f"{tar.where}: not an OCI archive (no index.json)")

    def info(self, digest: Digest) -> Info | None:
        size = self.tar.size(blob_member(digest))
        return None if size is None else Info(digest, size)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        try:
            f = self.tar.open(blob_member(digest))
        except ArchiveError:
            raise ContentNotFound(digest) from None
        if offset:
            f.seek(offset)
        return f

    def walk(self) -> Iterator[Info]:
        for name, info in sorted(self.tar.members.items()):
            alg, _, hexpart = name.removeprefix("blobs/").partition("/")
            if name.startswith("blobs/") and info.isfile():
                with contextlib.suppress(DigestError):
                    yield Info(Digest.parse(f"{alg}:{hexpart}"), info.size)

    def images(self) -> list[Image]:
        try:
            entries = layout_index(self.tar.read("index.json"))
        except ManifestError as exc:
            raise ArchiveError(f"{self.tar.where}: {exc}") from None
        return [Image(e, entry_names(e)) for e in entries]


# --------------------------------------------------------------------------- writing

class Output:
    """Where an archive goes: a file (written aside 0600 under an unpredictable name with
    O_EXCL|O_NOFOLLOW, renamed over ``path`` when complete: nobody can plant a symlink that makes
    us write elsewhere, and a failed save leaves no half archive) or a stream such as stdout."""

    def __init__(self, path: Path | None = None, stream: IO[bytes] | None = None) -> None:
        assert (path is None) != (stream is None)
        self.path = path
        self.tmp: Path | None = None
        if path is not None:
            self.tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.partial")
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            self.file: IO[bytes] = io.BufferedWriter(io.FileIO(fd, "wb"), 1 << 20)
        else:
            assert stream is not None
            self.file = stream

    def close(self) -> None:
        self.file.flush()
        if self.path is not None and self.tmp is not None:
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
            self.tmp = None

    def abort(self) -> None:
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


class _TarWriter:
    """One blob going into the tar; its digest is verified as it streams (the tar cannot take
    bytes back, so a mismatch fails the whole archive, which is then not renamed into place)."""

    def __init__(self, target: ArchiveTarget, digest: Digest, size: int) -> None:
        self.target, self.digest, self.size = target, digest, size
        self.verifier = DigestVerifier(digest)
        self.done = False
        target.tar.begin(blob_member(digest), size)

    def write(self, data: bytes) -> None:
        self.verifier.update(data)
        self.target.tar.write(data)

    def commit(self) -> Digest:
        self.target.tar.end()
        try:
            self.verifier.verify()
        except DigestMismatchError:
            self.target.broken = True
            raise
        self.target.written[self.digest] = self.size
        self.done = True
        return self.digest

    def abort(self) -> None:
        if not self.done:
            self.target.broken = True


class ArchiveTarget:
    """Target and write-only ContentStore of an OCI archive; entries named by ``add``."""

    def __init__(self, out: Output, mtime: int | None = None) -> None:
        self.out = out
        self.tar = TarStream(out.file, mtime)
        self.written: dict[Digest, int] = {}
        self.entries: list[Descriptor] = []
        self.broken = False
        self.tar.add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())

    @property
    def store(self) -> ContentStore:
        return self

    # ContentStore
    def info(self, digest: Digest) -> Info | None:
        size = self.written.get(digest)
        return None if size is None else Info(digest, size)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        raise ContentNotFound(digest)  # a stream being written is not read back

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[_TarWriter]:
        if self.broken:
            raise ArchiveError("the archive is already broken by an earlier failure")
        w = _TarWriter(self, digest, size)
        try:
            yield w
        finally:
            w.abort()

    def walk(self) -> Iterator[Info]:
        return iter([Info(d, s) for d, s in self.written.items()])

    def delete(self, digest: Digest) -> bool:
        return False

    # Target
    def add(self, image: Image, source: ContentStore) -> None:
        self.entries.extend(index_entries(image))

    def extra_files(self) -> list[tuple[str, bytes]]:
        """Files written after the blobs, beside index.json (the docker writer's manifest.json)."""
        return []

    def close(self) -> None:
        if self.broken:
            raise ArchiveError("the archive is incomplete")
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                 "manifests": [e.to_json() for e in self.entries]}
        self.tar.add("index.json", json.dumps(index, separators=(",", ":")).encode())
        for name, data in self.extra_files():
            self.tar.add(name, data)
        self.tar.close()
        self.out.close()

    def abort(self) -> None:
        self.out.abort()
