"""The local store's content store: blobs by digest under ``blobs/<alg>/<hex>`` (containerd's
``content.Store``), implementing storage/content.py's ContentStore.

Blobs are written into ``ingest/`` (keyed by digest, so an interrupted download resumes) and
renamed into ``blobs/`` only after their size and digest are verified; one writer per digest
across processes (an flock under ``locks/``): a second writer waits, then finds the blob stored.
What names point at blobs (storage/imageindex.py) and what is extracted from them
(storage/layerstore.py) are other modules' business.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator

from pyreg.storage.content import BlobFiles, ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier, new_hasher
from pyreg.storage.manifest import Manifest, ManifestError, parse_manifest
from pyreg.storage.private import make_private_dir
from pyreg.storage.storefiles import StoreError, create, flock, pieces

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    import queue
    from pathlib import Path  # (annotations only: not imported on a pull's start-up)
    from typing import IO, Any

    from pyreg.storage.storefiles import StrPath

_CHUNK = 1 << 20


class SizeMismatchError(StoreError, ContentSizeError):
    pass


class _PipelinedVerifier:
    """A DigestVerifier whose hashing runs in a helper thread once data is streaming.

    Hashing large chunks releases the GIL, so the download (socket read + file write) and the
    hash proceed side by side: on a 512 MiB layer this is the difference between the hash and the
    network each waiting for the other. Blobs of a few MiB are hashed inline: their whole hash
    (~1 ms per 2 MiB) costs less than a thread's start, hand-offs and join on a busy machine.
    """

    _THRESHOLD = 4 << 20

    def __init__(self, expected: Digest) -> None:
        self._verifier = DigestVerifier(expected)
        self.size = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self._queue is None:
            if self.size < self._THRESHOLD:
                self._verifier.update(data)
                return
            import queue  # (only for a blob this large: most pulls never need it)

            self._queue = queue.Queue(maxsize=128)
            self._thread = threading.Thread(target=self._run, name="pyreg-hash", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            self._verifier.update(data)

    def finish(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
            self._thread = None

    def verify(self) -> None:
        self.finish()
        self._verifier.verify()


class BlobWriter:
    """Writes one blob through ``ingest/``; ``commit()`` verifies and renames it into ``blobs/``.

    Obtained from :meth:`BlobStore.blob_writer`, which holds the blob's lock. ``exists`` is
    True when the blob is already stored (nothing to write). ``offset`` is how many bytes of a
    previous, interrupted download are already in the partial file (and already hashed): resume
    the transfer from there, or call ``restart()`` to start over.
    """

    def __init__(self, store: BlobStore, digest: Digest, size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.final = store._blob_name(digest)
        self.exists = os.path.exists(self.final)
        self.partial = os.path.join(store.rootdir, "ingest", f"{digest.algorithm}-{digest.hex}")
        self._verifier = _PipelinedVerifier(digest)
        self._file: IO[bytes] | None = None
        self.committed = False
        if not self.exists:
            if not os.path.isdir(os.path.dirname(self.partial)):
                make_private_dir(os.path.dirname(self.partial))
            fd = create(self.partial, 0o600, os.O_RDWR | os.O_APPEND)
            self._file = os.fdopen(fd, "ab+")
            self._file.seek(0)
            while chunk := self._file.read(_CHUNK):
                self._verifier.update(chunk)
            if size is not None and self._verifier.size > size:
                self.restart()

    @property
    def offset(self) -> int:
        return self._verifier.size

    def restart(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._verifier.finish()
        self._verifier = _PipelinedVerifier(self.digest)

    def write(self, data: bytes) -> None:
        if self.exists:
            return  # stored meanwhile by another writer: the bytes are known to be the same
        assert self._file is not None, "writer closed"
        for piece in pieces(data):  # small page-cache folios: see storefiles.WRITE_PIECE
            self._file.write(piece)
        self._verifier.update(data)
        if self.size is not None and self._verifier.size > self.size:
            self.discard()
            raise SizeMismatchError(f"blob {self.digest} is larger than its descriptor's {self.size} bytes")

    def commit(self) -> str:
        """Verify size and digest; on a mismatch delete what was written and raise. Returns
        the blob's file name."""
        if self.exists:
            return self.final
        assert self._file is not None
        if self.size is not None and self._verifier.size != self.size:
            got = self._verifier.size
            self.discard()
            raise SizeMismatchError(f"blob {self.digest}: expected {self.size} bytes, got {got}")
        try:
            self._verifier.verify()
        except DigestMismatchError:
            self.discard()
            raise
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if not os.path.isdir(os.path.dirname(self.final)):
            make_private_dir(os.path.dirname(self.final))
        os.chmod(self.partial, 0o444)
        os.rename(self.partial, self.final)
        self.committed = True
        return self.final

    def abort(self) -> None:
        """Drop what was written (the ContentStore protocol's abort)."""
        self.discard()

    def discard(self) -> None:
        self._verifier.finish()
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)

    def close(self) -> None:
        """Keep a partial download for a later resume (it is invisible until committed)."""
        self._verifier.finish()
        if self._file is not None:
            self._file.close()
            self._file = None


