"""A ContentStore over a registry's storage: Distribution's layout (storage/distlayout.py) on any
async ``Driver`` (filesystem, S3) — blobs by digest, and, scoped to a repository, only the blobs
that repository links, as the registry serves them.

It implements the async twin of the protocol (storage/asyncstore.py says why: the server and
its garbage collector run on an event loop); ``BlockingStore`` gives it the synchronous protocol
for ``copy_graph``. Writes are Distribution's: write aside (``pyreg-ingest/``, outside its two
trees, so neither its GC nor ours sees a half-written blob), verify size and digest, then publish
to ``blobs/…/data`` — a blob is never visible under a digest its bytes do not have. Scoped to a
repository, a committed write also links the blob there and a delete only unlinks it (the bytes
are the garbage collector's to remove, as in Distribution).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from pyreg.storage.content import ContentNotFound, ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestMismatchError, DigestVerifier
from pyreg.storage.distlayout import (
    BLOBS,
    ROOT,
    blob_data_path,
    blob_dir,
    digest_at,
    layer_link_path,
    repo_path,
    revision_link_path,
)
from pyreg.storage.driver import Driver, FileWriter
from pyreg.storage.errors import PathNotFoundError

INGEST = f"{ROOT}/pyreg-ingest"


async def delete_path(driver: Driver, path: str) -> bool:
    """Delete a file or a tree; False when it was not there (a concurrent delete is no error)."""
    try:
        await driver.delete(path)
    except PathNotFoundError:
        return False
    return True


class RegistryWriter:
    """One blob being written aside; ``commit`` verifies, publishes and (in a repository) links."""

    def __init__(self, store: RegistryStore, digest: Digest, size: int) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.staged = f"{INGEST}/{digest.algorithm}-{digest.hex}-{os.urandom(8).hex()}"
        self.verifier = DigestVerifier(digest)
        self.written = 0
        self.file: FileWriter | None = None
        self.done = False

    async def open(self) -> None:
        self.file = await self.store.driver.writer(self.staged)

    async def write(self, data: bytes) -> None:
        assert self.file is not None and not self.done, "writer closed"
        self.written += len(data)
        if self.written > self.size:
            await self.abort()
            raise ContentSizeError(f"{self.digest}: more than the expected {self.size} bytes")
        self.verifier.update(data)
        await self.file.write(data)

    async def commit(self) -> Digest:
        assert self.file is not None and not self.done, "writer closed"
        if self.written != self.size:
            await self.abort()
            raise ContentSizeError(f"{self.digest}: expected {self.size} bytes, got {self.written}")
        try:
            self.verifier.verify()
        except DigestMismatchError:
            await self.abort()
            raise
        await self.file.commit()
        self.done = True
        driver = self.store.driver
        if await self.store.blob_size(self.digest) == self.size:
            await delete_path(driver, self.staged)  # stored already: content addressed, the same bytes
        else:
            snap = await driver.snapshot(self.staged, blob_data_path(self.digest), self.digest.algorithm)
            if snap.hexdigest not in (None, self.digest.hex) or snap.size != self.size:
                await delete_path(driver, blob_dir(self.digest))
                raise DigestMismatchError(self.digest, Digest(self.digest.algorithm, snap.hexdigest or "?"))
        if self.store.repository is not None:
            await driver.put_content(layer_link_path(self.store.repository, self.digest),
                                     str(self.digest).encode())
        return self.digest

    async def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.file is not None:
            with contextlib.suppress(PathNotFoundError):
                await self.file.cancel()
        await delete_path(self.store.driver, self.staged)


class RegistryStore:
    """AsyncContentStore over Distribution's layout; ``repository`` scopes it to the blobs (layer
    links) and manifests (revision links) that one repository holds."""

    def __init__(self, driver: Driver, repository: str | None = None) -> None:
        self.driver = driver
        self.repository = repository

    def _links(self, digest: Digest) -> tuple[str, ...]:
        assert self.repository is not None
        return (layer_link_path(self.repository, digest), revision_link_path(self.repository, digest))

    async def _linked(self, digest: Digest) -> bool:
        if self.repository is None:
            return True
        for path in self._links(digest):
            try:
                raw = await self.driver.get_content(path)
            except PathNotFoundError:
                continue
            if raw.decode("ascii", "replace").strip() == str(digest):
                return True
        return False

    async def blob_size(self, digest: Digest) -> int | None:
        """The size of the blob in the shared blob store, whatever links it."""
        try:
            return (await self.driver.stat(blob_data_path(digest))).size
        except PathNotFoundError:
            return None

    async def info(self, digest: Digest) -> Info | None:
        if not await self._linked(digest):
            return None
        size = await self.blob_size(digest)
        return None if size is None else Info(digest, size)

    async def get(self, digest: Digest) -> bytes:
        """A small blob (a manifest) whole, in one driver call; ContentNotFound when absent."""
        if not await self._linked(digest):
            raise ContentNotFound(digest)
        try:
            return await self.driver.get_content(blob_data_path(digest))
        except PathNotFoundError:
            raise ContentNotFound(digest) from None

    async def reader(self, digest: Digest, offset: int = 0) -> AsyncIterator[bytes]:
        if await self.info(digest) is None:
            raise ContentNotFound(digest)
        return self.driver.reader(blob_data_path(digest), offset)

    @contextlib.asynccontextmanager
    async def writer(self, digest: Digest, size: int) -> AsyncIterator[RegistryWriter]:
        w = RegistryWriter(self, digest, size)
        await w.open()
        try:
            yield w
        finally:
            await w.abort()  # after a commit: nothing left to remove

    async def walk(self) -> AsyncIterator[Info]:
        if self.repository is None:
            async for parts, size in self._files(BLOBS):
                if len(parts) == 4 and parts[3] == "data" and parts[2][:2] == parts[1]:
                    d = digest_at(parts[0], parts[2])
                    if d is not None:
                        yield Info(d, size)
            return
        seen: set[Digest] = set()
        for sub, depth in (("_layers", 3), ("_manifests/revisions", 3)):
            async for parts, _ in self._files(f"{repo_path(self.repository)}/{sub}"):
                d = digest_at(parts[0], parts[1]) if len(parts) == depth and parts[2] == "link" else None
                if d is None or d in seen:
                    continue
                seen.add(d)
                info = await self.info(d)
                if info is not None:
                    yield info

    async def _files(self, root: str) -> AsyncIterator[tuple[list[str], int]]:
        prefix = root + "/"
        try:
            async for info in self.driver.walk(root):
                if not info.is_dir and info.path.startswith(prefix):
                    yield info.path[len(prefix):].split("/"), info.size
        except PathNotFoundError:
            return

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; in a repository, only its links (the bytes may be others')."""
        if self.repository is None:
            return await delete_path(self.driver, blob_dir(digest))
        gone = False
        for path in self._links(digest):
            gone |= await delete_path(self.driver, path.rsplit("/", 1)[0])
        return gone
