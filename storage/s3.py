"""The S3 driver: the registry:2 key layout under a root prefix in one bucket, on boto3.

Every blocking boto3 call runs in a bounded thread pool owned by the driver, so the event loop
never waits on the network and the number of concurrent S3 requests stays bounded.

Resumable writers keep *all* their state in S3, never in process memory, so a writer opened with
``append=True`` in another process (another replica) continues where the last one stopped:

- the bytes live in one in-progress multipart upload for the key; every part but the last is at
  least S3's 5 MiB minimum, and a writer keeps up to ``parallelparts`` part uploads in flight
  while it receives the next one;
- ``close`` writes a small journal object beside the key (``<key>#pending``: '#' is outside the
  driver-path alphabet, so no path can collide with it) naming the upload, how many parts belong
  to the path, and holding the tail shorter than a part (bytes that cannot be a part yet). The
  journal is the commit point of ``close``: parts beyond its count (a writer that died before
  closing) and uploads it does not name are ignored, so a crash never counts a byte twice or
  leaves a gap; ``writer(append=True)`` finds the journal, then ListParts for the parts;
- ``commit`` uploads the tail as the last part and completes the upload (or, for less than one
  part, does a single PUT); nothing is downloaded. Appending to a committed object of a part's
  size or more starts the upload with a server-side UploadPartCopy of it; a smaller one is read
  back (less than 5 MiB). With no valid journal, the committed object is the path's content.

Locks (``try_lock``) are lease objects written with S3's conditional writes: taking one is a
PutObject with ``If-None-Match: *`` (exactly one of several racing replicas creates the key), the
holder renews it every ``lockttl / 3`` seconds with a PutObject ``If-Match`` its own last ETag
(the body carries a counter, so every renewal has a new ETag), and releases it with a
DeleteObject ``If-Match`` that ETag, so it can never remove a lock someone else holds. A lock
whose holder died (SIGKILL) stops being renewed; once S3's own clock (the ``Date`` of our HEAD
against the lock's ``Last-Modified``: one clock, no skew between replicas) says it is older than
``lockttl``, a locker replaces it with ``If-Match`` the stale ETag: of several racing lockers
one wins. A holder whose renewal fails has lost the lock and ``check`` says so.

``snapshot`` copies the upload to its private key with ``ChecksumAlgorithm=SHA256``: S3 computes
the SHA-256 of exactly the bytes the new object holds, so a commit is verified without reading
the blob back and whatever a racing writer does to the source afterwards.

``move`` is a server-side copy (multipart UploadPartCopy above 5 GiB) then a delete, and readers
stream one ranged GET in large chunks, resuming with a new ranged GET pinned to the same ETag
if the connection drops. Nothing holds a whole blob in memory: a writer holds at most
``parallelparts + 1`` parts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import functools
import posixpath
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from pyreg.storage.driver import FileInfo, Snapshot, check_path
from pyreg.storage.errors import InvalidOffsetError, LockLostError, PathNotFoundError, StorageError
from pyreg.storage.s3config import (  # noqa: F401 - the section is defined there; re-exported here
    DEFAULT_CHUNK,
    MAX_COPY,
    S3Config,
    s3_config_from_dict,
)
from pyreg.storage.units import parse_duration  # noqa: F401 - re-exported (tests)

T = TypeVar("T")

MIN_PART = 5 << 20  # S3's minimum size of every part but the last
MAX_PARTS = 10000
COPY_RANGE = 64 << 20  # smallest range of a parallel server-side copy
READ_CHUNK = 2 << 20
PENDING = "#pending"  # '#' is outside the driver-path alphabet, so this never names a path


def _version(head: dict[str, Any], size: int) -> str:
    """FileInfo.version of an object: every PUT, copy or completed multipart upload gives a new
    ETag or LastModified (and, in a versioned bucket, a new VersionId)."""
    modified = head.get("LastModified")
    stamp = modified.isoformat() if isinstance(modified, datetime) else str(modified)
    return f"{head.get('ETag', '')}|{head.get('VersionId', '')}|{size}|{stamp}"


def _is_missing(exc: botocore.exceptions.ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_conflict(exc: botocore.exceptions.ClientError) -> bool:
    """A conditional write lost: the precondition failed, or a racing write to the key won."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _full_sha256(head: dict[str, Any], algorithm: str) -> str | None:
    """The object's whole-content SHA-256 from a HEAD with ChecksumMode, as hex, if S3 keeps
    one (a multipart object's checksum is of its parts' checksums: not a content digest)."""
    checksum = head.get("ChecksumSHA256") if algorithm == "sha256" else None
    if not checksum or "-" in checksum or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    return base64.b64decode(checksum).hex()


