"""Blob bodies sent from the file to the socket by the kernel (``sendfile``), never through Python.

A whole blob that was verified (by this process, or another on the same storage: its record) and
whose file is unchanged (registry/layout.py: Layout.trusts) needs no hashing, so nothing in Python
has to see its bytes. ``pyreg serve``'s protocol (registry/http_protocol.py) offers the ASGI
extension ``pyreg.sendfile``: the app sends ``{"type": "pyreg.sendfile", "fd": …, "offset": …,
"count": …}`` after its response start and the protocol has the kernel copy those bytes of the
open file to the connection, in a thread of its own pool (the loop never blocks; a slow client
holds a thread waiting in ``poll``, not a buffer). When every thread is busy, or under another
server (tests' ASGI transport), the body streams through Python as before.

The file is opened once, and what is sent is what that descriptor reads: it must carry the
trusted version token when opened, and still carry it before the last MiB goes out, or the
answer is cut short (the bytes changed under it) and the blob is checked, as a hashed GET does.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from pyreg.storage.digest import Digest
from pyreg.storage.filesystem import file_token

if TYPE_CHECKING:
    from pyreg.registry.layout import Layout

EXTENSION = "pyreg.sendfile"
THREADS = 32  # transfers at once per worker; more stream through Python
TAIL = 1 << 20  # held back until the version is checked again
_POLL_MS = 500

_pool: ThreadPoolExecutor | None = None
_busy = 0


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="pyreg-sendfile")
    return _pool


def sendfile_blocking(sock: int, fd: int, offset: int, count: int, cancelled: threading.Event) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` to the non-blocking socket ``sock``,
    waiting in ``poll`` while it is full; raises OSError when the peer goes away (or
    ``cancelled`` is set: the connection was lost) and EOFError when the file ends early."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    while count > 0:
        try:
            sent = os.sendfile(sock, fd, offset, count)
        except BlockingIOError:
            sent = -1
        if sent == 0:
            raise EOFError("the file ended before its announced length")
        if sent > 0:
            offset += sent
            count -= sent
            continue
        while not poller.poll(_POLL_MS):
            if cancelled.is_set():
                raise OSError(errno.ECONNRESET, "connection lost")
        if cancelled.is_set():
            raise OSError(errno.ECONNRESET, "connection lost")


async def send_file(sock: int, fd: int, offset: int, count: int, cancelled: threading.Event) -> None:
    """``sendfile_blocking`` in the sendfile pool."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_executor(), sendfile_blocking, sock, fd, offset, count, cancelled)


def supported(scope: Scope) -> bool:
    """The server offers ``pyreg.sendfile`` and a thread is free for one more transfer."""
    return EXTENSION in (scope.get("extensions") or {}) and _busy < THREADS


def _open_at(path: str, version: str) -> int:
    """``path`` opened for reading if what it opens is at ``version``, else -1: one trip to a
    thread before the first byte, not one for the open and one for the fstat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        if file_token(os.fstat(fd)) == version:
            return fd
    except OSError:
        pass
    os.close(fd)
    return -1


class TrustedBlobResponse:
    """The 200 answer of a whole blob served from its file with sendfile (see module docstring).

    ``fallback`` is the ordinary streaming answer, used when the file opened is not the trusted
    version (changed since the stat): it hashes what it sends.
    """

    def __init__(self, layout: Layout, digest: Digest, local: str, version: str, length: int,
                 headers: dict[str, str], fallback: object) -> None:
        self.layout = layout
        self.digest = digest
        self.local = local
        self.version = version
        self.length = length
        self.headers = headers
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        global _busy
        from pyreg.registry.layout import CorruptBlobError, trusted_get_served

        fd = await asyncio.to_thread(_open_at, self.local, self.version)
        if fd < 0:
            await self.fallback(scope, receive, send)  # type: ignore[operator]
            return
        _busy += 1
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                    for k, v in self.headers.items()]})
            head = max(self.length - TAIL, 0)
            if head:
                await send({"type": EXTENSION, "fd": fd, "offset": 0, "count": head})
            if file_token(await asyncio.to_thread(os.fstat, fd)) != self.version:
                await self.layout.changed_while_served(self.digest, head, self.length)
                raise CorruptBlobError(str(self.digest))
            if self.length > head:
                await send({"type": EXTENSION, "fd": fd, "offset": head, "count": self.length - head})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            trusted_get_served()
        finally:
            _busy -= 1
            os.close(fd)
