"""``RemoteStore``: one repository of a registry as a ContentStore (storage/content.py), so a pull,
a push and a copy are each ``copy_graph`` between two stores.

- ``info`` is a blob HEAD; ``reader(offset)`` a ranged GET, verified against the digest when read
  from the start, resumed with ``Range`` after a dropped connection;
- ``writer(digest, size)`` an upload session committed by ``PUT ?digest=``: one streamed PUT
  (the bytes flow through a bounded queue to a sender thread, so nothing is held whole), or with
  ``chunk_size`` PATCH chunks that resume from the registry's upload status when one is dropped;
- ``walk`` is refused: the distribution API cannot list a repository's blobs;
- ``delete`` a blob DELETE; ``mount`` a cross-repository mount (``?mount=&from=``);
- manifests by digest and tag (``resolve``, ``fetch_manifest``, ``push_manifest``): a registry
  keeps them apart from blobs.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any

import httpx

from pyreg.storage.content import ContentNotFound, ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestMismatchError, DigestVerifier
from pyreg.storage.manifest import Descriptor
from pyreg.storage.remote.client import RegistryClient, error_message
from pyreg.storage.remote.errors import RemoteError, network_reason
from pyreg.storage.remote.transport import backoff

_QUEUE_DEPTH = 8          # chunks of the streamed PUT in flight between writer and sender
_SENDER_WAIT = 0.5        # how often a blocked write looks whether the sender gave up


class _BlobReader(io.RawIOBase):
    """A blob's bytes from ``offset``; resumes with ``Range`` after a dropped connection and, when
    read from byte 0 to the end, raises DigestMismatchError at the end instead of a last chunk
    that would complete wrong content. ``read1`` hands over each network chunk as it is (no copy:
    what a graph copy reads), ``read(n)`` gathers n bytes as a file would."""

    def __init__(self, store: RemoteStore, digest: Digest, offset: int, verify: bool = True) -> None:
        super().__init__()
        self.store = store
        self.digest = digest
        self.pos = offset
        self.verifier = DigestVerifier(digest) if offset == 0 and verify else None
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""
        self._eof = False
        self._open()

    def _open(self) -> None:
        client = self.store.client
        headers = {"Accept-Encoding": "identity"}  # the blob's own bytes, hashed as sent
        if self.pos:
            headers["Range"] = f"bytes={self.pos}-"
        request = client.http.build_request("GET", client.url(f"{self.store.repository}/blobs/{self.digest}"),
                                            headers=headers, extensions={"pyreg_limit": None})
        try:
            response = client.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise RemoteError(f"blob {self.digest}: {network_reason(exc)}", 599) from exc
        skip = 0
        if response.status_code == 404:
            response.close()
            raise ContentNotFound(self.digest)
        if response.status_code == 206:
            value = response.headers.get("content-range", "")
            try:
                start = int(value.split()[1].split("-")[0])
            except (IndexError, ValueError):
                response.close()
                raise RemoteError(f"blob {self.digest}: invalid Content-Range {value[:100]!r}") from None
            if start != self.pos:
                response.close()
                raise RemoteError(f"blob {self.digest}: asked for offset {self.pos}, got {start}")
        elif response.status_code == 416 and self.pos:
            response.close()
            self._eof = True  # asked from the very end: nothing left
            return
        elif response.status_code != 200:
            error = error_message(response, f"blob {self.digest}")
            response.close()
            raise error
        elif self.pos:
            skip = self.pos  # the registry ignored Range: drop what we already have
        self._response = response
        self._chunks = response.iter_raw()
        while skip:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            if len(chunk) > skip:
                self._pending = chunk[skip:]
            skip = max(0, skip - len(chunk))

    def _next(self) -> bytes:
        attempt = 0
        while True:
            try:
                assert self._chunks is not None
                return next(self._chunks, b"")
            except httpx.TransportError as exc:
                attempt += 1
                self._close_response()
                if attempt > self.store.client.retries:
                    raise RemoteError(f"blob {self.digest}: {network_reason(exc)}", 599) from exc
                time.sleep(backoff(attempt))
                self._open()
                if self._eof:
                    return b""
                if self._pending:
                    data, self._pending = self._pending, b""
                    return data

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        """The next piece (at most ``size`` bytes), b"" at the end (after the digest check)."""
        if self._eof:
            return b""
        data, self._pending = self._pending, b""
        if not data:
            data = self._next()
        if not data:
            self._eof = True
            if self.verifier is not None:
                self.verifier.verify()
            return b""
        if 0 <= size < len(data):
            data, self._pending = data[:size], data[size:]
        if self.verifier is not None:
            self.verifier.update(data)
        self.pos += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(self.read1, b""))
        parts = []
        while size > 0 and (part := self.read1(size)):
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read1(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._close_response()
        super().close()


class _Upload:
    """One blob upload session (see the module docstring); ``offset`` is what the registry holds
    of it, and ``recover()`` asks the registry for that after a failure, so a retry of the copy
    goes on from there (a new session when the old one is gone)."""

    def __init__(self, store: RemoteStore, digest: Digest, size: int, location: str | None) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.client = store.client
        self.location = location or self.client.start_upload(store.repository)
        self.chunk_size = store.chunk_size
        self.start = 0              # where this attempt began: what the registry held then
        self.held = 0               # what the registry holds now (chunked)
        self.written = 0            # bytes given to write() in this attempt
        self.buffer = bytearray()
        self.verifier = DigestVerifier(digest)
        self.committed = False
        self._queue: queue.Queue[bytes | None] | None = None
        self._sender: threading.Thread | None = None
        self._outcome: BaseException | httpx.Response | None = None
        self._abandon = threading.Event()

    @property
    def offset(self) -> int:
        """Where the source must be read from for this attempt (storage/content.py's copy_blob)."""
        return self.start

    # -- writing -----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.start + self.written > self.size:
            raise ContentSizeError(f"blob {self.digest}: more than its descriptor's {self.size} bytes")
        self.verifier.update(data)
        if self.chunk_size:
            self.buffer += data
            while len(self.buffer) >= self.chunk_size:
                self._patch(bytes(self.buffer[:self.chunk_size]))
                del self.buffer[:self.chunk_size]
        else:
            self._stream(data)

    def _stream(self, data: bytes) -> None:
        if self._sender is None:
            self._queue = queue.Queue(_QUEUE_DEPTH)
            self._sender = threading.Thread(target=self._send, name="pyreg-upload", daemon=True)
            self._sender.start()
        assert self._queue is not None
        while True:
            if self._outcome is not None:
                self._raise_outcome()
            try:
                self._queue.put(data, timeout=_SENDER_WAIT)
                return
            except queue.Full:
                continue

    def _send(self) -> None:
        assert self._queue is not None
        q = self._queue

        def body() -> Iterator[bytes]:
            while True:
                chunk = q.get()
                if chunk is None or self._abandon.is_set():
                    if self._abandon.is_set():
                        raise RemoteError("upload abandoned")  # cuts the request: nothing commits
                    return
                yield chunk

        url = httpx.URL(self.location).copy_merge_params({"digest": str(self.digest)})
        try:
            self._outcome = self.client.http.put(url, content=body(), headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(self.size)})
        except BaseException as exc:  # handed to the writer's thread
            self._outcome = exc

    def _raise_outcome(self) -> None:
        outcome = self._outcome
        if isinstance(outcome, httpx.TransportError):
            raise RemoteError(f"upload {self.digest}: {network_reason(outcome)}", 599) from outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        if outcome.status_code not in (201, 204):
            raise error_message(outcome, f"upload {self.digest}")
        raise RemoteError(f"upload {self.digest}: the registry answered before the last byte", 599)

    def _patch(self, data: bytes) -> None:
        """Send one chunk; after a dropped connection or a 5xx, ask what the registry holds and
        send the rest of the chunk from there."""
        start = self.held
        attempt = 0
        while True:
            part = data[self.held - start:]
            try:
                response = self.client._send(
                    "PATCH", self.location, f"upload {self.digest}", ok=(202, 204), content=part,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{self.held}-{self.held + len(part) - 1}"})
                self.location = self.client._location(response)
                self.held = start + len(data)
                return
            except RemoteError as exc:
                attempt += 1
                if not exc.retryable or attempt > self.client.retries:
                    raise
                time.sleep(backoff(attempt))
                try:
                    held = self.client.upload_status(self.location)
                except RemoteError as lost:
                    # the session moved on without us (Distribution's state token): the copy
                    # starts again in a new one (recover())
                    raise RemoteError(f"upload {self.digest}: {lost}", 599) from exc
                if not start <= held <= start + len(data):
                    raise RemoteError(f"upload {self.digest}: the registry holds {held} bytes, "
                                      f"not within the chunk at {start}", 599) from exc
                self.held = held
                if held == start + len(data):
                    return

    # -- ending ------------------------------------------------------------------------------
    def commit(self) -> Digest:
        if self.start + self.written != self.size:
            raise ContentSizeError(f"blob {self.digest}: expected {self.size} bytes, "
                                   f"got {self.start + self.written}")
        if self.start == 0:
            self.verifier.verify()  # the whole blob went through this writer: check it here
        # (else the registry checks the digest the PUT names against all it holds)
        if self._sender is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._sender.join()
            outcome, self._sender = self._outcome, None
            if not isinstance(outcome, httpx.Response) or outcome.status_code not in (201, 204):
                self._raise_outcome()
        else:
            if self.buffer:
                self._patch(bytes(self.buffer))
                self.buffer.clear()
            final = str(httpx.URL(self.location).copy_merge_params({"digest": str(self.digest)}))
            self.client._send("PUT", final, f"upload {self.digest}", ok=(201, 204))
        self.committed = True
        return self.digest

    def recover(self) -> int:
        """After a failed attempt: end the sender, learn what the registry holds, and start the
        next attempt from there (``offset``); returns it."""
        self._stop_sender()
        self.buffer.clear()
        self.written = 0
        self.verifier = DigestVerifier(self.digest)
        try:
            held = self.client.upload_status(self.location)
        except RemoteError:
            held = 0
            self.location = self.client.start_upload(self.store.repository)
        if held > self.size:
            held = 0
            self.location = self.client.start_upload(self.store.repository)
        self.start = self.held = held
        if held and not self.chunk_size:
            self.chunk_size = self.store.resume_chunk  # bounded memory for the rest
        return held

    def _stop_sender(self) -> None:
        if self._sender is not None:
            assert self._queue is not None
            self._abandon.set()
            with suppress(queue.Full):
                self._queue.put_nowait(None)
            self._sender.join(timeout=30)
            self._sender = None
            self._abandon = threading.Event()
            self._outcome = None

    def abort(self) -> None:
        if self.committed:
            return
        self._stop_sender()
        with suppress(httpx.HTTPError, RemoteError):
            self.client.http.delete(self.location)  # else the registry purges it in time


class RemoteStore:
    """One repository of a registry, through a ``RegistryClient`` the caller owns (and closes)."""

    def __init__(self, client: RegistryClient, repository: str, *, chunk_size: int | None = None) -> None:
        self.client = client
        self.repository = repository
        self.chunk_size = chunk_size
        self.resume_chunk = 32 << 20
        self._manifests: dict[Digest, bytes] = {}
        self._mount_sessions: dict[Digest, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteStore({self.client.registry}/{self.repository})"

    # -- the ContentStore protocol -----------------------------------------------------------
    def info(self, digest: Digest) -> Info | None:
        size = self.client.blob_exists(self.repository, digest)
        return None if size is None else Info(digest, size)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        return _BlobReader(self, digest, offset)  # type: ignore[return-value]

    def unverified_reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        """``reader`` without its own digest check, for a copy into a writer that checks anyway
        (every ContentStore writer does): one SHA-256 pass per blob, not two."""
        return _BlobReader(self, digest, offset, verify=False)  # type: ignore[return-value]

    @contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[_Upload]:
        with self._lock:
            location = self._mount_sessions.pop(digest, None)
        upload = _Upload(self, digest, size, location)
        try:
            yield upload
        finally:
            upload.abort()  # after a commit: nothing to do

    def walk(self) -> Iterator[Info]:
        raise RemoteError(f"{self.client.registry}/{self.repository}: a registry cannot list the "
                          "blobs of a repository (the distribution API has no such call)")

    def delete(self, digest: Digest) -> bool:
        response = self.client._send("DELETE", f"{self.repository}/blobs/{digest}", f"delete blob {digest}",
                                     ok=(202, 200, 404))
        return response.status_code != 404

    # -- mounts ----------------------------------------------------------------------------------
    def mount(self, desc: Descriptor, source: str) -> bool:
        """``POST ?mount=&from=``; when the registry opens an upload instead, the next writer of
        that blob uses it."""
        if source == self.repository:
            return False
        try:
            location = self.client.mount_blob(self.repository, desc.digest, source)
        except RemoteError as exc:
            if exc.status in (401, 403, 404):
                return False  # no pull right on the source, say: upload it instead
            raise
        if location is None:
            return True
        with self._lock:
            old = self._mount_sessions.pop(desc.digest, None)
            self._mount_sessions[desc.digest] = location
        if old is not None:
            self.client.http.delete(old)
        return False

    # -- manifests and tags ------------------------------------------------------------------
    def resolve(self, reference: str, verify: Digest | None = None) -> Descriptor:
        """A tag or digest to the descriptor of what it names (its bytes are kept for the walk
        that follows)."""
        blob = self.client.get_manifest(self.repository, reference, verify=verify)
        with self._lock:
            self._manifests[blob.digest] = blob.data
        return Descriptor(blob.media_type, blob.digest, len(blob.data))

    def fetch_manifest(self, desc: Descriptor) -> bytes | None:
        with self._lock:
            data = self._manifests.get(desc.digest)
        if data is not None:
            return data
        try:
            blob = self.client.get_manifest(self.repository, str(desc.digest), verify=desc.digest)
        except RemoteError as exc:
            if exc.status == 404:
                return None
            raise
        if len(blob.data) != desc.size:
            raise ContentSizeError(f"manifest {desc.digest}: {len(blob.data)} bytes, its descriptor "
                                   f"says {desc.size}")
        with self._lock:
            self._manifests[desc.digest] = blob.data
        return blob.data

    def has_manifest(self, desc: Descriptor) -> bool:
        return self.client.head_manifest(self.repository, str(desc.digest)) is not None

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        digest = self.client.put_manifest(self.repository, tag or str(desc.digest), data, desc.media_type)
        if digest != desc.digest:
            raise DigestMismatchError(desc.digest, digest)

    def tags(self, page: int | None = None) -> list[str]:
        return self.client.tags(self.repository, page)

