"""Blob pull (GET/HEAD with Range), blob delete, and every way to push one."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from pyreg.registry import zerocopy
from pyreg.registry.directbody import DirectBody
from pyreg.registry.errors import (
    RegistryError,
    blob_unknown,
    digest_invalid,
    unsupported,
    upload_unknown,
)
from pyreg.registry.layout import TRUST_MIN_BYTES, blob_data_path
from pyreg.registry.proxy import accel_redirect
from pyreg.registry.routes.common import (
    BASE_HEADERS,
    Registry,
    check_name,
    content_length,
    location,
    parse_content_range,
    parse_digest,
    upload_range,
)
from pyreg.registry.uploads import (
    RangeMismatchError,
    UploadBusyError,
    UploadDigestMismatchError,
    UploadSizeMismatchError,
    UploadUnknownError,
)
from pyreg.storage.digest import Digest, is_supported_algorithm
from pyreg.storage.errors import InvalidOffsetError, LockLostError, PathNotFoundError
from pyreg.storage.numbers import parse_uint

_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


UNSATISFIABLE = (-1, -1)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single range, None to serve it all, UNSATISFIABLE: 416."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # not a form we honour: RFC 9110 says ignore it
    # more digits than storage.numbers allows is more bytes than any blob has
    if not m.group(1):  # suffix: the last N bytes
        length = parse_uint(m.group(2))
        if length == 0:
            return UNSATISFIABLE
        return max(size - (size if length is None else length), 0), size - 1
    start = parse_uint(m.group(1))
    if start is None:
        return UNSATISFIABLE
    end = parse_uint(m.group(2)) if m.group(2) else size - 1
    end = size - 1 if end is None else end
    if start >= size or end < start:
        return UNSATISFIABLE
    return start, min(end, size - 1)


async def blob_get(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    digest = parse_digest(reference)
    where = registry.mirror.route(name) if registry.mirror is not None else None
    if where is not None:  # a mirrored name: the pull-through cache (registry/mirror/)
        return await registry.mirror.blob(request, registry, name, digest, where)
    size = await registry.layout.repo_blob_size(name, digest)
    if size is None:
        raise blob_unknown(str(digest))
    return await serve_blob(request, registry, str(digest), blob_data_path(digest), size)


async def serve_blob(request: Request, registry: Registry, digest: str, path: str, size: int) -> Response:
    """Answer a blob GET/HEAD; the hook where redirects and X-Accel-Redirect hand the body off.

    Order: HEAD answers from the stat; a driver redirect URL (S3 presigned) comes next; then
    nginx's X-Accel-Redirect when configured; else the body streams from the driver.
    """
    headers = {
        **BASE_HEADERS,
        "Docker-Content-Digest": digest,
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    wanted = _byte_range(request.headers.get("range"), size)
    if wanted == UNSATISFIABLE:
        headers["Content-Range"] = f"bytes */{size}"
        raise RegistryError("BLOB_UNKNOWN", f"range {request.headers.get('range')!r} not satisfiable "
                            f"for a blob of {size} bytes", status=416, headers=headers)
    start, end = (0, size - 1) if wanted is None else wanted
    status = 200 if wanted is None else 206
    length = end - start + 1 if size else 0
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    url = await registry.driver.redirect_url(path, "GET")
    if url:
        return Response(b"", status_code=307, headers={**BASE_HEADERS, "Location": url,
                                                        "Docker-Content-Digest": digest})
    accel = accel_redirect(registry.config.proxy, registry.driver, path, headers)
    if accel is not None:
        return accel
    # The version token of a whole blob, before it is opened: one verified at this version, by
    # this process or another (registry/layout.py: Layout.trusts), is served without hashing it.
    # Small blobs are just hashed.
    whole = status == 200
    version = None
    if whole and length >= TRUST_MIN_BYTES:
        version = await registry.layout.served_version(parse_digest(digest))
        if await registry.layout.trusts(parse_digest(digest), version):
            answer = _sendfile_answer(request, registry, parse_digest(digest), path, length, version,
                                      headers)
            if answer is not None:
                return answer
    return await _streamed(registry, digest, path, start, length, status, version, headers)


async def _streamed(registry: Registry, digest: str, path: str, start: int, length: int, status: int,
                    version: str | None, headers: dict[str, str]) -> Response:
    """The body read from the driver and passed through ``Layout.checked_stream``."""
    chunks = registry.driver.reader(path, start, length)
    try:
        first = await anext(chunks) if length else b""
    except StopAsyncIteration:
        first = b""
    except (PathNotFoundError, InvalidOffsetError):  # deleted or replaced since the (cached) stat
        await registry.layout.forget_blob(parse_digest(digest))
        raise blob_unknown(digest) from None

    async def stored() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            if length:
                async for chunk in chunks:
                    yield chunk
        finally:  # a client that goes away must not leave the file open until GC
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    # Exactly ``length`` bytes, and for a whole blob its digest, or the answer is cut short.
    body = registry.layout.checked_stream(parse_digest(digest), stored(), length, status == 200, version)
    return StreamingResponse(body, status_code=status, headers=headers)


def _sendfile_answer(request: Request, registry: Registry, digest: Digest, path: str, length: int,
                     version: str | None, headers: dict[str, str]) -> Response | None:
    """A whole blob on local disk trusted at ``version`` (the caller asked Layout.trusts), sent by
    the kernel (registry/zerocopy.py); None where sendfile is not offered."""
    if version is None or registry.driver.name != "filesystem" or not zerocopy.supported(request.scope):
        return None
    local: str = registry.driver.local_path(path)  # type: ignore[attr-defined]

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        """The file opened is not the trusted version: streamed and hashed instead."""
        try:
            answer = await _streamed(registry, str(digest), path, 0, length, 200, None, headers)
        except RegistryError as e:  # gone since the stat: this is past the route's error handling
            answer = e.response()
        await answer(scope, receive, send)

    return zerocopy.TrustedBlobResponse(registry.layout, digest, local, version, length, headers,
                                        fallback)  # type: ignore[return-value]


async def blob_delete(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    digest = parse_digest(reference)
    if not registry.config.storage.delete.enabled:
        raise unsupported("deletes are disabled (storage.delete.enabled is false)")
    if not await registry.layout.unlink_blob(name, digest):
        raise blob_unknown(str(digest))
    return Response(b"", status_code=202, headers={**BASE_HEADERS, "Docker-Content-Digest": str(digest)})


# -- uploads -------------------------------------------------------------------------------------


def _upload_headers(request: Request, registry: Registry, name: str, upload_id: str,
                    size: int) -> dict[str, str]:
    return {
        **BASE_HEADERS,
        "Location": location(request, registry, f"/v2/{name}/blobs/uploads/{upload_id}"),
        "Range": upload_range(size),
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _created(request: Request, registry: Registry, name: str, digest: str) -> Response:
    return Response(b"", status_code=201, headers={
        **BASE_HEADERS,
        "Location": location(request, registry, f"/v2/{name}/blobs/{digest}"),
        "Docker-Content-Digest": digest,
        "Content-Length": "0",
    })


async def upload_start(request: Request, registry: Registry, name: str, _: str) -> Response:
    """POST: a new session, a monolithic push (``digest=``) or a cross-repo mount (``mount=``)."""
    check_name(name)
    query = request.query_params
    algorithm = query.get("digest-algorithm") or "sha256"
    if not is_supported_algorithm(algorithm):
        raise digest_invalid(f"unsupported digest algorithm {algorithm[:50]!r}")
    mount = query.get("mount")
    if mount:
        digest = parse_digest(mount)
        source = query.get("from")
        mounted = False
        if await registry.layout.repo_blob_size(name, digest) is not None:
            mounted = True
        elif source:
            try:
                check_name(source)
            except RegistryError:
                source = None
            if source and await registry.layout.repo_blob_size(source, digest) is not None:
                await registry.layout.link_blob(name, digest)
                mounted = True
        if mounted:
            return _created(request, registry, name, str(digest))
    elif query.get("digest"):
        digest = parse_digest(query["digest"])
        upload_id = await registry.uploads.start(name, digest.algorithm)
        try:
            await _finish(request, registry, name, upload_id, digest, _content_length(request),
                          body=_body(request, registry))
        except BaseException:
            with contextlib.suppress(UploadBusyError):
                await registry.uploads.cancel(name, upload_id)
            raise
        return _created(request, registry, name, str(digest))
    upload_id = await registry.uploads.start(name, algorithm)
    return Response(b"", status_code=202, headers=_upload_headers(request, registry, name, upload_id, 0))


def _content_length(request: Request) -> int | None:
    return content_length(request)


def _body(request: Request, registry: Registry) -> AsyncIterator[bytes] | DirectBody:
    """The request body as uploads read it: on local disk one the server may hand to a thread
    (registry/directbody.py); on other drivers the ASGI stream."""
    if registry.driver.name == "filesystem":
        return DirectBody(request.scope, request.stream())
    return request.stream()


def _busy(request: Request, registry: Registry, name: str, upload_id: str) -> RegistryError:
    """Another request holds the session: refused, never interleaved (no Range: it is moving)."""
    headers = _upload_headers(request, registry, name, upload_id, 0)
    del headers["Range"], headers["Content-Length"]  # the error body sets its own length
    return RegistryError("BLOB_UPLOAD_INVALID", "the upload is busy with another request; "
                         "ask for its status and retry", status=416, headers=headers)


async def _session_size(request: Request, registry: Registry, name: str, upload_id: str) -> int:
    try:
        return await registry.uploads.size(name, upload_id)
    except UploadUnknownError:
        raise upload_unknown(upload_id[:200]) from None
    except UploadBusyError:
        raise _busy(request, registry, name, upload_id) from None


async def _range_start(request: Request, registry: Registry, name: str, upload_id: str) -> int | None:
    """Where Content-Range says the body starts (None without one); 416 when it is malformed."""
    raw_range = request.headers.get("content-range")
    if not raw_range:
        return None
    parsed = parse_content_range(raw_range)
    length = _content_length(request)
    if parsed is None or (length is not None and length != parsed[1] - parsed[0] + 1):
        size = await _session_size(request, registry, name, upload_id)
        raise RegistryError("BLOB_UPLOAD_INVALID", f"invalid Content-Range {raw_range[:100]!r}",
                            status=416, headers=_upload_headers(request, registry, name, upload_id, size))
    return parsed[0]


def _range_mismatch(request: Request, registry: Registry, name: str, upload_id: str,
                    e: RangeMismatchError) -> RegistryError:
    raw_range = request.headers.get("content-range")
    return RegistryError(
        "BLOB_UPLOAD_INVALID",
        f"Content-Range {raw_range!r} does not continue the upload, which holds {e.size} bytes",
        status=416, headers=_upload_headers(request, registry, name, upload_id, e.size))


async def upload_patch(request: Request, registry: Registry, name: str, upload_id: str) -> Response:
    check_name(name)
    start = await _range_start(request, registry, name, upload_id)
    try:
        size = await registry.uploads.append(name, upload_id, _body(request, registry), start)
    except RangeMismatchError as e:
        raise _range_mismatch(request, registry, name, upload_id, e) from None
    except UploadUnknownError:
        raise upload_unknown(upload_id[:200]) from None
    except (UploadBusyError, LockLostError):
        raise _busy(request, registry, name, upload_id) from None
    return Response(b"", status_code=202, headers=_upload_headers(request, registry, name, upload_id, size))


async def upload_put(request: Request, registry: Registry, name: str, upload_id: str) -> Response:
    check_name(name)
    raw_digest = request.query_params.get("digest")
    if not raw_digest:
        raise digest_invalid("the digest query parameter is required to finish an upload")
    digest = parse_digest(raw_digest)
    start = await _range_start(request, registry, name, upload_id)
    has_body = (start is not None or bool(request.headers.get("content-length"))
                or bool(request.headers.get("transfer-encoding")))
    await _finish(request, registry, name, upload_id, digest,
                  body=_body(request, registry) if has_body else None, start=start)
    return _created(request, registry, name, str(digest))


async def _finish(request: Request, registry: Registry, name: str, upload_id: str, digest: Digest,
                  expected_size: int | None = None, body: AsyncIterator[bytes] | DirectBody | None = None,
                  start: int | None = None) -> None:
    """Append the last body (if any), then verify and store the blob."""
    try:
        await registry.uploads.finish(name, upload_id, digest, expected_size, body, start)
    except RangeMismatchError as e:
        raise _range_mismatch(request, registry, name, upload_id, e) from None
    except UploadUnknownError:
        raise upload_unknown(upload_id[:200]) from None
    except UploadDigestMismatchError as e:
        raise digest_invalid(str(e), str(digest)) from None
    except UploadSizeMismatchError as e:
        raise RegistryError("SIZE_INVALID", str(e)) from None
    except (UploadBusyError, LockLostError):
        raise _busy(request, registry, name, upload_id) from None


async def upload_status(request: Request, registry: Registry, name: str, upload_id: str) -> Response:
    check_name(name)
    size = await _session_size(request, registry, name, upload_id)
    return Response(b"", status_code=204, headers=_upload_headers(request, registry, name, upload_id, size))


async def upload_cancel(request: Request, registry: Registry, name: str, upload_id: str) -> Response:
    check_name(name)
    try:
        cancelled = await registry.uploads.cancel(name, upload_id)
    except UploadBusyError:
        raise _busy(request, registry, name, upload_id) from None
    if not cancelled:
        raise upload_unknown(upload_id[:200])
    return Response(b"", status_code=204, headers={**BASE_HEADERS, "Content-Length": "0"})
