"""Filling the cache with one blob: one upstream GET, however many clients ask, streamed to
them while it is stored, and visible only once verified.

Who fetches: in one worker, the first request starts a ``Fill`` (a task of its own, so a client
that goes away never stops it) and later ones join it. Across workers and replicas sharing the
storage, the fill's leader holds the storage lock ``pyreg-locks/mirror/<alg>/<hex>``
(``Driver.try_lock``); a worker that cannot take it follows: it waits for the blob to be
published, reading the leader's staging file as it grows, and takes over (once) if the leader
dies without publishing.

Where the bytes go: ``pyreg-mirror/fills/<alg>/<hex>/data`` (the staging file, written through
the driver) beside ``size`` (upstream's Content-Length, for followers in other processes). The
leader hashes as it writes; at the end the staging file is published with the upload path's
``Layout.publish_blob`` only if its digest and size are right, else it is deleted.

What clients get (``Fill.stream``): the staging file as it grows, except its last byte, which is
only ever read from the published blob: a fill that fails (upstream cut, wrong bytes) ends every
answer short of its Content-Length, so no client takes a complete, wrong blob for a good one.
On a driver whose staging file cannot be read before it is complete (S3 multipart), readers wait
for the publish and then stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from pyreg.registry.layout import LOCKS, ROOT, Layout, blob_data_path, delete_path
from pyreg.registry.mirror import metrics
from pyreg.registry.mirror.upstream import Upstream
from pyreg.storage.digest import Digest, new_hasher
from pyreg.storage.driver import Driver, Lock
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.remote import RemoteError

log = logging.getLogger("pyreg.mirror")

FILLS: Final = f"{ROOT}/pyreg-mirror/fills"
POLL: Final = 0.05  # seconds between looks at another process's fill
LOCK_CHECK: Final = 5.0  # seconds between renewals of the leader's lock (a lease on S3)
FOLLOW_TIMEOUT: Final = 120.0  # a leader elsewhere that shows no progress this long is given up on
STEP: Final = 1 << 20  # bytes read from upstream per hop to a thread


def fill_dir(digest: Digest) -> str:
    return f"{FILLS}/{digest.algorithm}/{digest.hex}"


def fill_lock_path(digest: Digest) -> str:
    return f"{LOCKS}/mirror/{digest.algorithm}/{digest.hex}"


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
        self._recent: tuple[int, bytes] | None = None  # the leader's last chunk and its offset
        self.ready = asyncio.Event()  # size known, published, or failed
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

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
        label = self.upstream.name
        await delete_path(self.driver, fill_dir(self.digest))  # what a dead leader left
        try:
            length, chunks, response = await self.upstream.call(
                self.upstream.open_blob, self.remote, self.digest)
        except RemoteError as e:
            metrics.ERRORS.labels(label).inc()
            self.upstream_missing = e.status == 404
            raise FillError(str(e)) from None
        hasher = new_hasher(self.digest.algorithm)
        iterator: Iterator[bytes] = chunks

        def step() -> bytes | None:
            """At least STEP bytes (the network gives 64 KiB at a time): few loop round trips."""
            parts: list[bytes] = []
            got = 0
            try:
                while got < STEP:
                    piece = next(iterator, None)
                    if piece is None:
                        break
                    parts.append(piece)
                    got += len(piece)
            finally:  # bytes of a download cut mid-step were fetched all the same
                metrics.UPSTREAM_BYTES.labels(label).inc(got)
            if not parts:
                return None
            chunk = parts[0] if len(parts) == 1 else b"".join(parts)
            hasher.update(chunk)
            return chunk

        written = 0
        writer: Any = None
        try:
            if length is not None:
                await self.driver.put_content(self.size_path, str(length).encode())
                self.size = length
                self.ready.set()
            writer = await self.driver.writer(self.data_path)
            checked = time.monotonic()
            while True:
                try:
                    chunk = await self.upstream.call(step)
                except Exception as e:
                    metrics.ERRORS.labels(label).inc()
                    raise FillError(f"blob {self.digest} from {self.upstream.host}: "
                                    f"{type(e).__name__}: the download was cut") from None
                if chunk is None:
                    break
                written += len(chunk)
                if length is not None and written > length:
                    break
                await writer.write(chunk)
                self._recent = (written - len(chunk), chunk)
                self._notify()
                if time.monotonic() - checked > LOCK_CHECK:
                    await lock.check()
                    checked = time.monotonic()
            actual = Digest(self.digest.algorithm, hasher.hexdigest())
            if actual != self.digest or (length is not None and written != length):
                metrics.ERRORS.labels(label).inc()
                log.error("mirror: %s sent %d bytes hashing to %s for blob %s: not cached",
                          self.upstream.host, written, actual, self.digest)
                raise FillError(f"upstream {self.upstream.host} sent wrong content for blob "
                                f"{self.digest}: not cached")
            await writer.commit()
            await writer.close()
            writer = None
            await self.layout.publish_blob(self.data_path, self.digest, written)
            self.size = written
            await self.layout.link_blob(self.name, self.digest)
            self.published = True
            log.info("mirror: cached blob %s (%d bytes) from %s", self.digest, written, self.upstream.host)
        finally:
            self._recent = None
            await self.upstream.call(response.close)
            if writer is not None:
                with contextlib.suppress(Exception):
                    await writer.cancel()
            await delete_path(self.driver, fill_dir(self.digest))

    # -- what a client gets --------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[bytes]:
        """The blob's bytes for one client: the growing staging file, all but its last byte,
        then the rest from the published blob. Raises FillError when the fill failed (the
        answer is then cut short of its Content-Length)."""
        offset = 0
        while True:
            changed = self._changed
            if self.error is not None:
                raise FillError(self.error)
            size = self.size
            if self.published and size is not None:
                if offset < size:
                    async for chunk in self.driver.reader(blob_data_path(self.digest), offset,
                                                          size - offset):
                        offset += len(chunk)
                        yield chunk
                return
            recent = self._recent
            if recent is not None and size is not None and recent[0] <= offset < recent[0] + len(recent[1]):
                # caught up with this worker's leader: its last chunk, from memory (still never
                # the blob's last byte before it is published)
                piece = recent[1][offset - recent[0]:size - 1 - recent[0]]
                if piece:
                    offset += len(piece)
                    yield piece
                    continue
            available = 0
            if size is not None:
                try:
                    available = min((await self.driver.stat(self.data_path)).size, size - 1)
                except PathNotFoundError:
                    available = 0
            if available > offset:
                try:
                    async for chunk in self.driver.reader(self.data_path, offset, available - offset):
                        offset += len(chunk)
                        yield chunk
                except PathNotFoundError:
                    pass  # published (moved) or failed meanwhile: look again
                continue
            await self._wait(changed, 0.5)
