"""Blob upload sessions whose whole state lives in the storage driver.

A session is ``_uploads/<id>/data`` (the bytes so far) and ``startedat`` (RFC 3339), exactly as
Distribution keeps them, so any process or replica can take the next chunk and a restart loses
nothing. As in Distribution, every chunk opens the data with ``append=True``, writes and only
closes it; the size is the one that writer sees (on S3 the open multipart upload, which a stat of
the key cannot see), and only the final PUT commits. So a chunk never re-copies what earlier
chunks stored. A session exists while its ``startedat`` does (Distribution's rule too).

Integrity, whatever requests race on one session (several workers, several replicas):

- **One writer at a time.** Every request that reads or changes a session (status, PATCH, PUT,
  DELETE, purge) first takes the session's lock in the *storage* (``Driver.try_lock``: a flock
  on disk, a conditional-write lease on S3), never in process memory, and a request that finds
  it taken is refused at once (UploadBusyError: 416 BLOB_UPLOAD_INVALID), never interleaved.
  A dead holder's lock does not outlive it (the kernel drops a flock; an S3 lease expires).
- **Verify exactly what is published.** Finishing commits the data, then ``snapshot``s it to a
  name only this request knows, frozen against any writer still open, and the digest checked is
  that of the snapshot: S3 computes it while copying; on disk the running hash kept in memory is
  used when it counted exactly the snapshot's bytes under the lock, else the snapshot is read
  back. Only the verified snapshot is moved into ``blobs/`` (``Layout.publish_blob``).
- The running hash, keyed by (upload id, offset), only saves re-reading: the lock proves no one
  else appended since it was kept, the offset that nothing was lost, and a session id is never
  reused (its lock-holding requests refuse a session without ``startedat``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pyreg.registry import directbody
from pyreg.registry import layout as paths
from pyreg.registry.directbody import DirectBody
from pyreg.registry.layout import Layout, hash_path
from pyreg.storage.digest import DEFAULT_ALGORITHM, Digest, Hasher, new_hasher
from pyreg.storage.driver import FileWriter, Lock, Snapshot
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.registrystore import INGEST

log = logging.getLogger("pyreg.uploads")

_UPLOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_HASHER_CACHE_SIZE = 1024


def valid_upload_id(upload_id: str) -> bool:
    return bool(_UPLOAD_ID.match(upload_id))


class UploadUnknownError(Exception):
    """No session with this id in this repository."""


class UploadBusyError(Exception):
    """Another request (any process, any replica) is working on this session right now."""


class RangeMismatchError(Exception):
    """A chunk does not start where the stored data ends (a gap or an overlap)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"chunk must start at offset {size}")
        self.size = size


class UploadDigestMismatchError(Exception):
    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"uploaded content has digest {actual}, not {expected}")
        self.expected = expected
        self.actual = actual


class UploadSizeMismatchError(Exception):
    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"uploaded content is {actual} bytes, not {expected}")
        self.expected = expected
        self.actual = actual


# Bytes gathered before a hash-and-write step leaves the event loop (see _write_body).
PIPELINE_BATCH = 2 << 20


@dataclass(slots=True)
class _HashState:
    offset: int
    hasher: Hasher


def _hash_all(hasher: Hasher, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)


Body = AsyncIterator[bytes] | DirectBody


async def _receive(writer: FileWriter, body: Body, hasher: Hasher | None, store: bool = True) -> int:
    """Append a request body to ``writer`` (unless not ``store``), feeding ``hasher`` (if any) the
    same bytes; returns the bytes received.

    A DirectBody the server hands over is received by a thread (registry/directbody.py) when the
    writer can take blocking writes (the filesystem's) or nothing is stored; else the stream is
    read on the event loop.
    """
    if isinstance(body, DirectBody):
        direct = getattr(writer, "direct", None)
        sock = body.open() if direct is not None or not store else None
        if sock is None:
            return await _write_body(writer if store else None, body.stream, hasher)
        try:
            write = await direct() if store and direct is not None else None
            work = asyncio.ensure_future(asyncio.to_thread(directbody.pump, sock, write, hasher))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                sock.cancel()  # the thread stops at its next wait; the descriptor outlives it
                with contextlib.suppress(BaseException):
                    await work
                raise
        finally:
            sock.finish()
    return await _write_body(writer if store else None, body, hasher)


