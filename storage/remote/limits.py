"""Every response body the client reads from a registry is bounded while it is read.

``BoundedTransport`` sits under the httpx client, so the bound holds for bodies read anywhere —
our calls, the auth flow's token responses, and the 401 and redirect bodies httpx reads itself.
A request names its bound in the ``pyreg_limit`` extension (bytes; default ``DEFAULT_LIMIT``);
``None`` means the caller streams the body raw and bounds it itself (blob downloads into a
writer that knows the descriptor's size) — for success answers only: an error or redirect body
is cut (silently: what is left is only ever a message) at ``ERROR_LIMIT``.

A request carrying a secret in its body (the OAuth2 refresh-token POST) names its origin in the
``pyreg_origin_only`` extension; httpx copies extensions to redirects and would resend the body on
a 307/308, so a hop to any other origin is refused here instead.

Content-Encoding is decoded here, by the bound (gzip and deflate; anything else is refused), and
the header removed, so a small compressed answer cannot unfold into gigabytes above us.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import httpx

from pyreg.storage.units import human

DEFAULT_LIMIT = 4 << 20          # a manifest's limit (Distribution's), and any small JSON answer
ERROR_LIMIT = 1 << 20            # error, 401 and redirect bodies
LIST_PAGE_LIMIT = 16 << 20       # one page of tags or catalog
ACCEPT_ENCODING = "gzip, deflate"
_DECODE_STEP = 64 << 10


class ResponseRefused(Exception):
    """A registry sent more than the client reads for that answer (or asked for something else
    the client refuses to do with a response); the message is one line."""


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}:{url.port or {'http': 80, 'https': 443}.get(url.scheme)}"


class _Decoder:
    """gzip / deflate with a bounded output per step, so one small input cannot expand at once."""

    def __init__(self, encoding: str) -> None:
        wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
        self._z = zlib.decompressobj(wbits[encoding])

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data:
            out = self._z.decompress(data, _DECODE_STEP)
            data = self._z.unconsumed_tail
            if out:
                yield out
            elif not data:
                break

    def flush(self) -> bytes:
        return self._z.flush()


class _BoundedStream(httpx.SyncByteStream):
    def __init__(self, inner: Any, limit: int, what: str, encoding: str | None, cut: bool) -> None:
        self.inner = inner
        self.cut = cut
        self.limit = limit
        self.what = what
        self.decoder = _Decoder(encoding) if encoding else None

    def _count(self, seen: int) -> None:
        if seen > self.limit:
            raise ResponseRefused(f"{self.what}: the registry sent more than {human(self.limit)}; "
                                   "refusing to read further")

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self.inner:
            parts = self.decoder.decode(chunk) if self.decoder else (chunk,)
            for part in parts:
                if self.cut and seen + len(part) > self.limit:
                    yield part[:self.limit - seen]
                    return
                seen += len(part)
                self._count(seen)
                yield part
        if self.decoder:
            tail = self.decoder.flush()
            seen += len(tail)
            self._count(seen)
            if tail:
                yield tail

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


class BoundedTransport(httpx.BaseTransport):
    """Wraps every response body in the request's bound (see the module docstring)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        only = request.extensions.get("pyreg_origin_only")
        if only is not None and _origin(request.url) != _origin(httpx.URL(only)):
            raise ResponseRefused(f"{only} redirected a request carrying credentials to "
                                   f"{_origin(request.url)}; refusing to follow")
        response = self.inner.handle_request(request)
        limit = request.extensions.get("pyreg_limit", DEFAULT_LIMIT)
        ok = 200 <= response.status_code < 300
        if not ok:
            limit = min(limit, ERROR_LIMIT) if limit is not None else ERROR_LIMIT
        elif limit is None or request.method == "HEAD":
            return response  # streamed raw by a caller that bounds it
        encoding = response.headers.get("content-encoding", "").strip().lower() or None
        if encoding == "identity":
            encoding = None
        if encoding not in (None, "gzip", "x-gzip", "deflate"):
            response.close()
            raise ResponseRefused(f"{request.method} {request.url}: unsupported Content-Encoding "
                                   f"{encoding!r} (pyreg accepts {ACCEPT_ENCODING})")
        declared = response.headers.get("content-length", "")
        what = f"{request.method} {request.url.copy_with(query=None)}"
        if ok and encoding is None and declared.isdigit() and int(declared) > limit:
            response.close()
            raise ResponseRefused(f"{what}: the registry announced {human(int(declared))}, more "
                                   f"than the {human(limit)} pyreg reads for this answer")
        headers = [(k, v) for k, v in response.headers.multi_items()
                   if k.lower() not in ("content-encoding", "content-length")
                   or (encoding is None and ok and k.lower() == "content-length")]
        return httpx.Response(response.status_code, headers=headers,
                              stream=_BoundedStream(response.stream, limit, what, encoding, cut=not ok),
                              extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()
