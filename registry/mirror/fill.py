"""Filling the cache with one blob: one upstream GET, however many clients ask, streamed to
them while it is stored, and visible only once verified.

Who fetches: in one worker, the first request starts a ``Fill`` (a task of its own, so a client
that goes away never stops it) and later ones join it. Across workers and replicas sharing the
storage, the fill's leader holds the storage lock ``pyreg-locks/mirror/<alg>/<hex>``
(``Driver.try_lock``); a worker that cannot take it follows: it waits for the blob to be
published, reading the leader's staging file as it grows, and takes over (once) if the leader
dies without publishing.

Where the bytes go: ``pyreg-mirror/fills/<alg>/<hex>/data`` (the staging file) beside ``size``
(upstream's Content-Length, for followers in other processes). The leader's upstream thread reads
without waiting for the loop (over a bare socket from an anonymous http:// upstream:
registry/mirror/upstream.py), 1 MiB at a time; on a local filesystem it writes each chunk to the
staging file itself (registry/mirror/staging.py), then hands it over to the loop and hashes it
(hashlib lets go of the GIL, so the loop sends it meanwhile); on other drivers the loop writes
the chunks through the driver in order, at most ``AHEAD`` chunks behind. At the end the staging
file is fsynced and published with the upload path's ``Layout.publish_blob`` only if its digest
and size are right, else it is deleted.

What clients get (``Fill.stream``): in the leader's worker, the staging file's bytes as they are
written, sent by the kernel (``Span``s for sendfile: registry/mirror/answer.py), or where that
cannot be, the chunks still in memory and older bytes read from the staging file; never the
blob's last byte before its digest is verified: a fill that fails (upstream cut, wrong bytes)
ends every answer short of its Content-Length, so no client takes a complete, wrong blob for a
good one. Once verified, the last bytes go at once, and the fsync and publish happen after the
client has them. In other workers, the staging file as it grows, and the last byte only from the
published blob. On a driver whose staging file cannot be read before it is complete (S3
multipart), readers that are not served from the leader's memory wait for the publish and then
stream (docs/mirror.md, "Workers and replicas", says why no cheaper way round that was taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final, overload

from pyreg.registry.layout import LOCKS, ROOT, Layout, blob_data_path, delete_path
from pyreg.registry.mirror import metrics
from pyreg.registry.mirror.staging import LocalStaging, StagingError
from pyreg.registry.mirror.upstream import Upstream
from pyreg.storage.digest import Digest, new_hasher
from pyreg.storage.driver import Driver, Lock
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.filesystem import FilesystemDriver
from pyreg.storage.remote import RemoteError

log = logging.getLogger("pyreg.mirror")

FILLS: Final = f"{ROOT}/pyreg-mirror/fills"
POLL: Final = 0.05  # seconds between looks at another process's fill
LOCK_CHECK: Final = 5.0  # seconds between renewals of the leader's lock (a lease on S3)
FOLLOW_TIMEOUT: Final = 120.0  # a leader elsewhere that shows no progress this long is given up on
STEP: Final = 1 << 20  # bytes read from upstream per hand-over to the loop
AHEAD: Final = 8  # chunks the pump may read ahead of the staging file's writer (memory bound)
KEEP: Final = 4  # written chunks kept in memory for readers a little behind (the last one always)


def fill_dir(digest: Digest) -> str:
    return f"{FILLS}/{digest.algorithm}/{digest.hex}"


def fill_lock_path(digest: Digest) -> str:
    return f"{LOCKS}/mirror/{digest.algorithm}/{digest.hex}"


class Span:
    """``count`` bytes from ``offset`` of the open staging file ``fd``: a part of an answer that
    the kernel sends (registry/mirror/answer.py)."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd, self.offset, self.count = fd, offset, count


class FillError(Exception):
    """The fill failed; the message is one line for the client and the log."""