async def _write_body(writer: FileWriter | None, body: AsyncIterator[bytes], hasher: Hasher | None) -> int:
    """Append a request body to ``writer`` (None: keep nothing), feeding ``hasher`` (if any) the
    same bytes; returns the bytes received.

    A pipeline, so the event loop never hashes: arriving chunks are gathered into batches of
    ``PIPELINE_BATCH``; while one batch is hashed (hashlib releases the GIL on large buffers) and
    written in worker threads, the loop receives the next. The chunks are handed on as they
    came, never joined into one copy (the filesystem writer ``writev``s them). One batch is in
    flight at a time, so order is kept and memory stays at two batches per upload. A body cut
    short still stores (and hashes) every byte that arrived, as the client may resume after it.
    """
    batch: list[bytes] = []
    batched = 0
    total = 0
    inflight: asyncio.Future[None] | None = None

    async def write(chunks: list[bytes]) -> None:
        if writer is not None:
            for chunk in chunks:
                await writer.write(chunk)

    async def store(chunks: list[bytes]) -> None:
        if hasher is None:
            await write(chunks)
        else:
            await asyncio.gather(asyncio.to_thread(_hash_all, hasher, chunks), write(chunks))

    try:
        async for chunk in body:
            if not chunk:
                continue
            batch.append(chunk)
            batched += len(chunk)
            total += len(chunk)
            if batched >= PIPELINE_BATCH:
                chunks, batch, batched = batch, [], 0
                if inflight is not None:
                    await inflight
                inflight = asyncio.ensure_future(store(chunks))
    finally:
        if inflight is not None:
            await inflight
        if batch:
            await store(batch)
    return total


