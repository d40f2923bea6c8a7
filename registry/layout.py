"""The CNCF Distribution (registry:2) storage layout on top of any Driver.

Byte-compatible with Distribution 2.8 (registry/storage/paths.go), so a directory or bucket
written by ``docker-registry`` is served as is, and the other way round::

    /docker/registry/v2/blobs/<alg>/<first 2 hex>/<hex>/data
    /docker/registry/v2/repositories/<name>/_layers/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_manifests/revisions/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/current/link
    /docker/registry/v2/repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link
    /docker/registry/v2/repositories/<name>/_uploads/<id>/data | startedat

Link files hold the digest string (``sha256:…``, no newline), as Distribution writes them.
Distribution 2.8 has no referrers index; ours is one link per referrer, keyed by subject, so a
subject that does not exist yet works and listing needs no scan:

    /docker/registry/v2/repositories/<name>/_manifests/referrers/<alg>/<hex>/<ralg>/<rhex>/link

Distribution ignores the extra directory (its tags and revisions walks never enter it).

Outside Distribution's two trees, pyreg keeps upload-session locks under
``/docker/registry/v2/pyreg-locks/uploads/<name>/<id>`` (held only while a request works on the
session), moves blobs found corrupt to ``/docker/registry/v2/pyreg-corrupt/<alg>/<hex>`` and
records verified blobs in ``/docker/registry/v2/pyreg-verified/<alg>/<hex>`` (registry/verified.py).

Blob integrity: a blob is published only from a snapshot whose digest was verified (see
``publish_blob``); a publish never replaces a valid blob, but does replace one whose bytes do
not hash to its name, so an honest upload repairs a corrupt or poisoned blob.

Stored blobs are checked against their digest when read whole, but only until they were seen
to hash right: ``VerifiedBlobs`` keeps, per digest, the driver's version token (FileInfo.version)
of the stored object this process verified, and while a stat gives that same token the blob is
served (and a re-upload of it kept) without hashing it again. A verification of a blob of at least
``TRUST_MIN_BYTES`` is also recorded in storage (registry/verified.py), so the other workers and
replicas, and this one after a restart, trust it from that record: read once on a miss of the
in-process map, and meaning nothing unless it holds the token of the blob as it is now. A publish
(an upload's or a mirror fill's, ``publish_blob``) records the token the driver's snapshot settled,
so a pull right after a push is not hashed even while a stat calls the file too new for a version
of its own (FileInfo.unsettled is then compared with the record, never recorded). Any write
to the stored object or replacement of it changes the token (the filesystem's ctime cannot be set
back), so a blob changed in place or swapped is hashed on its next GET, cut short and quarantined
if wrong. Not detected: bytes that rot on the medium under an unchanged inode (or object) after
they were verified; clients verify every blob's digest themselves.

A repository serves only blobs it links. Lookups go through a small in-process cache: content
addressed bytes are immutable, links are cached for ``ttl`` seconds (other replicas may change
them) and dropped at once by this process's own writes and deletes. With ``redis:`` configured,
tags are cached in Redis instead, where every write and delete updates them for all replicas at
once (registry/shared_state.py: LinkCache), so a moved tag is never served stale; revision and
layer links and blob sizes, which change only by deletes, are in Redis too, behind the
in-process cache. While Redis is unreachable the in-process cache does it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import Counter

from pyreg.registry.verified import LOOKUPS, VERIFIED, VerificationRecords, verified_path  # noqa: F401
from pyreg.storage.digest import Digest, DigestError, new_hasher
from pyreg.storage.distlayout import (  # noqa: F401 - re-exported: the registry's paths live here too
    BLOBS,
    REPOSITORIES,
    ROOT,
    blob_data_path,
    blob_dir,
    layer_link_path,
    repo_path,
    revision_link_path,
)
from pyreg.storage.driver import Driver
from pyreg.storage.errors import PathNotFoundError
from pyreg.storage.manifest import Manifest, ManifestError, parse_manifest, sniff_media_type
from pyreg.storage.registrystore import delete_path

if TYPE_CHECKING:
    from pyreg.registry.shared_state import LinkCache, SharedState

LOCKS: Final = f"{ROOT}/pyreg-locks"
CORRUPT: Final = f"{ROOT}/pyreg-corrupt"

log = logging.getLogger("pyreg.layout")

# Whole blobs served unhashed must be at least this big: a smaller one costs less to hash (about
# half a millisecond per MiB) than the stats that trusting it needs (an S3 HEAD each).
TRUST_MIN_BYTES = 1 << 20

VERIFICATIONS = Counter(
    "pyreg_blob_verifications_total",
    "Stored blobs checked against their digest, by how: hashed_get (a whole GET hashed as it "
    "streamed), trusted_get (served unhashed: verified before, version unchanged), read_check "
    "(read back and hashed: a re-upload of a stored digest, a suspected corrupt blob), "
    "trusted_check (a check answered by that trust), store_checksum (the store's own checksum)",
    ["how"], registry=None)
METRICS = (VERIFICATIONS, LOOKUPS)
_HASHED_GET, _TRUSTED_GET, _READ_CHECK, _TRUSTED_CHECK, _STORE_CHECKSUM = (
    VERIFICATIONS.labels(how) for how in
    ("hashed_get", "trusted_get", "read_check", "trusted_check", "store_checksum"))


def trusted_get_served() -> None:
    """Count a whole GET served unhashed by a sender other than ``checked_stream``."""
    _TRUSTED_GET.inc()


class VerifiedBlobs:
    """Digest -> version token of the stored blob this process saw hash to its digest; bounded,
    least recently used out (a miss only costs a hash). See the module docstring for the policy."""

    def __init__(self, maxentries: int = 4096) -> None:
        self.maxentries = maxentries
        self._data: OrderedDict[Digest, str] = OrderedDict()

    def trusted(self, digest: Digest, version: str | None) -> bool:
        if version is None or self._data.get(digest) != version:
            return False
        self._data.move_to_end(digest)
        return True

    def remember(self, digest: Digest, version: str | None) -> None:
        """``version`` is the token stat gave *before* the bytes were read (a change made while
        or after they were read then no longer matches it), or the one a settled snapshot gave
        the bytes it froze (``publish_blob``)."""
        if version is None:
            self._data.pop(digest, None)
            return
        self._data[digest] = version
        self._data.move_to_end(digest)
        if len(self._data) > self.maxentries:
            self._data.popitem(last=False)

    def forget(self, digest: Digest) -> None:
        self._data.pop(digest, None)


class TTLCache:
    """A bounded dict whose entries expire ``ttl`` seconds after they were put (ttl 0: off)."""

    def __init__(self, ttl: float, maxentries: int = 10000) -> None:
        self.ttl = ttl
        self.maxentries = maxentries
        self._data: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Any, value: Any) -> None:
        if self.ttl <= 0:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        if len(self._data) > self.maxentries:
            self._data.popitem(last=False)

    def pop(self, key: Any) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()


class ContentCache:
    """Immutable content-addressed bytes (manifests), bounded by total size, least recent out."""

    def __init__(self, maxbytes: int = 32 * 1024 * 1024, maxitem: int = 256 * 1024) -> None:
        self.maxbytes = maxbytes
        self.maxitem = maxitem
        self._size = 0
        self._data: OrderedDict[Digest, StoredManifest] = OrderedDict()

    def get(self, digest: Digest) -> StoredManifest | None:
        item = self._data.get(digest)
        if item is not None:
            self._data.move_to_end(digest)
        return item

    def put(self, item: StoredManifest) -> None:
        if len(item.data) > self.maxitem or item.digest in self._data:
            return
        self._data[item.digest] = item
        self._size += len(item.data)
        while self._size > self.maxbytes:
            _, old = self._data.popitem(last=False)
            self._size -= len(old.data)

    def pop(self, digest: Digest) -> None:
        item = self._data.pop(digest, None)
        if item is not None:
            self._size -= len(item.data)


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    data: bytes
    media_type: str


def tags_path(name: str) -> str:
    return f"{repo_path(name)}/_manifests/tags"


def tag_current_path(name: str, tag: str) -> str:
    return f"{tags_path(name)}/{tag}/current/link"


def tag_index_link_path(name: str, tag: str, digest: Digest) -> str:
    return f"{tags_path(name)}/{tag}/index/{digest.algorithm}/{digest.hex}/link"


def referrers_path(name: str, subject: Digest) -> str:
    return f"{repo_path(name)}/_manifests/referrers/{subject.algorithm}/{subject.hex}"


def referrer_link_path(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_path(name, subject)}/{referrer.algorithm}/{referrer.hex}/link"


def uploads_path(name: str) -> str:
    return f"{repo_path(name)}/_uploads"


def upload_path(name: str, upload_id: str) -> str:
    return f"{uploads_path(name)}/{upload_id}"


def upload_data_path(name: str, upload_id: str) -> str:
    return f"{upload_path(name, upload_id)}/data"


def upload_startedat_path(name: str, upload_id: str) -> str:
    return f"{upload_path(name, upload_id)}/startedat"


def upload_commit_path(name: str, upload_id: str, token: str) -> str:
    """Where a finishing request freezes the session's data: a name only that request knows."""
    return f"{upload_path(name, upload_id)}/commit-{token}"


