"""One content store protocol keyed by digest (containerd's ``content.Store``, ORAS's ``Target``).

Every place that holds blobs — the local store, an OCI image layout directory, a registry — is
read and written through the same five calls, so a copy between any two of them is one function:
``copy_graph`` walks the image graph in the source (storage/graph.py) and copies what the target
lacks, children before parents, each blob verified against its digest and size on the way in.

Why synchronous: the client, which does nearly every copy, is synchronous (httpx's sync client,
parallel blobs on a thread pool: see client/transfer.py), and a sync protocol keeps each
implementation a few plain file calls. The registry's async ``Driver`` is the exception, and a
store over it is wrapped at its edge (``anyio.from_thread``) rather than making every caller async.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from storage import graph
from storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier
from storage.manifest import Descriptor, Manifest, layout_index, parse_manifest

_CHUNK = 1 << 20


class ContentNotFound(LookupError):
    """The store holds no blob with this digest."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} not found")
        self.digest = digest


class ContentSizeError(ValueError):
    """Written content is not the size its descriptor says."""


@dataclass(frozen=True)
class Info:
    digest: Digest
    size: int


class Writer(Protocol):
    """An open write of one blob; nothing is visible under the digest until ``commit``."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> object:
        """Verify the expected size and digest, then make the blob visible (raise and keep
        nothing on a mismatch)."""
        ...

    def abort(self) -> None: ...


class ContentStore(Protocol):
    def info(self, digest: Digest) -> Info | None:
        """The blob's size, or None when the store lacks it."""
        ...

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        """The blob's bytes from ``offset`` (a range read); ContentNotFound when absent."""
        ...

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractContextManager[Writer]:
        """A writer expecting exactly ``size`` bytes hashing to ``digest``; leaving the context
        without ``commit`` aborts."""
        ...

    def walk(self) -> Iterator[Info]:
        """Every blob the store holds."""
        ...

    def delete(self, digest: Digest) -> bool:
        """Remove a blob; False when it was not there."""
        ...


def read_all(store: ContentStore, desc: Descriptor, limit: int = 4 << 20) -> bytes:
    """A small blob (a manifest, a config), read whole and verified against ``desc``."""
    if desc.size > limit:
        raise ContentSizeError(f"{desc.digest}: {desc.size} bytes is more than the {limit} allowed here")
    with store.reader(desc.digest) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size:
        raise ContentSizeError(f"{desc.digest}: expected {desc.size} bytes, got {len(data)}")
    if Digest.of(data, desc.digest.algorithm) != desc.digest:
        raise DigestMismatchError(desc.digest, Digest.of(data, desc.digest.algorithm))
    return data


def fetcher(store: ContentStore) -> Callable[[Descriptor], Manifest | None]:
    """``graph.walk``'s fetch over a store: a manifest it lacks is a leaf (an unpulled platform)."""
    def fetch(desc: Descriptor) -> Manifest | None:
        if store.info(desc.digest) is None:
            return None
        return parse_manifest(read_all(store, desc), desc.media_type)
    return fetch


def copy_blob(src: ContentStore, dst: ContentStore, desc: Descriptor) -> bool:
    """Copy one blob unless ``dst`` has it; True when bytes were copied."""
    if dst.info(desc.digest) is not None:
        return False
    with src.reader(desc.digest) as f, dst.writer(desc.digest, desc.size) as w:
        while chunk := f.read(_CHUNK):
            w.write(chunk)
        w.commit()
    return True


def copy_graph(src: ContentStore, dst: ContentStore, root: Descriptor, *,
               platform: graph.Platform | None = None) -> list[Descriptor]:
    """Copy the graph under ``root`` from ``src`` into ``dst``: walk it, copy what ``dst`` lacks,
    children before parents (so a reader of ``dst`` never finds a manifest whose blobs are
    missing). Manifests ``src`` lacks are left out. Returns the descriptors copied."""
    copied = []
    for node in graph.walk(root, fetcher(src), platform=platform):
        if graph.is_manifest(node.descriptor) and node.manifest is None:
            continue
        if copy_blob(src, dst, node.descriptor):
            copied.append(node.descriptor)
    return copied


# --------------------------------------------------------------------------- an OCI image layout

class _FileWriter:
    """Writes aside (``blobs/<alg>/.<hex>.<random>``), verifies, then renames into place."""

    def __init__(self, final: Path, digest: Digest, size: int) -> None:
        self.final, self.size = final, size
        self.tmp = final.with_name(f".{final.name}.{os.urandom(8).hex()}")
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.file: IO[bytes] | None = os.fdopen(fd, "wb")
        self.verifier = DigestVerifier(digest)
        self.written = 0

    def write(self, data: bytes) -> None:
        assert self.file is not None, "writer closed"
        self.written += len(data)
        if self.written > self.size:
            self.abort()
            raise ContentSizeError(f"{self.final.name}: more than the expected {self.size} bytes")
        self.verifier.update(data)
        self.file.write(data)

    def commit(self) -> Path:
        assert self.file is not None, "writer closed"
        if self.written != self.size:
            self.abort()
            raise ContentSizeError(f"{self.final.name}: expected {self.size} bytes, got {self.written}")
        try:
            self.verifier.verify()
        except DigestMismatchError:
            self.abort()
            raise
        self.file.close()
        self.file = None
        os.rename(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.tmp.unlink(missing_ok=True)


class BlobFiles:
    """``info``, ``reader`` and ``delete`` for a store that keeps each blob in one file."""

    def blob_file(self, digest: Digest) -> Path:
        raise NotImplementedError

    def info(self, digest: Digest) -> Info | None:
        try:
            return Info(digest, self.blob_file(digest).stat().st_size)
        except FileNotFoundError:
            return None

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        try:
            f = open(self.blob_file(digest), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ContentNotFound(digest) from None
        if offset:
            f.seek(offset)
        return f

    def delete(self, digest: Digest) -> bool:
        try:
            self.blob_file(digest).unlink()
        except FileNotFoundError:
            return False
        return True


class LayoutStore(BlobFiles):
    """A ContentStore over an OCI image layout directory (``oci-layout``, ``index.json``,
    ``blobs/<alg>/<hex>``), as skopeo, podman and ORAS write them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_file(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[Writer]:
        w = _FileWriter(self.blob_file(digest), digest, size)
        try:
            yield w
        finally:
            w.abort()  # after a commit: nothing left to remove

    def walk(self) -> Iterator[Info]:
        blobs = self.root / "blobs"
        if not blobs.is_dir():
            return
        for alg in sorted(blobs.iterdir()):
            for path in sorted(alg.iterdir()):
                if path.name.startswith("."):
                    continue  # a write in progress
                with contextlib.suppress(DigestError):
                    yield Info(Digest.parse(f"{alg.name}:{path.name}"), path.stat().st_size)

    def index(self) -> list[Descriptor]:
        """The layout's ``index.json`` entries (the image index: names -> descriptors)."""
        try:
            return layout_index((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return []