def format_startedat(now: datetime | None = None) -> bytes:
    """Go's time.RFC3339 in UTC, as Distribution writes it."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def parse_startedat(raw: bytes) -> datetime | None:
    text = raw.decode("ascii", "replace").strip()
    text = re.sub(r"(\.\d+)", lambda m: m.group(1)[:7], text)  # Go may write nanoseconds
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Uploads:
    """Start, append to, inspect, finish and cancel upload sessions of any repository."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.driver = layout.driver
        self._hashers: OrderedDict[tuple[str, str], _HashState] = OrderedDict()

    # -- the in-memory hasher cache (an optimisation only) ---------------------------------------

    def _take_hasher(self, upload_id: str, algorithm: str, offset: int) -> Hasher | None:
        state = self._hashers.pop((upload_id, algorithm), None)
        if state is None or state.offset != offset:
            return None
        return state.hasher

    def _keep_hasher(self, upload_id: str, algorithm: str, offset: int, hasher: Hasher) -> None:
        self._hashers[(upload_id, algorithm)] = _HashState(offset, hasher)
        while len(self._hashers) > _HASHER_CACHE_SIZE:
            self._hashers.popitem(last=False)

    def _forget(self, upload_id: str) -> None:
        for key in [k for k in self._hashers if k[0] == upload_id]:
            self._hashers.pop(key, None)

    # -- sessions --------------------------------------------------------------------------------

    async def start(self, name: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
        upload_id = str(uuid.uuid4())
        await self.driver.put_content(paths.upload_startedat_path(name, upload_id), format_startedat())
        await self.driver.put_content(paths.upload_data_path(name, upload_id), b"")
        self._keep_hasher(upload_id, algorithm, 0, new_hasher(algorithm))
        return upload_id

    @contextlib.asynccontextmanager
    async def _locked(self, name: str, upload_id: str) -> AsyncIterator[Lock]:
        """Hold the session's storage lock, or raise UploadBusyError / UploadUnknownError."""
        if not valid_upload_id(upload_id):
            raise UploadUnknownError(upload_id)
        lock = await self.driver.try_lock(paths.upload_lock_path(name, upload_id))
        if lock is None:
            raise UploadBusyError(upload_id)
        try:
            yield lock
        finally:
            await lock.release()

    async def _open(self, name: str, upload_id: str) -> FileWriter:
        """The session's data opened for appending (the lock held); raises UploadUnknownError.

        The writer, not a stat, knows how much a session holds: between chunks the data stays
        uncommitted (on S3 an open multipart upload plus its journal, which no stat sees), as
        Distribution keeps it, so a chunk never re-copies what earlier chunks stored.
        """
        try:
            info = await self.driver.stat(paths.upload_startedat_path(name, upload_id))
        except PathNotFoundError:
            raise UploadUnknownError(upload_id) from None
        if info.is_dir:
            raise UploadUnknownError(upload_id)
        return await self.driver.writer(paths.upload_data_path(name, upload_id), append=True)

    async def size(self, name: str, upload_id: str) -> int:
        """Bytes received so far; raises UploadUnknownError or UploadBusyError.

        Opening and closing a writer that wrote nothing changes nothing in storage.
        """
        async with self._locked(name, upload_id):
            writer = await self._open(name, upload_id)
            try:
                return writer.size
            finally:
                await writer.close()

    def _running_hasher(self, upload_id: str, size: int) -> tuple[str, Hasher | None]:
        """(algorithm, hasher) of the cached state at ``size``, which the caller now owns."""
        algorithm = DEFAULT_ALGORITHM
        hasher = None
        for (uid, alg), state in list(self._hashers.items()):
            if uid == upload_id and state.offset == size:
                algorithm, hasher = alg, state.hasher
                break
        self._forget(upload_id)
        if hasher is None and size == 0:  # a session another process started: hash from the start
            hasher = new_hasher(algorithm)
        return algorithm, hasher

    async def append(self, name: str, upload_id: str, body: Body, start: int | None = None) -> int:
        """Append a request body to the session; ``start`` (from Content-Range) must be its end.

        Returns the new size. The data is closed, not committed: it stays appendable by any
        process. A body cut short keeps what arrived, so the client can ask for the status and
        resume.
        """
        async with self._locked(name, upload_id):
            writer = await self._open(name, upload_id)
            ok = False
            try:
                size = writer.size
                if start is not None and start != size:
                    raise RangeMismatchError(size)
                algorithm, hasher = self._running_hasher(upload_id, size)
                await _receive(writer, body, hasher)
                ok = True
            finally:
                await writer.close()
            new_size = writer.size
            if ok and hasher is not None:
                self._keep_hasher(upload_id, algorithm, new_size, hasher)
            return new_size

    async def finish(self, name: str, upload_id: str, digest: Digest,
                     expected_size: int | None = None, body: Body | None = None,
                     start: int | None = None) -> int:
        """Append a last ``body`` (if any), commit and snapshot the data, verify the snapshot
        against ``digest`` (and size), and only then publish it in the blob store and link it.

        On a mismatch the session is dropped and nothing is stored. A whole blob in one body
        whose digest is stored and trusted (Layout.trusts) is received and hashed but not
        written (``_finish_stored``).
        """
        async with self._locked(name, upload_id) as lock:
            writer = await self._open(name, upload_id)
            try:
                size = writer.size
                if start is not None and start != size:
                    raise RangeMismatchError(size)
                hasher = self._take_hasher(upload_id, digest.algorithm, size)
                if hasher is None and size == 0:
                    hasher = new_hasher(digest.algorithm)
                self._forget(upload_id)
                if body is not None and size == 0 and hasher is not None:
                    version = await self.layout.served_version(digest)  # recorded at its publish too
                    if await self.layout.trusts(digest, version):
                        return await self._finish_stored(name, upload_id, digest, expected_size, body,
                                                         writer, hasher)
                if body is not None:
                    await _receive(writer, body, hasher)
                counted = writer.size  # the bytes the running hash saw, if it covers them all
                await writer.commit()
            finally:
                await writer.close()
            await lock.check()  # still ours: nobody else wrote while we did (else: LockLostError)
            staged = paths.upload_commit_path(name, upload_id, uuid.uuid4().hex)
            snap = await self.driver.snapshot(paths.upload_data_path(name, upload_id), staged,
                                              digest.algorithm)
            actual = await self._snapshot_digest(snap, staged, digest.algorithm,
                                                 hasher if counted == snap.size else None)
            if actual != digest:
                await self._drop(name, upload_id)
                raise UploadDigestMismatchError(digest, actual)
            if expected_size is not None and expected_size != snap.size:
                await self._drop(name, upload_id)
                raise UploadSizeMismatchError(expected_size, snap.size)
            await self.layout.publish_blob(staged, digest, snap.size)
            await self.layout.link_blob(name, digest)
            await self._drop(name, upload_id)
            return snap.size

    async def _finish_stored(self, name: str, upload_id: str, digest: Digest, expected_size: int | None,
                             body: Body, writer: FileWriter, hasher: Hasher) -> int:
        """A whole blob pushed again whose digest is stored and trusted: its body is received and
        hashed, never written; it must still hash to ``digest``."""
        received = await _receive(writer, body, hasher, store=False)
        actual = Digest(digest.algorithm, hasher.hexdigest())
        if actual != digest:
            await self._drop(name, upload_id)
            raise UploadDigestMismatchError(digest, actual)
        if expected_size is not None and expected_size != received:
            await self._drop(name, upload_id)
            raise UploadSizeMismatchError(expected_size, received)
        if not await self.layout.blob_is_valid(digest, received):  # trusted unless it changed since
            await self._drop(name, upload_id)  # removed or damaged meanwhile, and the bytes were not
            log.info("blob %s changed while an upload of it was received: upload dropped", digest)
            raise UploadUnknownError(upload_id)  # kept: the client starts again
        await self.layout.link_blob(name, digest)
        await self._drop(name, upload_id)
        return received

    async def _snapshot_digest(self, snap: Snapshot, staged: str, algorithm: str,
                               hasher: Hasher | None) -> Digest:
        """The digest of exactly the bytes ``staged`` holds (frozen, private)."""
        if snap.hexdigest is not None:  # computed by the driver over the frozen copy
            return Digest(algorithm, snap.hexdigest)
        if hasher is not None:  # counted exactly these bytes, under the lock
            return Digest(algorithm, hasher.hexdigest())
        actual, read = await hash_path(self.driver, staged, algorithm)  # another process had chunks
        if read != snap.size:
            raise UploadSizeMismatchError(snap.size, read)
        return actual

    async def _drop(self, name: str, upload_id: str) -> bool:
        self._forget(upload_id)
        try:
            await self.driver.delete(paths.upload_path(name, upload_id))
        except PathNotFoundError:
            return False
        return True

    async def cancel(self, name: str, upload_id: str) -> bool:
        """Delete a session; False when it is unknown. Raises UploadBusyError while in use."""
        self._forget(upload_id)
        if not valid_upload_id(upload_id):
            return False
        async with self._locked(name, upload_id):
            return await self._drop(name, upload_id)

    # -- purging stale sessions ------------------------------------------------------------------

    async def _upload_dirs(self) -> AsyncIterator[tuple[str, str]]:
        """(repository path, upload dir) for every session in the store."""

        async def visit(path: str) -> AsyncIterator[tuple[str, str]]:
            try:
                children = await self.driver.list(path)
            except PathNotFoundError:
                return
            for child in children:
                base = child.rsplit("/", 1)[-1]
                if base == "_uploads":
                    try:
                        sessions = await self.driver.list(child)
                    except PathNotFoundError:
                        continue
                    for session in sessions:
                        yield path, session
                elif not base.startswith("_"):
                    async for found in visit(child):
                        yield found

        async for found in visit(paths.REPOSITORIES):
            yield found

    async def _purge_locks(self) -> None:
        """Remove lock names whose holder died before releasing them (nobody holds them)."""
        try:
            found = [info.path async for info in self.driver.walk(f"{paths.LOCKS}/uploads")
                     if not info.is_dir]
        except PathNotFoundError:
            return
        for path in found:
            with contextlib.suppress(PathNotFoundError):
                lock = await self.driver.try_lock(path)
                if lock is not None:
                    await lock.release()

    async def _purge_ingest(self, age: float, dryrun: bool, now: datetime) -> list[str]:
        """Blobs written aside by the registry store (storage/registrystore.py: a graph copy or a
        mirror fill) whose writer died before commit or abort: nothing else would remove them."""
        try:
            staged = [info async for info in self.driver.walk(INGEST) if not info.is_dir]
        except PathNotFoundError:
            return []
        stale = [info.path for info in staged if (now - info.modtime).total_seconds() > age]
        if not dryrun:
            for path in stale:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(path)
        return stale

    async def purge(self, age: float, dryrun: bool = False, now: datetime | None = None) -> list[str]:
        """Delete sessions started more than ``age`` seconds ago; returns their paths."""
        now = now or datetime.now(UTC)
        purged: list[str] = []
        async for _repo, session in self._upload_dirs():
            started: datetime | None = None
            with contextlib.suppress(PathNotFoundError):
                started = parse_startedat(await self.driver.get_content(f"{session}/startedat"))
            if started is None:
                try:
                    started = (await self.driver.stat(session)).modtime
                except PathNotFoundError:
                    continue
            if (now - started).total_seconds() <= age:
                continue
            if not dryrun:
                upload_id = session.rsplit("/", 1)[-1]
                name = _repo[len(paths.REPOSITORIES) + 1:]
                try:
                    async with self._locked(name, upload_id):
                        await self._drop(name, upload_id)
                except (UploadBusyError, UploadUnknownError):
                    continue  # a request is using it after all (or the id is not ours): keep it
            purged.append(session)
        purged += await self._purge_ingest(age, dryrun, now)
        if not dryrun:
            await self._purge_locks()
        if purged:
            log.info("purged %d stale upload(s)%s", len(purged), " (dry run)" if dryrun else "")
        return purged