def upload_lock_path(name: str, upload_id: str) -> str:
    return f"{LOCKS}/uploads/{name}/{upload_id}"


def corrupt_path(digest: Digest) -> str:
    return f"{CORRUPT}/{digest.algorithm}/{digest.hex}"


async def hash_path(driver: Driver, path: str, algorithm: str) -> tuple[Digest, int]:
    """Digest and size of the bytes stored at ``path``, read back in large chunks."""
    hasher = new_hasher(algorithm)
    size = 0
    async for chunk in driver.reader(path):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(algorithm, hasher.hexdigest()), size


class CorruptBlobError(Exception):
    """A blob being served turned out not to be what its name says; the answer must be cut."""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class Layout:
    """Repository operations over a Driver in Distribution's layout, with a lookup cache."""

    def __init__(self, driver: Driver, cache_ttl: float = 1.0, maxentries: int = 10000,
                 shared: SharedState | None = None) -> None:
        self.driver = driver
        self._links = TTLCache(cache_ttl, maxentries)  # (kind, name, key) -> Digest
        self._sizes = TTLCache(cache_ttl, maxentries)  # Digest -> blob size
        self._content = ContentCache()
        self.verified = VerifiedBlobs()
        self.records = VerificationRecords(driver)
        self._shared: LinkCache | None = None
        if shared is not None:
            from pyreg.registry.shared_state import LinkCache

            self._shared = LinkCache(shared)

    # -- the lookup cache: Redis when configured and up, else this process's TTL cache ----------

    async def _cached(self, cache: TTLCache, key: tuple[str, ...], read: Callable[[], Awaitable[Any]],
                      parse: Callable[[str], Any]) -> Any:
        """``read()`` through the cache; a None result (missing) is never cached.

        Tags move, so with Redis they are looked up there every time. Everything else (blob sizes,
        layer and revision links) changes only when deleted: this process's ttl cache answers
        first, as without Redis, and Redis backs it (one round trip can cost more than a stat).
        """
        local_first = key[0] != "tag"
        if local_first or self._shared is None:
            value = cache.get(key)
            if value is not None:
                return value
        if self._shared is not None:
            from pyreg.registry.shared_state import Miss, Unavailable

            try:
                hit = await self._shared.get("|".join(key))
            except Unavailable:
                pass
            else:
                if isinstance(hit, Miss):
                    value = await read()
                    if value is not None:
                        await self._shared.fill(hit, str(value))
                else:
                    try:
                        value = parse(hit)
                    except (ValueError, DigestError):  # not ours: read storage, replace it
                        value = await read()
                        await self._shared.write("|".join(key), None if value is None else str(value))
                if value is not None and local_first:
                    cache.put(key, value)
                return value
            value = cache.get(key)
            if value is not None:
                return value
        value = await read()
        if value is not None:
            cache.put(key, value)
        return value

    async def _changed(self, cache: TTLCache, key: tuple[str, ...], value: Any) -> None:
        """After a storage write (``value``) or delete (None) of what ``key`` caches."""
        if value is None:
            cache.pop(key)
        else:
            cache.put(key, value)
        if self._shared is not None:
            await self._shared.write("|".join(key), None if value is None else str(value))

    # -- links ---------------------------------------------------------------------------------

    async def read_link(self, path: str) -> Digest | None:
        """The digest a link file holds; None when it is missing or not a digest."""
        try:
            raw = await self.driver.get_content(path)
        except PathNotFoundError:
            return None
        try:
            return Digest.parse(raw.decode("ascii", "replace").strip())
        except DigestError:
            return None

    async def write_link(self, path: str, digest: Digest) -> None:
        await self.driver.put_content(path, str(digest).encode())

    async def _delete(self, path: str) -> bool:
        return await delete_path(self.driver, path)

    # -- blobs ---------------------------------------------------------------------------------

    async def blob_size(self, digest: Digest) -> int | None:
        """Size of the blob in the global store, or None when it is not there."""

        async def read() -> int | None:
            try:
                info = await self.driver.stat(blob_data_path(digest))
            except PathNotFoundError:
                return None
            return None if info.is_dir else info.size

        size = await self._cached(self._sizes, ("size", str(digest)), read, int)
        return None if size is None else int(size)

    async def repo_blob_size(self, name: str, digest: Digest) -> int | None:
        """Size of a blob this repository links (as a layer or a manifest), else None."""
        async def read() -> Digest | None:
            linked = await self.read_link(layer_link_path(name, digest))
            if linked != digest:
                linked = await self.read_link(revision_link_path(name, digest))
            return digest if linked == digest else None

        if await self._cached(self._links, ("layer", name, str(digest)), read, Digest.parse) is None:
            return None
        return await self.blob_size(digest)

    async def link_blob(self, name: str, digest: Digest) -> None:
        await self.write_link(layer_link_path(name, digest), digest)
        await self._changed(self._links, ("layer", name, str(digest)), digest)

    async def unlink_blob(self, name: str, digest: Digest) -> bool:
        """Remove a repository's link to a blob (the data stays for garbage collection)."""
        self._links.pop(("layer", name, str(digest)))
        if await self.read_link(layer_link_path(name, digest)) is None:
            return False
        deleted = await self._delete(layer_link_path(name, digest).rsplit("/", 1)[0])
        await self._changed(self._links, ("layer", name, str(digest)), None)
        return deleted

    async def blob_version(self, digest: Digest) -> str | None:
        """The driver's version token of the stored blob (None: none, or not there)."""
        try:
            info = await self.driver.stat(blob_data_path(digest))
        except PathNotFoundError:
            return None
        return None if info.is_dir else info.version

    async def blob_token(self, digest: Digest) -> str | None:
        """The stored blob's token as it is now, settled or not (FileInfo.unsettled): only to
        compare with a token already trusted, never to remember after a read."""
        try:
            info = await self.driver.stat(blob_data_path(digest))
        except PathNotFoundError:
            return None
        return None if info.is_dir else info.version or info.unsettled

    async def served_version(self, digest: Digest) -> str | None:
        """The version token a whole GET goes by: the settled one (trusted or not), or, for a
        blob changed too recently to have one, its current token if exactly that is trusted
        (its publish recorded it: ``publish_blob``); else None (hashed, and not recorded)."""
        try:
            info = await self.driver.stat(blob_data_path(digest))
        except PathNotFoundError:
            return None
        if info.is_dir or info.version is not None:
            return info.version
        if info.unsettled is not None and await self.trusts(digest, info.unsettled):
            return info.unsettled
        return None

    async def trusts(self, digest: Digest, version: str | None) -> bool:
        """Whether the blob was verified at ``version``: by this process (VerifiedBlobs), or by any
        worker or replica on this storage (its record, read once and then remembered here)."""
        if version is None:
            return False
        if self.verified.trusted(digest, version):
            return True
        if await self.records.says(digest, version):
            self.verified.remember(digest, version)
            return True
        return False

    async def verified_at(self, digest: Digest, version: str | None, size: int) -> None:
        """The blob hashed right at ``version`` (its token from a stat before it was read):
        trusted here, and recorded for every other process when big enough to be worth it."""
        self.verified.remember(digest, version)
        if version is not None and size >= TRUST_MIN_BYTES:
            await self.records.write(digest, version)

    async def untrust(self, digest: Digest) -> None:
        """The blob is wrong, changed or gone: no process trusts it from now on."""
        self.verified.forget(digest)
        await self.records.remove(digest)

    async def blob_is_valid(self, digest: Digest, size: int | None = None) -> bool:
        """Whether the stored blob exists, has ``size`` (when given) and hashes to its name.

        Answered without reading when a process verified the blob and its version token is
        unchanged (``trusts``), or from the store's own checksum (S3); else the whole blob is
        read and hashed: for the rare paths that must know (a second upload of a digest already
        stored, a blob a GET found corrupt), never for serving.
        """
        path = blob_data_path(digest)
        try:
            info = await self.driver.stat(path)
            if info.is_dir or (size is not None and info.size != size):
                return False
            current = info.version or info.unsettled  # compared with trusted tokens only
            if self.verified.trusted(digest, current):
                _TRUSTED_CHECK.inc()
                return True
            kept = await self.driver.stored_digest(path, digest.algorithm)
            if kept is not None:  # the store hashed it when it was written (S3): no read
                _STORE_CHECKSUM.inc()
                valid = kept == digest.hex
            elif info.size >= TRUST_MIN_BYTES and await self.trusts(digest, current):
                _TRUSTED_CHECK.inc()  # another process verified this version (its record)
                return True
            else:
                _READ_CHECK.inc()
                actual, read = await hash_path(self.driver, path, digest.algorithm)
                valid = actual == digest and read == info.size
        except PathNotFoundError:
            return False
        if valid:
            await self.verified_at(digest, info.version, info.size)
        else:
            await self.untrust(digest)
        return valid

    async def publish_blob(self, staged: str, digest: Digest, size: int) -> None:
        """Move verified, frozen bytes (a ``snapshot``) to the blob path.

        A valid blob already there is kept (a re-upload never replaces it; the staged copy is
        dropped). One that is missing, of another size or not hashing to its name is replaced:
        the first stored copy of a digest must not win when it is wrong. Two finishes of one
        digest racing here both publish verified bytes, so either outcome is the right blob.
        """
        if await self.blob_is_valid(digest, size):
            await self._delete(staged)
        else:
            if await self.blob_size(digest) is not None:
                log.warning("blob %s in storage is corrupt: replaced by a verified upload", digest)
            # A snapshot, not a plain move: on S3 the blob then keeps its SHA-256 checksum, so a
            # later check of it needs no read, and the copy is verified once more on the way.
            self.verified.forget(digest)
            published = await self.driver.snapshot(staged, blob_data_path(digest), digest.algorithm,
                                                   settle=size >= TRUST_MIN_BYTES)
            if published.hexdigest not in (None, digest.hex) or published.size != size:
                await self.quarantine_corrupt(digest)
                raise CorruptBlobError(f"{digest}: the published copy differs from the verified one")
            # Verified bytes, frozen, now at the blob path: trusted, here and by every process on
            # this storage, from the token they have there. On a filesystem that is the token the
            # snapshot settled (no writer could open the file from before the rename until a
            # change would move its ctime), so the first GET after a push is not hashed even
            # though a stat calls the file too new for a version; see "Blob integrity" in
            # docs/storage.md for the window this accepts.
            await self.verified_at(digest, published.version or await self.blob_version(digest), size)
        await self.forget_blob(digest)

    async def quarantine_corrupt(self, digest: Digest) -> bool:
        """Move a blob that a read found corrupt out of the blob store (kept for inspection),
        so every repository reports it missing and clients upload it again; True if moved.

        It is hashed once more first: a verified upload may have repaired it meanwhile.
        """
        await self.forget_blob(digest)
        if await self.blob_is_valid(digest):
            return False
        try:
            await self.driver.move(blob_data_path(digest), corrupt_path(digest))
        except PathNotFoundError:
            return False
        await self.untrust(digest)
        log.error("blob %s does not hash to its digest: moved to %s", digest, corrupt_path(digest))
        return True

    async def checked_stream(self, digest: Digest, chunks: AsyncIterator[bytes], length: int,
                             whole: bool, version: str | None = None) -> AsyncIterator[bytes]:
        """Pass ``chunks`` through, checking there are exactly ``length`` bytes and, for the
        ``whole`` blob, that they hash to ``digest``; the last chunk is held back until both
        hold. Otherwise CorruptBlobError is raised before it, so the client never gets a
        complete, valid-looking answer (the connection is cut short of its Content-Length),
        and a blob whose bytes are wrong is moved out of the store.

        ``version`` is the blob's version token from a stat made before ``chunks`` opened it.
        When a process verified the blob at that version (``trusts``), the bytes are not
        hashed; instead the version must still be the same after the last byte was read, or the
        answer is cut short and the blob checked (and quarantined if wrong). A whole blob that
        hashes right is trusted at ``version`` from then on.
        """
        trusted = whole and await self.trusts(digest, version)
        hasher = new_hasher(digest.algorithm) if whole and not trusted else None
        hashing: asyncio.Future[None] | None = None  # a chunk hashed in a thread while one is sent
        sent = 0
        held: bytes | None = None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if held is not None:
                    yield held
                held = chunk
                sent += len(chunk)
                if hasher is not None:
                    if hashing is not None:
                        await hashing
                    hashing = asyncio.ensure_future(asyncio.to_thread(hasher.update, chunk))
                if sent > length:
                    break
            if hashing is not None:
                await hashing
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        wrong = sent != length
        if hasher is not None and not wrong:
            wrong = Digest(digest.algorithm, hasher.hexdigest()) != digest
        if trusted and not wrong:
            wrong = await self.blob_token(digest) != version  # changed while it was read
        if wrong:
            if trusted:
                await self.changed_while_served(digest, sent, length)
            else:
                await self._found_wrong(digest, sent, length, whole)
            raise CorruptBlobError(str(digest))
        if whole:
            (_TRUSTED_GET if trusted else _HASHED_GET).inc()
            if not trusted:
                await self.verified_at(digest, version, length)
        if held is not None:
            yield held

    async def _found_wrong(self, digest: Digest, sent: int, length: int, whole: bool,
                           why: str = "") -> None:
        await self.untrust(digest)
        log.error("blob %s: stored bytes are not what its digest says (%d of %d bytes read%s); "
                  "answer cut short", digest, sent, length, why)
        await self.forget_blob(digest)
        if whole or sent < length:
            await self.quarantine_corrupt(digest)

    async def changed_while_served(self, digest: Digest, sent: int, length: int) -> None:
        """A blob served unhashed as trusted changed before its last byte went out: the caller
        cuts the answer short; the blob is checked (read and hashed) and quarantined if wrong."""
        await self._found_wrong(digest, sent, length, True, ", changed while served unhashed")

    async def put_blob_bytes(self, digest: Digest, data: bytes) -> None:
        """Store small verified content (manifests) in the blob store; a copy already there is
        rewritten unless it holds exactly these bytes."""
        path = blob_data_path(digest)
        if await self.blob_size(digest) == len(data):
            try:
                if await self.driver.get_content(path) == data:
                    return
            except PathNotFoundError:
                pass
        await self.driver.put_content(path, data)
        await self.forget_blob(digest)  # a cached copy of the bytes it replaced goes too

    async def forget_blob(self, digest: Digest) -> None:
        """The blob turned out to be gone (deleted since its size was cached)."""
        self._content.pop(digest)
        await self._changed(self._sizes, ("size", str(digest)), None)

    # -- manifests -----------------------------------------------------------------------------

    async def has_manifest(self, name: str, digest: Digest) -> bool:
        async def read() -> Digest | None:
            return digest if await self.read_link(revision_link_path(name, digest)) == digest else None

        key = ("revision", name, str(digest))
        return await self._cached(self._links, key, read, Digest.parse) is not None

    async def manifest(self, name: str, digest: Digest) -> StoredManifest | None:
        """The stored manifest bytes and media type, if this repository has the revision."""
        if not await self.has_manifest(name, digest):
            return None
        return await self.manifest_content(digest)

    async def manifest_content(self, digest: Digest) -> StoredManifest | None:
        """Manifest bytes from the blob store, whichever repository links them."""
        cached = self._content.get(digest)
        if cached is not None:
            return cached
        try:
            data = await self.driver.get_content(blob_data_path(digest))
        except PathNotFoundError:
            return None
        if Digest.of(data, digest.algorithm) != digest:
            log.error("manifest blob %s does not hash to its digest: not served", digest)
            return None
        item = StoredManifest(digest, data, sniff_media_type(data))
        self._content.put(item)
        return item

    async def put_manifest(self, name: str, digest: Digest, data: bytes, manifest: Manifest) -> None:
        """Store bytes, link the revision and, for a manifest with a subject, the referrer."""
        await self.put_blob_bytes(digest, data)
        self._content.put(StoredManifest(digest, data, manifest.media_type))
        if manifest.subject is not None:
            await self.write_link(referrer_link_path(name, manifest.subject.digest, digest), digest)
        await self.write_link(revision_link_path(name, digest), digest)
        await self._changed(self._links, ("revision", name, str(digest)), digest)

    async def delete_manifest(self, name: str, digest: Digest) -> bool:
        """Delete a revision, every tag pointing at it and its referrer entry; False if unknown."""
        if not await self.has_manifest(name, digest):
            return False
        self._links.pop(("revision", name, str(digest)))
        stored = await self.manifest_content(digest)
        for tag in await self.tags(name) or []:
            if await self.resolve_tag(name, tag) == digest:
                await self.untag(name, tag)
        if stored is not None:
            try:
                parsed = parse_manifest(stored.data)
            except ManifestError:
                parsed = None
            if parsed is not None and parsed.subject is not None:
                await self._delete(referrer_link_path(name, parsed.subject.digest, digest).rsplit("/", 1)[0])
        deleted = await self._delete(revision_link_path(name, digest).rsplit("/", 1)[0])
        await self._changed(self._links, ("revision", name, str(digest)), None)
        return deleted

    async def referrers(self, name: str, subject: Digest) -> list[Digest]:
        """Digests of the manifests in ``name`` that name ``subject`` (whether or not it exists)."""
        found: list[Digest] = []
        base = referrers_path(name, subject)
        try:
            algorithms = await self.driver.list(base)
        except PathNotFoundError:
            return found
        for alg_path in algorithms:
            try:
                entries = await self.driver.list(alg_path)
            except PathNotFoundError:
                continue
            for entry in entries:
                try:
                    digest = Digest.parse(f"{_basename(alg_path)}:{_basename(entry)}")
                except DigestError:
                    continue
                found.append(digest)
        return sorted(found)

    # -- tags ----------------------------------------------------------------------------------

    async def resolve_tag(self, name: str, tag: str) -> Digest | None:
        result = await self._cached(self._links, ("tag", name, tag),
                                    lambda: self.read_link(tag_current_path(name, tag)), Digest.parse)
        return result if isinstance(result, Digest) else None

    async def tag(self, name: str, tag: str, digest: Digest) -> None:
        """Point ``tag`` at ``digest``: index entry first, then the current link (atomic)."""
        await self.write_link(tag_index_link_path(name, tag, digest), digest)
        await self.write_link(tag_current_path(name, tag), digest)
        await self._changed(self._links, ("tag", name, tag), digest)

    async def untag(self, name: str, tag: str) -> bool:
        self._links.pop(("tag", name, tag))
        if await self.read_link(tag_current_path(name, tag)) is None:
            return False
        deleted = await self._delete(f"{tags_path(name)}/{tag}")
        await self._changed(self._links, ("tag", name, tag), None)
        return deleted

    async def tags(self, name: str) -> list[str] | None:
        """Sorted tags of a repository; None when the repository does not exist."""
        try:
            entries = await self.driver.list(tags_path(name))
        except PathNotFoundError:
            return [] if await self.repo_exists(name) else None
        return sorted(_basename(e) for e in entries)

    # -- repositories --------------------------------------------------------------------------

    async def repo_exists(self, name: str) -> bool:
        try:
            children = await self.driver.list(repo_path(name))
        except PathNotFoundError:
            return False
        return any(_basename(c) in ("_manifests", "_layers") for c in children)

    async def repositories(self) -> list[str]:
        """Every repository with a ``_manifests`` directory, sorted (Distribution's rule)."""
        found: list[str] = []

        async def visit(path: str, name: str) -> None:
            try:
                children = await self.driver.list(path)
            except PathNotFoundError:
                return
            for child in children:
                base = _basename(child)
                if base == "_manifests" and name:
                    found.append(name)
                elif not base.startswith("_"):
                    await visit(child, f"{name}/{base}" if name else base)

        await visit(REPOSITORIES, "")
        return sorted(found)
