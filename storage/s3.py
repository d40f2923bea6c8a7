"""The S3 driver: the registry:2 key layout under a root prefix in one bucket, on boto3.

Every blocking boto3 call runs in a bounded thread pool owned by the driver, so the event loop
never waits on the network and the number of concurrent S3 requests stays bounded.

Resumable writers keep *all* their state in S3, never in process memory, so a writer opened with
``append=True`` in another process (another replica) continues where the last one stopped:

- the bytes live in one in-progress multipart upload for the key, found again with
  ListMultipartUploads + ListParts (as Distribution's s3-aws driver does);
- every part is at least S3's 5 MiB minimum; a shorter tail left by ``close`` is stored in a
  pending object beside the key (``<key>#pending``, a name no driver path can have), tagged with
  the upload id and the part count it follows. A tail is valid only while the upload still has
  exactly that many parts, so a crash between "upload a part" and "rewrite the tail" can never
  count bytes twice: UploadPart is the commit point.
- ``commit`` uploads the tail as the last part and completes the upload; nothing is downloaded.

``move`` is a server-side copy (multipart UploadPartCopy above 5 GiB) then a delete, and readers
stream one ranged GET in large chunks, resuming with a new ranged GET pinned to the same ETag
if the connection drops. Nothing holds a whole blob in memory: a writer buffers at most one part.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import posixpath
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from storage.driver import FileInfo, check_path
from storage.errors import InvalidOffsetError, PathNotFoundError, StorageError

T = TypeVar("T")

MIN_PART = 5 << 20  # S3's minimum size of every part but the last
MAX_COPY = 5 << 30  # the largest single CopyObject / UploadPartCopy
MAX_PARTS = 10000
DEFAULT_CHUNK = 10 << 20
READ_CHUNK = 1 << 20
PENDING = "#pending"  # '#' is outside the driver-path alphabet, so this never names a path


@dataclass(frozen=True, slots=True)
class S3Config:
    """The driver's settings, named as in Distribution's s3 storage section."""

    bucket: str
    region: str = "us-east-1"
    regionendpoint: str | None = None
    forcepathstyle: bool = False
    rootdirectory: str = "/"
    accesskey: str | None = None
    secretkey: str | None = None
    sessiontoken: str | None = None
    secure: bool = True  # https to AWS when there is no regionendpoint
    chunksize: int = DEFAULT_CHUNK
    redirect: bool = False
    redirect_expiry: int = 1200  # seconds
    max_workers: int = 16
    multipart_copy_threshold: int = MAX_COPY
    multipart_copy_chunksize: int = 1 << 30


def _is_missing(exc: botocore.exceptions.ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(slots=True)
class _Part:
    number: int
    etag: str
    size: int


class S3Writer:
    """Append writer onto one multipart upload; see the module docstring for where state lives."""

    def __init__(self, driver: S3Driver, key: str, upload_id: str | None, parts: list[_Part],
                 tail: bytes, base_size: int = 0) -> None:
        self._d = driver
        self._key = key
        self._upload_id = upload_id
        self._parts = parts
        self._buffer = bytearray(tail)
        # Bytes of an already committed object this writer appends to, not yet in the upload.
        self._base_size = base_size
        self._size = sum(p.size for p in parts) + len(tail) + base_size
        self._tail_stored = bool(tail)
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("writer is closed")
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
        """Start the upload with the committed object this writer appends to (server side)."""
        size = self._base_size
        count = max(1, -(-size // MAX_COPY))
        step = -(-size // count)
        for start in range(0, size, step):
            end = min(size, start + step) - 1
            resp = await self._d._call(
                self._d.client.upload_part_copy, Bucket=self._d.bucket, Key=self._key,
                UploadId=self._upload_id, PartNumber=len(self._parts) + 1,
                CopySource={"Bucket": self._d.bucket, "Key": self._key},
                CopySourceRange=f"bytes={start}-{end}")
            self._parts.append(_Part(len(self._parts) + 1, str(resp["CopyPartResult"]["ETag"]),
                                     end - start + 1))
        self._base_size = 0

    async def _upload_part(self, size: int) -> None:
        upload_id = await self._ensure_upload()
        body = bytes(self._buffer[:size])
        number = (self._parts[-1].number if self._parts else 0) + 1
        if number > MAX_PARTS:
            raise StorageError(f"{self._key}: more than {MAX_PARTS} parts; raise chunksize")
        resp = await self._d._call(self._d.client.upload_part, Bucket=self._d.bucket, Key=self._key,
                                   UploadId=upload_id, PartNumber=number, Body=body)
        self._parts.append(_Part(number, str(resp["ETag"]), len(body)))
        del self._buffer[:size]

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        if len(self._buffer) >= MIN_PART:
            await self._upload_part(len(self._buffer))
        if self._buffer:
            upload_id = await self._ensure_upload()
            await self._d._call(
                self._d.client.put_object, Bucket=self._d.bucket, Key=self._key + PENDING,
                Body=bytes(self._buffer),
                Metadata={"upload": upload_id, "parts": str(len(self._parts))})
        elif self._tail_stored:
            # The tail went into a part; the stored copy is stale by its part count already.
            await self._d._delete_keys([self._key + PENDING])
        self._buffer = bytearray()

    async def cancel(self) -> None:
        self._done = True
        self._buffer = bytearray()
        await self._d._abort_uploads(self._key, exact=True)
        await self._d._delete_keys([self._key, self._key + PENDING])

    async def commit(self) -> None:
        if self._done:
            raise ValueError("writer is closed")
        self._done = True
        d = self._d
        if self._upload_id is None and not self._base_size:
            # Everything is in the buffer (less than one part): one plain PUT.
            await d._call(d.client.put_object, Bucket=d.bucket, Key=self._key, Body=bytes(self._buffer))
        elif self._upload_id is None and not self._buffer:
            pass  # appended nothing to a committed object: it stays as it is
        else:
            upload_id = await self._ensure_upload()
            if self._buffer or not self._parts:
                await self._upload_part(len(self._buffer))
            await d._call(
                d.client.complete_multipart_upload, Bucket=d.bucket, Key=self._key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in self._parts]})
        self._buffer = bytearray()
        await d._delete_keys([self._key + PENDING])


class S3Driver:
    """Stores everything in one bucket under ``rootdirectory``, laid out like Distribution's."""

    name = "s3"

    def __init__(self, config: S3Config) -> None:
        if config.chunksize < MIN_PART:
            raise ValueError(f"s3 chunksize must be at least {MIN_PART} bytes")
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
                s3={"addressing_style": "path" if config.forcepathstyle else "auto"}))

    @classmethod
    def from_config(cls, section: Any) -> S3Driver:
        """A driver from a ``storage.s3`` section: a mapping or a dataclass (registry/config.py)."""
        if dataclasses.is_dataclass(section) and not isinstance(section, type):
            section = dataclasses.asdict(section)
        return cls(s3_config_from_dict(dict(section)))

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
        head = await self._head(key)
        if head is None:
            raise PathNotFoundError(path)
        total = int(head["ContentLength"])
        if offset > total:
            raise InvalidOffsetError(f"offset {offset} is past the end of {path}")
        end = total if length is None else min(total, offset + length)
        etag = str(head["ETag"])
        pos, retries = offset, 0
        while pos < end:
            try:
                resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key,
                                        Range=f"bytes={pos}-{end - 1}", IfMatch=etag)
            except botocore.exceptions.ClientError as exc:
                if _is_missing(exc):
                    raise PathNotFoundError(path) from None
                raise
            body = resp["Body"]
            try:
                while pos < end:
                    try:
                        chunk = await self._call(body.read, min(READ_CHUNK, end - pos))
                    except (botocore.exceptions.BotoCoreError, OSError):
                        retries += 1
                        if retries > 3:
                            raise
                        break  # resume with a new ranged GET from pos
                    if not chunk:
                        break
                    pos += len(chunk)
                    yield chunk
            finally:
                body.close()

    async def writer(self, path: str, append: bool = False) -> S3Writer:
        key = self.key(path)
        if not append:
            await self._abort_uploads(key, exact=True)
            return S3Writer(self, key, None, [], b"")
        uploads = await self._uploads(key, exact=True)
        if not uploads:
            # Appending to a committed object (or to nothing). One of at least a part's size is
            # copied into the upload server side when needed; a smaller one is read back.
            head = await self._head(key)
            size = int(head["ContentLength"]) if head else 0
            if size >= MIN_PART:
                return S3Writer(self, key, None, [], b"", base_size=size)
            return S3Writer(self, key, None, [], await self.get_content(path) if size else b"")
        # The newest upload for the key (S3 lists them oldest first within a key; moto gives
        # every upload the same Initiated time, so the listing order breaks ties).
        oldest = datetime.min.replace(tzinfo=UTC)
        upload = max(enumerate(uploads), key=lambda iu: (iu[1].get("Initiated") or oldest, iu[0]))[1]
        upload_id = str(upload["UploadId"])
        pages = await self._call(self._paginate, "list_parts", Key=key, UploadId=upload_id)
        parts = sorted((_Part(int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
                        for page in pages for p in page.get("Parts", [])), key=lambda p: p.number)
        tail = b""
        try:
            resp = await self._call(self.client.get_object, Bucket=self.bucket, Key=key + PENDING)
            meta = resp.get("Metadata", {})
            if meta.get("upload") == upload_id and meta.get("parts") == str(len(parts)):
                tail = await self._call(resp["Body"].read)
            else:
                resp["Body"].close()
        except botocore.exceptions.ClientError as exc:
            if not _is_missing(exc):
                raise
        return S3Writer(self, key, upload_id, parts, tail)

    async def stat(self, path: str) -> FileInfo:
        if path != "/":
            head = await self._head(self.key(path))
            if head is not None:
                return FileInfo(path, int(head["ContentLength"]), head["LastModified"], False)
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
        if not self.config.redirect or method not in ("GET", "HEAD"):
            return None
        op = "get_object" if method == "GET" else "head_object"
        return str(await self._call(
            self.client.generate_presigned_url, op, Params={"Bucket": self.bucket, "Key": self.key(path)},
            ExpiresIn=self.config.redirect_expiry))

    async def walk(self, path: str) -> AsyncIterator[FileInfo]:
        prefix = self._dir_prefix(path)
        pages = await self._call(self._paginate, "list_objects_v2", Prefix=prefix)
        objects = [o for page in pages for o in page.get("Contents", [])]
        if not objects and path != "/":
            raise PathNotFoundError(path)
        base = "" if path == "/" else path
        seen: set[str] = set()
        for o in objects:
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


def s3_config_from_dict(section: dict[str, Any]) -> S3Config:
    """Build an S3Config from a Distribution-shaped ``storage.s3`` mapping."""
    redirect = section.get("redirect") or {}
    if isinstance(redirect, bool):
        redirect = {"enabled": redirect}
    expiry = redirect.get("expiry", 1200)
    return S3Config(
        bucket=str(section["bucket"]),
        region=str(section.get("region") or "us-east-1"),
        regionendpoint=section.get("regionendpoint") or None,
        forcepathstyle=bool(section.get("forcepathstyle", False)),
        rootdirectory=str(section.get("rootdirectory") or "/"),
        accesskey=section.get("accesskey") or None,
        secretkey=section.get("secretkey") or None,
        sessiontoken=section.get("sessiontoken") or None,
        secure=bool(section.get("secure", True)),
        chunksize=int(section.get("chunksize") or DEFAULT_CHUNK),
        redirect=bool(redirect.get("enabled", False)),
        redirect_expiry=max(1, parse_duration(expiry) if isinstance(expiry, str) else int(expiry)),
    )


def parse_duration(text: str) -> int:
    """Seconds in a Go-style duration such as ``20m``, ``1h30m`` or ``90s``."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0.0, ""
    for ch in text.strip():
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"bad duration: {text!r}")
    if number:
        total += float(number)
    return int(total)
