"""The ContentStore protocol's async twin, for stores whose every call is I/O on an async
``Driver`` (storage/registrystore.py), and ``BlockingStore``, which gives any of them the
synchronous protocol of storage/content.py.

Why a twin rather than only a sync wrapper: the registry server and its garbage collector run on
an event loop, where a blocking wrapper would have to hop to a thread and back for every call (and
could deadlock the loop it waits on). So the server side calls the async store directly, and the
synchronous world — ``copy_graph``, the client, the shared conformance tests — wraps it at the
edge: ``BlockingStore`` runs the calls on an anyio blocking portal (an event loop in a thread of
its own), so a copy into or out of a registry directory is the same one function as any other.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from typing import IO, TYPE_CHECKING, Protocol

from pyreg.storage.content import ContentNotFound, ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.manifest import Descriptor

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal


class AsyncWriter(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> object:
        """Verify the expected size and digest, then make the blob visible."""
        ...

    async def abort(self) -> None: ...


class AsyncContentStore(Protocol):
    async def info(self, digest: Digest) -> Info | None: ...

    async def reader(self, digest: Digest, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset`` in chunks; ContentNotFound (raised by the await)."""
        ...

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractAsyncContextManager[AsyncWriter]: ...

    def walk(self) -> AsyncIterator[Info]: ...

    async def delete(self, digest: Digest) -> bool: ...


async def read_all(store: AsyncContentStore, desc: Descriptor, limit: int = 4 << 20) -> bytes:
    """A small blob (a manifest, a config), read whole and verified against ``desc``."""
    if desc.size > limit:
        raise ContentSizeError(f"{desc.digest}: {desc.size} bytes is more than the {limit} allowed here")
    parts, got = [], 0
    async for chunk in await store.reader(desc.digest):
        parts.append(chunk)
        got += len(chunk)
        if got > desc.size:
            break
    data = b"".join(parts)
    if len(data) != desc.size:
        raise ContentSizeError(f"{desc.digest}: expected {desc.size} bytes, got {len(data)}")
    if Digest.of(data, desc.digest.algorithm) != desc.digest:
        raise DigestMismatchError(desc.digest, Digest.of(data, desc.digest.algorithm))
    return data


class _PortalReader(io.RawIOBase):
    """A file over an async chunk iterator, each chunk fetched through the portal."""

    def __init__(self, portal: BlockingPortal, chunks: AsyncIterator[bytes]) -> None:
        self._portal, self._chunks, self._buf = portal, chunks, b""

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return b""

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            self._buf = self._portal.call(self._next)
            if not self._buf:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    self._portal.call(aclose)
        super().close()


class _PortalWriter:
    def __init__(self, portal: BlockingPortal, writer: AsyncWriter) -> None:
        self._portal, self._writer = portal, writer

    def write(self, data: bytes) -> None:
        self._portal.call(self._writer.write, data)

    def commit(self) -> object:
        return self._portal.call(self._writer.commit)

    def abort(self) -> None:
        self._portal.call(self._writer.abort)


class BlockingStore:
    """storage/content.py's synchronous ContentStore over an AsyncContentStore, its calls run on
    ``portal`` (``anyio.from_thread.start_blocking_portal()``; the caller owns and closes it)."""

    def __init__(self, store: AsyncContentStore, portal: BlockingPortal) -> None:
        self.store, self.portal = store, portal

    def info(self, digest: Digest) -> Info | None:
        return self.portal.call(self.store.info, digest)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        chunks = self.portal.call(self.store.reader, digest, offset)  # ContentNotFound here
        return io.BufferedReader(_PortalReader(self.portal, chunks), 1 << 20)

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[_PortalWriter]:
        with self.portal.wrap_async_context_manager(self.store.writer(digest, size)) as w:
            yield _PortalWriter(self.portal, w)

    def walk(self) -> Iterator[Info]:
        async def collect() -> list[Info]:
            return [i async for i in self.store.walk()]
        yield from self.portal.call(collect)

    def delete(self, digest: Digest) -> bool:
        return self.portal.call(self.store.delete, digest)


__all__ = ["AsyncContentStore", "AsyncWriter", "BlockingStore", "ContentNotFound", "read_all"]
