"""The answer to a client of a fill in the leader's worker: the staging file's bytes sent by the
kernel (``sendfile``, the ``pyreg.sendfile`` extension of registry/http_protocol.py) as the pump
writes them, never through Python.

A client is usually slower than the fill (it hashes and writes what it gets), so most of what it
gets is already in the staging file by the time it asks; sending it with sendfile saves the read
into Python and the write back out (~0.2 s of CPU per 256 MiB). ``Fill.stream(spans=True)`` keeps
every guarantee of the streamed answer: the last byte only once the digest is verified, and an
answer cut short when the fill fails. Where the extension is missing (TLS, tests' ASGI transport),
or too many answers use it at once, the streamed answer is used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from pyreg.registry import zerocopy
from pyreg.registry.mirror.fill import Fill, FillError, Span

log = logging.getLogger("pyreg.mirror")

MAX_AT_ONCE: Final = 16  # of the sendfile pool's threads (shared with trusted blobs)
_busy = 0


def fill_response(fill: Fill, scope: Scope, headers: dict[str, str]) -> Any:
    """The 200 answer with the blob's bytes as the fill gets them."""
    if zerocopy.supported(scope) and fill.spans_possible() and _busy < MAX_AT_ONCE:
        return SpansResponse(fill, headers)

    async def body() -> AsyncIterator[bytes | memoryview]:
        try:
            async for part in fill.stream():
                yield part
        except FillError as e:
            log.error("mirror: answer for blob %s cut short: %s", fill.digest, e)
            raise

    return StreamingResponse(body(), headers=headers)


class SpansResponse:
    def __init__(self, fill: Fill, headers: dict[str, str]) -> None:
        self.fill = fill
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        global _busy
        _busy += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async with contextlib.aclosing(self.fill.stream(spans=True)) as parts:
                async for part in parts:
                    if isinstance(part, Span):
                        await send({"type": zerocopy.EXTENSION, "fd": part.fd, "offset": part.offset,
                                    "count": part.count})
                    else:
                        await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except FillError as e:  # the connection is closed short of the Content-Length
            log.error("mirror: answer for blob %s cut short: %s", self.fill.digest, e)
            raise
        finally:
            _busy -= 1