class Fill:
    """One blob being fetched into the cache by this worker (or watched while another does)."""

    def __init__(self, layout: Layout, upstream: Upstream, remote: str, name: str,
                 digest: Digest) -> None:
        self.layout = layout
        self.driver: Driver = layout.driver
        self.upstream = upstream
        self.remote = remote
        self.name = name
        self.digest = digest
        self.size: int | None = None
        self.error: str | None = None
        self.upstream_missing = False
        self.published = False
        self.verified = False  # every byte received and hashing to the digest (leader only)
        self._window: deque[tuple[int, bytes | memoryview]] = deque()  # (offset, chunk): recent ones
        self._received = 0  # bytes handed to the loop by the leader's pump
        self.ready = asyncio.Event()  # size known, published, or failed
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._staging_fd: int | None = None  # the leader's local staging file, open for reading

    # -- waking readers ------------------------------------------------------------------------

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    @property
    def data_path(self) -> str:
        return f"{fill_dir(self.digest)}/data"

    @property
    def size_path(self) -> str:
        return f"{fill_dir(self.digest)}/size"

    # -- the fill itself -----------------------------------------------------------------------

    def start(self, on_done: Callable[[], None]) -> None:
        async def run() -> None:
            try:
                await self._run()
            except Exception as e:  # every failure ends as a message for the waiting clients
                if not isinstance(e, FillError):
                    log.exception("mirror: fill of %s failed", self.digest)
                self.error = self.error or str(e) or type(e).__name__
            finally:
                on_done()
                self.ready.set()
                self._notify()

        self.task = asyncio.create_task(run())

    async def _run(self) -> None:
        took_over = False
        while True:
            if await self.layout.blob_size(self.digest) is not None:
                await self._published()
                return
            lock = await self.driver.try_lock(fill_lock_path(self.digest))
            if lock is not None:
                try:
                    await self._lead(lock)
                finally:
                    await lock.release()
                return
            if took_over:
                raise FillError(f"blob {self.digest}: another fill of it keeps failing")
            await self._follow()
            if self.published:
                return
            took_over = True  # the leader went away without publishing: fetch it here, once

    async def _published(self) -> None:
        self.size = await self.layout.blob_size(self.digest)
        await self.layout.link_blob(self.name, self.digest)
        self.published = True

    async def _follow(self) -> None:
        """Another worker or replica holds the lock: watch its staging file until it publishes
        or lets the lock go."""
        log.info("mirror: blob %s is being fetched by another worker or replica: following it",
                 self.digest)
        last_progress = time.monotonic()
        seen = -1
        while True:
            if await self.layout.blob_size(self.digest) is not None:
                await self._published()
                return
            if self.size is None:
                with contextlib.suppress(PathNotFoundError, ValueError):
                    self.size = int((await self.driver.get_content(self.size_path)).decode())
                    self.ready.set()
            try:
                now_size = (await self.driver.stat(self.data_path)).size
            except PathNotFoundError:
                now_size = -1
            if now_size != seen:
                seen, last_progress = now_size, time.monotonic()
            self._notify()
            probe = await self.driver.try_lock(fill_lock_path(self.digest))
            if probe is not None:  # the leader finished or died: which one?
                await probe.release()
                if await self.layout.blob_size(self.digest) is not None:
                    await self._published()
                return
            if time.monotonic() - last_progress > FOLLOW_TIMEOUT:
                raise FillError(f"blob {self.digest}: the worker fetching it made no progress "
                                f"for {FOLLOW_TIMEOUT:.0f} s")
            await asyncio.sleep(POLL)

    async def _lead(self, lock: Lock) -> None:
        """Fetch the blob: an upstream thread reads it without pause (``pump``), each chunk is
        handed to the loop as it arrives (clients get it from ``_window`` at once) and hashed in
        that thread; the loop writes the staging file in order. Once every byte is in and the
        digest is right, clients may have the last chunk; the fsync and the publish follow."""
        label = self.upstream.name
        await delete_path(self.driver, fill_dir(self.digest))  # what a dead leader left
        try:
            body = await self.upstream.call(self.upstream.open_blob, self.remote, self.digest)
        except RemoteError as e:
            metrics.ERRORS.labels(label).inc()
            self.upstream_missing = e.status == 404
            raise FillError(str(e)) from None
        length = body.length
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue[bytes | memoryview | None] = asyncio.Queue()
        room = threading.Semaphore(AHEAD)  # chunks the loop has not taken yet: bounded memory
        stop = threading.Event()
        hasher = new_hasher(self.digest.algorithm)

        def arrive(chunk: bytes | memoryview | None) -> None:
            if chunk is not None:
                self._window.append((self._received, chunk))
                self._received += len(chunk)
                self._notify()
            arrived.put_nowait(chunk)

        staging: LocalStaging | None = None

        def pump() -> int:
            """The whole download, in an upstream thread: STEP bytes per hand-over (fewer only
            at the end), written to a local staging file first, hashed after the loop has them."""
            received = 0
            try:
                while chunk := body.read(STEP):
                    metrics.UPSTREAM_BYTES.labels(label).inc(len(chunk))
                    if staging is not None:
                        staging.write(chunk)
                    received += self._hand_over(chunk, room, stop, hasher, loop, arrive)
                    if stop.is_set() or (length is not None and received > length):
                        return received
                return received
            finally:
                if staging is not None:
                    staging.close()
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(arrive, None)

        written = 0
        writer: Any = None
        pumping: asyncio.Future[int] | None = None
        try:
            if length is not None:
                await self.driver.put_content(self.size_path, str(length).encode())
                self.size = length
                self.ready.set()
            writer = await self.driver.writer(self.data_path)
            if isinstance(self.driver, FilesystemDriver):  # the pump writes it (registry/mirror/staging.py)
                local = self.driver.local_path(self.data_path)
                staging = await asyncio.to_thread(LocalStaging, local)
                self._staging_fd = await asyncio.to_thread(os.open, local, os.O_RDONLY | os.O_CLOEXEC)
            pumping = asyncio.ensure_future(self.upstream.call(pump))
            checked = time.monotonic()
            while (chunk := await arrived.get()) is not None:
                if staging is None:
                    await writer.write(chunk)
                written += len(chunk)
                room.release()
                while len(self._window) > KEEP and self._window[0][0] + len(self._window[0][1]) <= written:
                    self._window.popleft()
                if time.monotonic() - checked > LOCK_CHECK:
                    await lock.check()
                    checked = time.monotonic()
            try:
                received = await pumping
            except StagingError as e:
                raise FillError(f"blob {self.digest}: {e}") from None
            except Exception as e:
                metrics.ERRORS.labels(label).inc()
                raise FillError(f"blob {self.digest} from {self.upstream.host}: "
                                f"{type(e).__name__}: the download was cut") from None
            actual = Digest(self.digest.algorithm, hasher.hexdigest())
            if actual != self.digest or (length is not None and received != length):
                metrics.ERRORS.labels(label).inc()
                log.error("mirror: %s sent %d bytes hashing to %s for blob %s: not cached",
                          self.upstream.host, received, actual, self.digest)
                raise FillError(f"upstream {self.upstream.host} sent wrong content for blob "
                                f"{self.digest}: not cached")
            # Verified: clients may take the last chunk from memory now, before the fsync and
            # the publish, which other workers and later requests wait for.
            self.size = received
            self.verified = True
            self.ready.set()
            self._notify()
            await writer.commit()
            await writer.close()
            writer = None
            await self.layout.publish_blob(self.data_path, self.digest, received)
            await self.layout.link_blob(self.name, self.digest)
            self.published = True
            log.info("mirror: cached blob %s (%d bytes) from %s", self.digest, received, self.upstream.host)
        finally:
            stop.set()
            room.release(AHEAD)  # a pump waiting for room sees ``stop`` at once
            if pumping is not None:
                with contextlib.suppress(Exception):
                    await pumping
            await self.upstream.call(body.close)
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.cancel()
            if self._staging_fd is not None:  # streams that took a copy keep theirs
                os.close(self._staging_fd)
                self._staging_fd = None
            await delete_path(self.driver, fill_dir(self.digest))
            self._window.clear()  # published: readers go to the blob; failed: they stop

    def _hand_over(self, chunk: bytes | memoryview, room: threading.Semaphore, stop: threading.Event,
                   hasher: Any, loop: asyncio.AbstractEventLoop,
                   arrive: Callable[[bytes | memoryview | None], None]) -> int:
        """In the pump thread: wait for room, give one chunk to the loop, then hash it."""
        while not room.acquire(timeout=1.0):
            if stop.is_set():
                return 0
        if stop.is_set():
            return 0
        loop.call_soon_threadsafe(arrive, chunk)
        hasher.update(chunk)  # releases the GIL: the loop sends the chunk meanwhile
        return len(chunk)

    # -- what a client gets --------------------------------------------------------------------

    def spans_possible(self) -> bool:
        """``stream(spans=True)`` may give spans: a local staging file (if this worker leads)."""
        return isinstance(self.driver, FilesystemDriver)

    @overload
    def stream(self) -> AsyncGenerator[bytes | memoryview]: ...

    @overload
    def stream(self, spans: bool) -> AsyncGenerator[bytes | memoryview | Span]: ...

    async def stream(self, spans: bool = False) -> AsyncGenerator[bytes | memoryview | Span]:
        """The blob's bytes for one client: the leader's recent chunks from memory, older bytes
        from the growing staging file, all but the last byte until the digest is verified, and
        from the published blob once there is one. Raises FillError when the fill failed (the
        answer is then cut short of its Content-Length).

        With ``spans``, in the leader's worker with a local staging file, every part is a
        ``Span`` of that file instead (for sendfile: no byte passes through Python), on a
        descriptor of its own that stays valid to the end whatever happens to the path."""
        offset = 0
        fd: int | None = None
        try:
            while True:
                changed = self._changed
                if self.error is not None:
                    raise FillError(self.error)
                size = self.size
                if size is not None and offset >= size and self.verified:
                    return
                if spans and fd is None and self._staging_fd is not None:
                    fd = os.dup(self._staging_fd)
                if fd is not None and size is not None:
                    # what the pump handed over is in the file; the last byte once it is verified
                    end = min(self._received, size if self.verified else size - 1)
                    if end > offset:
                        yield Span(fd, offset, end - offset)
                        offset = end
                    else:
                        await self._wait(changed, 0.5)
                    continue
                if self.published and size is not None:
                    if offset < size:
                        async for chunk in self.driver.reader(blob_data_path(self.digest), offset,
                                                              size - offset):
                            offset += len(chunk)
                            yield chunk
                    return
                if size is not None:
                    piece = self._from_window(offset, size if self.verified else size - 1)
                    if piece:
                        offset += len(piece)
                        yield piece
                        continue
                available = 0
                limit = -1 if size is None else size - 1
                if size is not None:
                    try:
                        available = min((await self.driver.stat(self.data_path)).size, limit)
                    except PathNotFoundError:
                        available = 0
                if available > offset:
                    reader = self.driver.reader(self.data_path, offset, available - offset)
                    try:
                        async for chunk in reader:
                            offset += len(chunk)
                            yield chunk
                            if self._from_window(offset, limit):
                                break  # caught up with the chunks in memory: take them from there
                    except PathNotFoundError:
                        pass  # published (moved) or failed meanwhile: look again
                    finally:
                        close = getattr(reader, "aclose", None)
                        if close is not None:
                            await close()  # its file now, not when the generator is collected
                    continue
                await self._wait(changed, 0.5)
        finally:
            if fd is not None:
                os.close(fd)

    def _from_window(self, offset: int, limit: int) -> bytes | memoryview:
        """The bytes from ``offset`` (up to ``limit``) of the chunk in memory holding it."""
        for start, chunk in reversed(self._window):
            if start <= offset < start + len(chunk):
                end = min(len(chunk), limit - start)
                if offset == start and end == len(chunk):
                    return chunk  # the whole chunk: no copy
                return chunk[offset - start:end] if end > offset - start else b""
            if start + len(chunk) <= offset:
                break
        return b""
