"""``PlainPushStore``: one repository of a plain-HTTP registry as the target of a push, over
storage/remote/plain.py (no httpx, no ssl), for a push that needs nothing but anonymous answers.

What ``copy_graph`` asks of a push target, in the distribution spec's plainest form: ``HEAD`` a
blob (200: skip it, 404: send it), a cross-repository mount (``POST ?mount=&from=``: 201
mounted, 202 an upload session the blob's writer then uses), a monolithic upload (``POST`` for a
session, then one ``PUT ?digest=`` with the whole blob, streamed on its own connection), and the
manifest ``PUT`` last. Every other answer — a 401 asking for credentials, a redirect, a 5xx, a
Location on another host, a dropped connection — raises
:class:`~pyreg.storage.remote.plain.Unsupported`, and the caller pushes the full way
(storage/remote/store.py), whose ``HEAD`` skips the blobs already sent. No credentials are ever
sent from here. The writer hashes what it sends and the registry checks the digest the ``PUT``
names; a manifest's digest is checked against the registry's ``Docker-Content-Digest``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pyreg.storage import mediatypes
from pyreg.storage.content import ContentSizeError, Info
from pyreg.storage.digest import Digest, DigestMismatchError, DigestVerifier
from pyreg.storage.manifest import Descriptor
from pyreg.storage.numbers import parse_uint
from pyreg.storage.remote.plain import PlainHTTP, Response, Streamed, Unsupported

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import IO

MANIFEST_ACCEPT = ", ".join([mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_MANIFEST,
                             mediatypes.DOCKER_MANIFEST])
SMALL_BODY = 64 << 10  # an error or empty body of an upload answer: more is no plain answer


def _done(response: Response, *ok: int) -> Response:
    """``response`` when its status is one of ``ok`` (its small body read, the connection kept);
    Unsupported otherwise."""
    with response:
        if response.status not in ok:
            raise Unsupported(f"status {response.status}")
        response.read(SMALL_BODY)
    return response


class _Upload:
    """One blob's monolithic upload: the session opened first (or the one a mount left), then a
    ``PUT ?digest=`` whose body is what ``write`` is given."""

    def __init__(self, store: PlainPushStore, digest: Digest, size: int, location: str | None) -> None:
        self.store, self.digest, self.size = store, digest, size
        self.location = location or store.start_upload()
        self.verifier = DigestVerifier(digest)
        self.request: Streamed | None = None
        self.written = 0
        self.committed = False

    def _open(self) -> Streamed:
        if self.request is None:
            sep = "&" if "?" in self.location else "?"
            self.request = self.store.http.stream(
                "PUT", f"{self.location}{sep}digest={self.digest}",
                {"Content-Type": "application/octet-stream"}, self.size)
        return self.request

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.written > self.size:
            raise ContentSizeError(f"blob {self.digest}: more than its descriptor's {self.size} bytes")
        self.verifier.update(data)
        self._open().send(data)

    def commit(self) -> Digest:
        if self.written != self.size:
            raise ContentSizeError(f"blob {self.digest}: expected {self.size} bytes, got {self.written}")
        self.verifier.verify()  # (the registry checks the digest the PUT names as well)
        _done(self._open().answer(), 201)
        self.committed = True
        return self.digest

    def abort(self) -> None:
        if self.request is not None and not self.committed:
            self.request.abandon()  # a cut request commits nothing; the session expires


class PlainPushStore:
    """One repository of ``http``'s registry, written anonymously."""

    def __init__(self, http: PlainHTTP, repository: str) -> None:
        self.http = http
        self.repository = repository
        self._mount_sessions: dict[Digest, str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PlainPushStore({self.http.registry}/{self.repository})"

    def _path(self, kind: str, reference: str = "") -> str:
        return f"/v2/{self.repository}/{kind}/{reference}"

    def _location(self, response: Response) -> str:
        """The upload session's path: relative, or absolute on this very registry over http."""
        value = response.header("location")
        if not value:
            raise Unsupported("an upload without a Location")
        prefix = f"http://{self.http.registry}/"
        if value.startswith(prefix):
            value = value[len(prefix) - 1:]
        if not value.startswith("/") or value.startswith("//") or not value.isascii() \
                or any(c in value for c in " \r\n#"):
            raise Unsupported(f"a Location elsewhere: {value[:100]!r}")
        return value

    def start_upload(self) -> str:
        return self._location(_done(self.http.request("POST", self._path("blobs/uploads"), body=b""), 202))

    # -- the ContentStore protocol (a push target's part) ----------------------------------------
    def info(self, digest: Digest) -> Info | None:
        with self.http.request("HEAD", self._path("blobs", str(digest))) as r:
            if r.status == 404:
                return None
            if r.status != 200:
                raise Unsupported(f"HEAD blob: {r.status}")
            length = r.header("content-length")
        size = parse_uint(length or "")
        return Info(digest, -1 if size is None else size)

    @contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[_Upload]:
        with self._lock:
            location = self._mount_sessions.pop(digest, None)
        upload = _Upload(self, digest, size, location)
        try:
            yield upload
        finally:
            upload.abort()

    def mount(self, desc: Descriptor, source: str) -> bool:
        """``POST ?mount=&from=``: True when mounted; a session the registry opens instead is
        the blob's writer's."""
        if source == self.repository:
            return False
        # (a repository name is [a-z0-9._/-]: only its slashes are encoded, as the full path does)
        path = f"{self._path('blobs/uploads')}?mount={desc.digest}&from={source.replace('/', '%2F')}"
        response = self.http.request("POST", path, body=b"")
        if response.status in (403, 404):
            _done(response, response.status)
            return False
        if _done(response, 201, 202).status == 201:
            return True
        location = self._location(response)
        with self._lock:
            old = self._mount_sessions.get(desc.digest)
            self._mount_sessions[desc.digest] = location
        if old is not None:
            _done(self.http.request("DELETE", old), 204, 202, 200, 404)
        return False

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        raise Unsupported("write-only")

    def walk(self) -> Iterator[Info]:
        raise Unsupported("a registry cannot list blobs")

    def delete(self, digest: Digest) -> bool:
        raise Unsupported("write-only")

    # -- manifests ------------------------------------------------------------------------------
    def fetch_manifest(self, desc: Descriptor) -> bytes | None:
        raise Unsupported("write-only")

    def has_manifest(self, desc: Descriptor) -> bool:
        with self.http.request("HEAD", self._path("manifests", str(desc.digest)),
                               {"Accept": MANIFEST_ACCEPT}) as r:
            if r.status not in (200, 404):
                raise Unsupported(f"HEAD manifest: {r.status}")
            return r.status == 200

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        digest = Digest.of(data, desc.digest.algorithm)
        if digest != desc.digest:
            raise DigestMismatchError(desc.digest, digest)
        response = _done(self.http.request("PUT", self._path("manifests", tag or str(desc.digest)),
                                           {"Content-Type": desc.media_type}, body=data), 201, 200, 202)
        header = response.header("docker-content-digest")
        if header and header != str(digest):
            raise DigestMismatchError(desc.digest, Digest.parse(header))