class BlobStore(BlobFiles):
    """Blobs by digest in the local store's ``blobs/``; ``info``, ``reader`` and ``delete`` come
    from BlobFiles. Safe for concurrent processes and threads."""

    def __init__(self, root: StrPath) -> None:
        self.rootdir = os.fspath(root)

    @property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self.rootdir)

    def _blob_name(self, digest: Digest | str) -> str:
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        return os.path.join(self.rootdir, "blobs", d.algorithm, d.hex)

    def blob_path(self, digest: Digest | str) -> Path:
        from pathlib import Path

        return Path(self._blob_name(digest))

    def blob_file(self, digest: Digest) -> Path:
        return self.blob_path(digest)

    def has_blob(self, digest: Digest | str) -> bool:
        return os.path.exists(self._blob_name(digest))

    def read_blob(self, digest: Digest | str) -> bytes:
        try:
            with open(self._blob_name(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the local store") from None

    def read_json(self, digest: Digest | str) -> dict[str, Any]:
        data = json.loads(self.read_blob(digest))
        if not isinstance(data, dict):
            raise StoreError(f"blob {digest} is not a JSON object")
        return data

    def read_manifest(self, digest: Digest | str, media_type: str) -> Manifest:
        """A stored manifest or index, parsed and validated (storage/manifest.py)."""
        try:
            return parse_manifest(self.read_blob(digest), media_type)
        except ManifestError as exc:
            raise StoreError(f"stored manifest {digest} is invalid: {exc}") from None

    @contextlib.contextmanager
    def blob_writer(self, digest: Digest | str, size: int | None = None) -> Iterator[BlobWriter]:
        """One writer per digest across processes; a second one waits, then sees ``exists``."""
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        with flock(os.path.join(self.rootdir, "locks", f"blob-{d.algorithm}-{d.hex}")):
            writer = BlobWriter(self, d, size)
            try:
                yield writer
            finally:
                writer.close()

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[BlobWriter]:
        """``blob_writer`` starting from byte 0 (a copy does not resume another's partial file)."""
        with self.blob_writer(digest, size) as w:
            if not w.exists and w.offset:
                w.restart()
            yield w

    def walk(self) -> Iterator[Info]:
        for path in sorted((self.root / "blobs" / "sha256").iterdir()):
            with contextlib.suppress(DigestError, FileNotFoundError):
                yield Info(Digest.parse(f"sha256:{path.name}"), path.stat().st_size)

    def put_blob(self, data: bytes, digest: Digest | str | None = None) -> Digest:
        """Store bytes held in memory (manifests, configs); verified against ``digest`` if given."""
        d = Digest.parse(digest) if isinstance(digest, str) else (digest or Digest.of(data))
        with self.blob_writer(d, len(data)) as w:
            if not w.exists:
                w.restart()
                w.write(data)
                w.commit()
        return d

    def put_blob_file(self, path: StrPath, digest: Digest | str | None = None) -> tuple[Digest, int]:
        """Copy a file into the store, hashing it; verified against ``digest`` if given."""
        if digest is None:
            h = new_hasher()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            digest = Digest("sha256", h.hexdigest())
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        size = os.stat(path).st_size
        with self.blob_writer(d, size) as w:
            if not w.exists:
                w.restart()
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        w.write(chunk)
                w.commit()
        return d, size

    def ingest_stream(self, reader: IO[bytes]) -> tuple[Digest, int]:
        """Store a stream whose digest is not known in advance (docker-save layers)."""
        hasher = new_hasher()
        size = 0
        tmp = os.path.join(self.rootdir, "ingest", f"stream-{os.urandom(16).hex()}")
        try:
            with os.fdopen(create(tmp, 0o600, os.O_WRONLY | os.O_EXCL), "wb") as f:
                while chunk := reader.read(_CHUNK):
                    hasher.update(chunk)
                    for piece in pieces(chunk):
                        f.write(piece)
                    size += len(chunk)
            digest = Digest("sha256", hasher.hexdigest())
            os.chmod(tmp, 0o444)
            os.rename(tmp, self._blob_name(digest))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return digest, size

    def sweep(self, keep: set[str]) -> tuple[int, int]:
        """Delete every blob whose hex is not in ``keep``; (blobs removed, bytes freed)."""
        count = freed = 0
        for path in (self.root / "blobs" / "sha256").iterdir():
            if path.name not in keep:
                freed += path.stat().st_size
                path.unlink(missing_ok=True)
                count += 1
        return count, freed