class S3Lock:
    """A lease on one lock object; see the module docstring."""

    def __init__(self, driver: S3Driver, path: str, key: str, owner: str, etag: str) -> None:
        self._d = driver
        self._path = path
        self._key = key
        self._owner = owner
        self._etag: str | None = etag
        self._count = 0
        self._mutex = asyncio.Lock()
        self._task: asyncio.Task[None] | None = asyncio.ensure_future(self._keep_alive())

    async def _renew(self) -> None:
        async with self._mutex:
            if self._etag is None:
                raise LockLostError(self._path)
            self._count += 1
            try:
                resp = await self._d._call(self._d.client.put_object, Bucket=self._d.bucket, Key=self._key,
                                           Body=f"{self._owner} {self._count}".encode(), IfMatch=self._etag)
            except botocore.exceptions.ClientError as exc:
                if _is_conflict(exc) or _is_missing(exc):
                    self._etag = None
                    raise LockLostError(self._path) from None
                raise
            self._etag = str(resp["ETag"])

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._d.config.lockttl / 3)
            try:
                await self._renew()
            except LockLostError:
                return
            except Exception:  # a transient failure: the next round tries again
                continue

    async def check(self) -> None:
        await self._renew()

    async def release(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        async with self._mutex:
            etag, self._etag = self._etag, None
        if etag is None:
            return
        with contextlib.suppress(botocore.exceptions.ClientError):
            await self._d._call(self._d.client.delete_object, Bucket=self._d.bucket, Key=self._key,
                                IfMatch=etag)


@dataclass(slots=True)
class _Part:
    number: int
    etag: str
    size: int


class S3Writer:
    """Append writer onto one multipart upload; see the module docstring for where state lives."""

    def __init__(self, driver: S3Driver, key: str, upload_id: str | None = None,
                 parts: list[_Part] | None = None, tail: bytes = b"", base_size: int = 0,
                 journal: bool = False) -> None:
        self._d = driver
        self._key = key
        self._upload_id = upload_id
        self._parts = list(parts or [])
        self._next = len(self._parts) + 1
        self._buffer = bytearray(tail)
        # Bytes of an already committed object this writer appends to, not yet in the upload.
        self._base_size = base_size
        self._size = sum(p.size for p in self._parts) + len(tail) + base_size
        self._journal = journal  # a journal object for this key exists in S3
        self._dirty = False
        self._inflight: set[asyncio.Future[None]] = set()
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("writer is closed")
        if not data:
            return 0
        self._dirty = True
        self._buffer += data
        self._size += len(data)
        while len(self._buffer) >= self._d.config.chunksize:
            await self._upload_part(self._d.config.chunksize)
        return len(data)

    async def _ensure_upload(self) -> str:
        if self._upload_id is None:
            resp = await self._d._call(self._d.client.create_multipart_upload,
                                       Bucket=self._d.bucket, Key=self._key)
            self._upload_id = str(resp["UploadId"])
            if self._base_size:
                await self._copy_base()
        return self._upload_id

    async def _copy_base(self) -> None:
        """Start the upload with the committed object this writer appends to (server side).

        Large objects are copied as several ranges at once (each at least 64 MiB, at most 5 GiB):
        a registry that commits after every chunk pays this copy on each next chunk.
        """
        size = self._base_size
        count = max(-(-size // MAX_COPY), min(8, size // COPY_RANGE), 1)
        step = -(-size // count)
        ranges = []
        for start in range(0, size, step):
            number, self._next = self._next, self._next + 1
            ranges.append((number, start, min(size, start + step) - 1))

        async def one(number: int, start: int, end: int) -> _Part:
            resp = await self._d._call(
                self._d.client.upload_part_copy, Bucket=self._d.bucket, Key=self._key,
                UploadId=self._upload_id, PartNumber=number,
                CopySource={"Bucket": self._d.bucket, "Key": self._key},
                CopySourceRange=f"bytes={start}-{end}")
            return _Part(number, str(resp["CopyPartResult"]["ETag"]), end - start + 1)

        self._parts += await asyncio.gather(*(one(*r) for r in ranges))
        self._base_size = 0

    async def _upload_part(self, size: int) -> None:
        """Send the first ``size`` buffered bytes as the next part, in the background."""
        upload_id = await self._ensure_upload()
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        number, self._next = self._next, self._next + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self._key}: more than {MAX_PARTS} parts; raise chunksize")
        self._inflight.add(asyncio.ensure_future(self._send(upload_id, number, body)))
        if len(self._inflight) >= self._d.config.parallelparts:
            done, _ = await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)

    async def _send(self, upload_id: str, number: int, body: bytes) -> None:
        resp = await self._d._call(self._d.client.upload_part, Bucket=self._d.bucket, Key=self._key,
                                   UploadId=upload_id, PartNumber=number, Body=body)
        self._parts.append(_Part(number, str(resp["ETag"]), len(body)))

    def _reap(self, done: set[asyncio.Future[None]]) -> None:
        self._inflight -= done
        for task in done:
            task.result()  # the first failure surfaces here

    async def _drain(self) -> None:
        if self._inflight:
            done, _ = await asyncio.wait(self._inflight)
            self._reap(done)
        self._parts.sort(key=lambda p: p.number)

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            if len(self._buffer) >= MIN_PART:
                await self._upload_part(len(self._buffer))
            await self._drain()
            if self._dirty:
                upload_id = await self._ensure_upload()
                await self._d._call(
                    self._d.client.put_object, Bucket=self._d.bucket, Key=self._key + PENDING,
                    Body=bytes(self._buffer), Metadata={"upload": upload_id, "parts": str(len(self._parts))})
                self._journal = True
        finally:
            self._buffer = bytearray()
            self._abandon()

    def _abandon(self) -> None:
        for task in self._inflight:
            task.cancel()
        self._inflight.clear()

    async def cancel(self) -> None:
        self._done = True
        self._buffer = bytearray()
        self._abandon()
        await self._d._abort_uploads(self._key, exact=True)
        await self._d._delete_keys([self._key, self._key + PENDING])

    async def commit(self) -> None:
        if self._done:
            raise ValueError("writer is closed")
        self._done = True
        d = self._d
        try:
            if self._next == 1 and not self._base_size:
                # Less than one part in all: a single PUT (and any upload is not needed).
                await d._call(d.client.put_object, Bucket=d.bucket, Key=self._key, Body=bytes(self._buffer))
                if self._upload_id is not None:
                    with contextlib.suppress(botocore.exceptions.ClientError):
                        await d._call(d.client.abort_multipart_upload, Bucket=d.bucket, Key=self._key,
                                      UploadId=self._upload_id)
            elif self._upload_id is None and not self._buffer:
                pass  # appended nothing to a committed object: it stays as it is
            else:
                upload_id = await self._ensure_upload()
                if self._buffer or self._next == 1:
                    await self._upload_part(len(self._buffer))
                await self._drain()
                parts = [{"PartNumber": p.number, "ETag": p.etag} for p in self._parts]
                await d._call(d.client.complete_multipart_upload, Bucket=d.bucket, Key=self._key,
                              UploadId=upload_id, MultipartUpload={"Parts": parts})
            if self._journal:
                await d._delete_keys([self._key + PENDING])
        finally:
            self._buffer = bytearray()
            self._abandon()


class S3Driver:
    """Stores everything in one bucket under ``rootdirectory``, laid out like Distribution's."""

    name = "s3"
    page_size = 1000  # keys per listing request (S3's maximum)

    def __init__(self, config: S3Config) -> None:
        if config.chunksize < MIN_PART:
            raise ValueError(f"s3 chunksize must be at least {MIN_PART} bytes")
        if config.parallelparts < 1:
            raise ValueError("s3 parallelparts must be at least 1")
        self.config = config
        self.bucket = config.bucket
        root = config.rootdirectory.strip("/")
        self._prefix = f"{root}/" if root else ""
        self._pool = ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="s3")
        session = boto3.session.Session(
            aws_access_key_id=config.accesskey, aws_secret_access_key=config.secretkey,
            aws_session_token=config.sessiontoken, region_name=config.region)
        self.client: Any = session.client(
            "s3", endpoint_url=config.regionendpoint, use_ssl=config.secure,
            config=botocore.config.Config(
                signature_version="s3v4",
                max_pool_connections=config.max_workers + 4,
                retries={"max_attempts": 5, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path" if config.forcepathstyle else "auto"}))

    @classmethod
    def from_config(cls, section: Any) -> S3Driver:
        """A driver from a ``storage.s3`` section: the config's S3Config, or a plain mapping."""
        return cls(section if isinstance(section, S3Config) else s3_config_from_dict(section))

    # -- plumbing -------------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Release the thread pool (the driver is unusable afterwards)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def key(self, path: str) -> str:
        """The object key of a driver path."""
        check_path(path)
        return self._prefix + path.lstrip("/")

    def _dir_prefix(self, path: str) -> str:
        key = self.key(path)
        return key if path == "/" else key + "/"

    def _path(self, key: str) -> str:
        return "/" + key[len(self._prefix):]

    def _paginate(self, op: str, **kwargs: Any) -> list[dict[str, Any]]:
        return list(self.client.get_paginator(op).paginate(Bucket=self.bucket, **kwargs))

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return await self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                return None
            raise

    async def _delete_keys(self, keys: Iterable[str]) -> None:
        batch = list(keys)
        for i in range(0, len(batch), 1000):
            objects = [{"Key": k} for k in batch[i:i + 1000]]
            await self._call(self.client.delete_objects, Bucket=self.bucket,
                             Delete={"Objects": objects, "Quiet": True})

    async def _uploads(self, key: str, exact: bool) -> list[dict[str, Any]]:
        pages = await self._call(self._paginate, "list_multipart_uploads", Prefix=key)
        found = [u for page in pages for u in page.get("Uploads", [])]
        return [u for u in found if not exact or u["Key"] == key]

    async def _abort_uploads(self, key: str, exact: bool, within: tuple[str, str] | None = None) -> int:
        """Abort the uploads for ``key`` (or below it); ``within`` keeps the key and one prefix."""
        uploads = await self._uploads(key, exact)
        if within is not None:
            uploads = [u for u in uploads if u["Key"] == within[0] or u["Key"].startswith(within[1])]
        for u in uploads:
            with contextlib.suppress(botocore.exceptions.ClientError):
                await self._call(self.client.abort_multipart_upload, Bucket=self.bucket,
                                 Key=u["Key"], UploadId=u["UploadId"])
        return len(uploads)

    # -- the Driver protocol --------------------------------------------------------------------

    async def get_content(self, path: str) -> bytes:
        key = self.key(path)
        try:
            resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                raise PathNotFoundError(path) from None
            raise
        return bytes(await self._call(resp["Body"].read))

    async def put_content(self, path: str, data: bytes) -> None:
        await self._call(self.client.put_object, Bucket=self.bucket, Key=self.key(path), Body=data)

    async def reader(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        key = self.key(path)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidOffsetError(f"negative offset or length for {path}")
        if length == 0:
            if offset > (await self.stat(path)).size:
                raise InvalidOffsetError(f"offset {offset} is past the end of {path}")
            return
        # One ranged GET (no HEAD first); a connection that drops is resumed with a new ranged
        # GET pinned to the first answer's ETag, so the bytes can never come from two versions.
        last = "" if length is None else str(offset + length - 1)
        first = await self._get_range(path, key, f"bytes={offset}-{last}" if offset or last else None)
        if first is None:
            return  # offset is exactly the end
        resp: dict[str, Any] | None = first[0]
        total = first[1]
        end = total if length is None else min(total, offset + length)
        etag = str(first[0]["ETag"])
        if offset >= end:
            first[0]["Body"].close()
            return
        pos, retries = offset, 0
        loop = asyncio.get_running_loop()
        while pos < end:
            if resp is None:
                again = await self._get_range(path, key, f"bytes={pos}-{end - 1}", etag)
                if again is None:
                    return
                resp = again[0]
            body = resp["Body"]
            resp = None
            # Read one chunk ahead in the pool while the caller sends the current one.
            ahead: asyncio.Future[bytes] | None = loop.run_in_executor(
                self._pool, body.read, min(READ_CHUNK, end - pos))
            try:
                while ahead is not None:
                    try:
                        chunk = await ahead
                    except (botocore.exceptions.BotoCoreError, OSError):
                        ahead = None
                        retries += 1
                        if retries > 3:
                            raise
                        break  # resume from pos
                    if not chunk:
                        ahead = None
                        break
                    pos += len(chunk)
                    ahead = (loop.run_in_executor(self._pool, body.read, min(READ_CHUNK, end - pos))
                             if pos < end else None)
                    yield chunk
            finally:
                if ahead is not None:
                    with contextlib.suppress(BaseException):
                        await ahead
                body.close()

    async def _get_range(self, path: str, key: str, byte_range: str | None,
                         etag: str | None = None) -> tuple[dict[str, Any], int] | None:
        """GetObject for a range: (response, total size), or None when the range starts at the end."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            kwargs["Range"] = byte_range
        if etag:
            kwargs["IfMatch"] = etag
        try:
            resp = await self._call(self.client.get_object, **kwargs)
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                raise PathNotFoundError(path) from None
            if _error_code(exc) not in ("InvalidRange", "416"):
                raise
            size = (await self.stat(path)).size
            start = int((byte_range or "bytes=0-").split("=")[1].split("-")[0])
            if start == size:
                return None
            raise InvalidOffsetError(f"offset {start} is past the end of {path}") from None
        content_range = resp.get("ContentRange")
        total = int(content_range.rsplit("/", 1)[1]) if content_range else int(resp["ContentLength"])
        return resp, total

    async def writer(self, path: str, append: bool = False) -> S3Writer:
        key = self.key(path)
        if not append:
            await self._abort_uploads(key, exact=True)
            await self._delete_keys([key + PENDING])
            return S3Writer(self, key)
        journal = await self._journal(key)
        if journal is not None:
            upload_id, count, tail = journal
            try:
                pages = await self._call(self._paginate, "list_parts", Key=key, UploadId=upload_id)
            except botocore.exceptions.ClientError as exc:
                if not _is_missing(exc):
                    raise
                pages = None  # completed or aborted after the journal was written: stale
            if pages is not None:
                found = {int(p["PartNumber"]): _Part(int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
                         for page in pages for p in page.get("Parts", [])}
                if any(n not in found for n in range(1, count + 1)):
                    raise StorageError(f"{path}: upload {upload_id} lost parts its journal names")
                # Parts past the journal's count were never acknowledged by a close: ignored.
                return S3Writer(self, key, upload_id, [found[n] for n in range(1, count + 1)], tail,
                                journal=True)
        # No open upload: append to the committed object (or to nothing). One of a part's size
        # or more is copied into the upload server side when needed; a smaller one is read back.
        head = await self._head(key)
        size = int(head["ContentLength"]) if head else 0
        if size >= MIN_PART:
            return S3Writer(self, key, base_size=size, journal=journal is not None)
        return S3Writer(self, key, tail=await self.get_content(path) if size else b"",
                        journal=journal is not None)

    async def _journal(self, key: str) -> tuple[str, int, bytes] | None:
        """(upload id, part count, tail) from the journal a writer's close left, if any."""
        try:
            resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key + PENDING)
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        meta = resp.get("Metadata", {})
        tail = await self._call(resp["Body"].read)
        try:
            return str(meta["upload"]), int(meta["parts"]), bytes(tail)
        except (KeyError, ValueError):
            return None

    async def stat(self, path: str) -> FileInfo:
        if path != "/":
            head = await self._head(self.key(path))
            if head is not None:
                size = int(head["ContentLength"])
                return FileInfo(path, size, head["LastModified"], False, _version(head, size))
        resp = await self._call(self.client.list_objects_v2, Bucket=self.bucket,
                                Prefix=self._dir_prefix(path), MaxKeys=1)
        contents = resp.get("Contents", [])
        if not contents and path != "/":
            raise PathNotFoundError(path)
        modtime = contents[0]["LastModified"] if contents else datetime.now(UTC)
        return FileInfo(path, 0, modtime, True)

    async def list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        pages = await self._call(self._paginate, "list_objects_v2", Prefix=prefix, Delimiter="/")
        found: list[str] = []
        for page in pages:
            found += [self._path(p["Prefix"].rstrip("/")) for p in page.get("CommonPrefixes", [])]
            found += [self._path(o["Key"]) for o in page.get("Contents", [])
                      if not o["Key"].endswith(PENDING)]
        # An empty listing is a missing directory, unless only pending tails live there.
        if not found and path != "/" and not any(page.get("Contents") for page in pages):
            raise PathNotFoundError(path)
        return found

    async def move(self, source: str, dest: str) -> None:
        src, dst = self.key(source), self.key(dest)
        head = await self._head(src)
        if head is not None:
            await self._copy(src, dst, int(head["ContentLength"]))
            await self._call(self.client.delete_object, Bucket=self.bucket, Key=src)
            return
        # A directory: copy every object below it, then delete the originals.
        prefix = self._dir_prefix(source)
        pages = await self._call(self._paginate, "list_objects_v2", Prefix=prefix)
        objects = [o for page in pages for o in page.get("Contents", [])]
        if not objects:
            raise PathNotFoundError(source)
        target = self._dir_prefix(dest)
        for o in objects:
            await self._copy(o["Key"], target + o["Key"][len(prefix):], int(o["Size"]))
        await self._delete_keys(o["Key"] for o in objects)

    async def _copy(self, src: str, dst: str, size: int) -> None:
        source = {"Bucket": self.bucket, "Key": src}
        if size <= self.config.multipart_copy_threshold:
            await self._call(self.client.copy_object, Bucket=self.bucket, Key=dst, CopySource=source)
            return
        step = max(MIN_PART, min(self.config.multipart_copy_chunksize, MAX_COPY))
        step = max(step, -(-size // MAX_PARTS))
        resp = await self._call(self.client.create_multipart_upload, Bucket=self.bucket, Key=dst)
        upload_id = resp["UploadId"]
        try:
            ranges = [(i + 1, start, min(size, start + step) - 1)
                      for i, start in enumerate(range(0, size, step))]

            async def one(number: int, start: int, end: int) -> dict[str, Any]:
                r = await self._call(self.client.upload_part_copy, Bucket=self.bucket, Key=dst,
                                     UploadId=upload_id, PartNumber=number, CopySource=source,
                                     CopySourceRange=f"bytes={start}-{end}")
                return {"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]}

            parts = await asyncio.gather(*(one(*r) for r in ranges))
            await self._call(self.client.complete_multipart_upload, Bucket=self.bucket, Key=dst,
                             UploadId=upload_id, MultipartUpload={"Parts": list(parts)})
        except BaseException:
            with contextlib.suppress(Exception):
                await self._call(self.client.abort_multipart_upload, Bucket=self.bucket, Key=dst,
                                 UploadId=upload_id)
            raise

    async def delete(self, path: str) -> None:
        key = self.key(path)
        keys: list[str] = []
        if path != "/" and await self._head(key) is not None:
            keys.append(key)
        prefix = self._dir_prefix(path)
        pages = await self._call(self._paginate, "list_objects_v2", Prefix=prefix)
        keys += [o["Key"] for page in pages for o in page.get("Contents", [])]
        aborted = await self._abort_uploads(key if path != "/" else prefix, exact=False,
                                            within=None if path == "/" else (key, prefix))
        if not keys and not aborted:
            raise PathNotFoundError(path)
        if path != "/":
            keys.append(key + PENDING)
        await self._delete_keys(keys)

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        if not self.config.redirect.enabled or method not in ("GET", "HEAD"):
            return None
        op = "get_object" if method == "GET" else "head_object"
        return str(await self._call(
            self.client.generate_presigned_url, op, Params={"Bucket": self.bucket, "Key": self.key(path)},
            ExpiresIn=self.config.redirect_expiry))

    async def try_lock(self, path: str) -> S3Lock | None:
        key = self.key(path)
        owner = uuid.uuid4().hex
        for _ in range(3):
            try:
                resp = await self._call(self.client.put_object, Bucket=self.bucket, Key=key,
                                        Body=f"{owner} 0".encode(), IfNoneMatch="*")
                return S3Lock(self, path, key, owner, str(resp["ETag"]))
            except botocore.exceptions.ClientError as exc:
                if not _is_conflict(exc):
                    raise
            head = await self._head(key)
            if head is None:
                continue  # released between our two requests: try again
            now = email.utils.parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
            if (now - head["LastModified"]).total_seconds() <= self.config.lockttl:
                return None
            try:  # stale: its holder stopped renewing it; replace exactly that version
                resp = await self._call(self.client.put_object, Bucket=self.bucket, Key=key,
                                        Body=f"{owner} 0".encode(), IfMatch=head["ETag"])
                return S3Lock(self, path, key, owner, str(resp["ETag"]))
            except botocore.exceptions.ClientError as exc:
                if _is_conflict(exc) or _is_missing(exc):
                    return None
                raise
        return None

    async def snapshot(self, source: str, dest: str, algorithm: str, settle: bool = False) -> Snapshot:
        src, dst = self.key(source), self.key(dest)
        head = await self._head(src)
        if head is None:
            raise PathNotFoundError(source)
        size = int(head["ContentLength"])
        if size > self.config.multipart_copy_threshold:
            await self._copy(src, dst, size)  # no whole-object checksum: the caller reads it back
        else:
            kwargs: dict[str, Any] = {"ChecksumAlgorithm": "SHA256"} if algorithm == "sha256" else {}
            try:
                await self._call(self.client.copy_object, Bucket=self.bucket, Key=dst,
                                 CopySource={"Bucket": self.bucket, "Key": src}, **kwargs)
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    raise PathNotFoundError(source) from None
                raise
        # What the private copy holds, by S3's own account of it.
        got = await self._call(self.client.head_object, Bucket=self.bucket, Key=dst, ChecksumMode="ENABLED")
        await self._call(self.client.delete_object, Bucket=self.bucket, Key=src)
        return Snapshot(int(got["ContentLength"]), _full_sha256(got, algorithm))

    async def stored_digest(self, path: str, algorithm: str) -> str | None:
        if algorithm != "sha256":
            return None
        try:
            got = await self._call(self.client.head_object, Bucket=self.bucket, Key=self.key(path),
                                   ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as exc:
            if _is_missing(exc):
                raise PathNotFoundError(path) from None
            raise
        return _full_sha256(got, algorithm)

    async def walk(self, path: str) -> AsyncIterator[FileInfo]:
        prefix = self._dir_prefix(path)
        base = "" if path == "/" else path
        seen: set[str] = set()
        token: str | None = None
        found = False
        while True:  # one page (1000 keys) at a time: a large bucket is never listed into memory
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": self.page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = await self._call(self.client.list_objects_v2, **kwargs)
            for o in page.get("Contents", []):
                found = True
                if o["Key"].endswith(PENDING):
                    continue
                full = self._path(o["Key"])
                parent = posixpath.dirname(full)
                dirs = []
                while parent not in seen and len(parent) > len(base) and parent != "/":
                    seen.add(parent)
                    dirs.append(parent)
                    parent = posixpath.dirname(parent)
                for d in reversed(dirs):
                    yield FileInfo(d, 0, o["LastModified"], True)
                yield FileInfo(full, int(o["Size"]), o["LastModified"], False)
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                break
        if not found and path != "/":
            raise PathNotFoundError(path)


