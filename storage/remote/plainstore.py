"""``PlainStore``: one repository of a plain-HTTP registry as a read-only ContentStore over
storage/remote/plain.py, for a pull that needs nothing but anonymous ``200`` answers.

It offers what a pull asks of ``RemoteStore`` (``resolve``, ``fetch_manifest``, ``reader``,
``blob_bytes``) and raises :class:`~pyreg.storage.remote.plain.Unsupported` for everything else:
any other status (a 401 for a token, a redirect to storage, a 404, a 5xx), a body it does not
read (chunked, compressed), a resumed blob, a body over its bound, a dropped connection. The
caller then pulls the full way, which picks up the verified blobs already stored and handles
all of that. Manifests are checked as the full path checks them (storage/remote/received.py);
blob bytes go to a writer that verifies size and digest before anything becomes visible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyreg.storage import mediatypes
from pyreg.storage.content import ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.manifest import Descriptor
from pyreg.storage.remote.plain import PlainHTTP, Response, Unsupported
from pyreg.storage.remote.received import received_manifest

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import IO, Any

MANIFEST_ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_MANIFEST,
                             mediatypes.DOCKER_MANIFEST])
MANIFEST_MAX = 4 << 20  # as storage/remote/client.py's


class _Body:
    """A blob's ``Content-Length`` body as a file the graph copy reads with ``read1``."""

    def __init__(self, response: Response) -> None:
        self.response = response

    def read1(self, size: int = -1) -> bytes:
        return self.response.read1(size)

    read = read1

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> _Body:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PlainStore:
    """One repository of ``http``'s registry, read anonymously."""

    def __init__(self, http: PlainHTTP, repository: str) -> None:
        self.http = http
        self.repository = repository
        self._manifests: dict[Digest, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PlainStore({self.http.registry}/{self.repository})"

    def _path(self, kind: str, reference: str) -> str:
        return f"/v2/{self.repository}/{kind}/{reference}"

    # -- manifests ------------------------------------------------------------------------------
    def resolve(self, reference: str, verify: Digest | None = None) -> Descriptor:
        """A tag or digest to the descriptor of what it names (its bytes kept for the walk)."""
        with self.http.get(self._path("manifests", reference), {"Accept": MANIFEST_ACCEPT}) as r:
            if r.header("content-encoding") not in (None, "identity"):
                raise Unsupported("an encoded manifest")
            data = r.read(MANIFEST_MAX)
            blob = received_manifest(data, r.header("content-type"), verify,
                                     r.header("docker-content-digest"),
                                     f"manifest {self.repository}:{reference}")
        with self._lock:
            self._manifests[blob.digest] = blob.data
        return Descriptor(blob.media_type, blob.digest, len(blob.data))

    def fetch_manifest(self, desc: Descriptor) -> bytes | None:
        with self._lock:
            data = self._manifests.get(desc.digest)
        if data is None:
            self.resolve(str(desc.digest), verify=desc.digest)
            with self._lock:
                data = self._manifests[desc.digest]
        if len(data) != desc.size:
            raise ContentSizeError(f"manifest {desc.digest}: {len(data)} bytes, its descriptor "
                                   f"says {desc.size}")
        return data

    def has_manifest(self, desc: Descriptor) -> bool:
        raise Unsupported("read-only")

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        raise Unsupported("read-only")

    # -- blobs ----------------------------------------------------------------------------------
    def _blob(self, digest: Digest, offset: int) -> Response:
        if offset:
            raise Unsupported("a resumed download (Range)")
        return self.http.request("GET", self._path("blobs", str(digest)))

    def blob_bytes(self, digest: Digest, size: int, limit: int) -> bytes:
        """A small blob (an image config) read whole: exactly ``size`` bytes, at most ``limit``,
        verified against its digest."""
        if size > limit:
            raise Unsupported("larger than the limit: the full path says so")
        with self.http.get(self._path("blobs", str(digest))) as r:
            data = r.read(size)
        if len(data) != size:
            raise ContentSizeError(f"blob {digest}: {len(data)} bytes, its descriptor says {size}")
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestMismatchError(digest, actual)
        return data

    def info(self, digest: Digest) -> Info | None:
        raise Unsupported("a blob HEAD")  # a pull never asks its source

    def unverified_reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        """The blob's bytes for a writer that verifies them (every ContentStore writer does)."""
        response = self._blob(digest, offset)
        if response.status != 200 or response.header("content-encoding") not in (None, "identity"):
            response.abandon()
            raise Unsupported(f"blob {digest}: {response.status}")
        return _Body(response)  # type: ignore[return-value]

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        raise Unsupported("only unverified_reader, into a verifying writer")

    @contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[Any]:
        raise Unsupported("read-only")
        yield  # pragma: no cover

    def walk(self) -> Iterator[Info]:
        raise Unsupported("a registry cannot list blobs")

    def delete(self, digest: Digest) -> bool:
        raise Unsupported("read-only")
