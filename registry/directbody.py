"""Upload bodies received straight from the socket into reused buffers, by a thread.

Through ASGI a pushed blob costs the event loop most of its time: uvloop allocates a new bytes
object for every socket read, the HTTP parser hands each piece on, every piece is an ASGI
message, flow control pauses and resumes the transport, and the hash-and-write work leaves the
loop batch by batch. For a body with a Content-Length on plain HTTP, ``pyreg serve``'s protocol
(registry/http_protocol.py) offers the ASGI extension ``pyreg.directbody``: when the upload is
ready to store the body (its lock held, its offset checked), ``DirectBody.open`` asks the protocol
for the rest of it. The protocol hands over the body bytes its parser already has, stops reading
the connection, and gives a ``SocketBody`` whose ``readinto`` reads the socket (a duplicate of
its descriptor, so a closed connection never lets a reused descriptor number be read), never past
the announced length, so a pipelined next request stays in the socket for the parser.

``pump`` then runs in one thread: it fills a few reused buffers in turn, writes each to the
upload's file and meanwhile has a second thread hash it (hashlib and the system calls release the
GIL, so receiving, writing and hashing use both CPUs). A body cut short still stores and hashes
everything that arrived. A client that sends nothing for ``stall`` seconds (``http.headertimeout``)
is cut off as one that closed. When the body is complete the protocol makes its parser ready for
the next request on the connection and reads again; otherwise the connection closes after the
answer.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import Scope

from pyreg.storage.digest import Hasher

EXTENSION = "pyreg.directbody"
BUFFER = 1 << 20  # one step of the pipeline: received, then written while hashed
BUFFERS = 4  # per upload: one being received, up to three being hashed
_POLL_MS = 200  # how often a waiting read looks whether the connection was lost
_SPARE_SETS = 1  # buffer sets kept for the next uploads (memory touched once: no new page faults)
# A slow client (docker gzips a layer as it pushes it: ~40 MB/s) would wake the reading thread for
# every segment that arrives; once a body is large, a wait asks the kernel to wake it only when
# _LOWAT bytes are there (SO_RCVLOWAT), or after _LOWAT_WAIT_MS, whichever comes first (the end
# of a chunked body is not known in advance, so that wait stays short).
_LOWAT = 256 * 1024
_LOWAT_AFTER = 1 << 20  # body bytes received before waits are batched (small bodies never wait)
_LOWAT_WAIT_MS = 4


class BodyStalled(ClientDisconnect):
    """The client sent no byte of the body for the stall deadline."""


class SocketBody:
    """The rest of one request body on a non-blocking socket (see the module docstring).

    ``readinto`` blocks and is called from one thread; ``finish`` is called once, on the event
    loop, when the upload has done with it.
    """

    def __init__(self, fd: int | None, first: bytes, remaining: int, lost: threading.Event,
                 stall: float, done: Callable[[SocketBody], None]) -> None:
        self._fd = fd  # a duplicate, ours to close (None: the parser had the whole body)
        self.from_socket = fd is not None
        self._first = memoryview(first)
        self.remaining = remaining  # bytes still to read from the socket
        self.received = len(first)
        self._lost = lost
        self._stall = stall
        self._done = done
        self.failed = False  # the client went away or stalled: the connection cannot go on
        self._cancelled = False
        self._lowat = 1  # the socket's SO_RCVLOWAT as this body set it

    def cancel(self) -> None:
        """The request was cancelled: ``readinto`` stops at its next wait."""
        self._cancelled = True

    @property
    def complete(self) -> bool:
        return self.remaining == 0 and not self._first

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` next body bytes into ``view``; 0 at the body's end. Raises
        ClientDisconnect when the client closes or resets early, BodyStalled when it stalls."""
        if self._first:
            n = min(len(view), len(self._first))
            view[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        if self.remaining == 0 or not len(view):
            return 0
        assert self._fd is not None
        want = view[:min(len(view), self.remaining)]
        deadline: float | None = None
        poller: Any = None
        while True:
            try:
                n = os.readv(self._fd, [want])
            except BlockingIOError:
                n = -1
            except OSError as e:  # reset by the peer
                self.failed = True
                raise ClientDisconnect(str(e)) from None
            if n == 0:
                self.failed = True
                raise ClientDisconnect("the client closed the connection before the body ended")
            if n > 0:
                self.remaining -= n
                self.received += n
                return n
            if self._lost.is_set() or self._cancelled:
                self.failed = True
                raise ClientDisconnect("connection lost")
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._stall
                poller = select.poll()
                poller.register(self._fd, select.POLLIN)
            elif now >= deadline:
                self.failed = True
                raise BodyStalled(f"no body bytes for {self._stall:g} s")
            wait = min(_POLL_MS, max(1, int((deadline - now) * 1000)))
            lowat = min(_LOWAT, self.remaining) if self.received >= _LOWAT_AFTER else 1
            if lowat != self._lowat:
                self._set_lowat(lowat)
            if lowat > 1:
                wait = min(wait, _LOWAT_WAIT_MS)
            poller.poll(wait)

    def _set_lowat(self, value: int) -> None:
        assert self._fd is not None
        sock = socket.socket(fileno=self._fd)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, value)
            self._lowat = value
        except OSError:
            pass
        finally:
            sock.detach()

    def close_fd(self) -> None:
        if self._lowat != 1 and self._fd is not None:
            self._set_lowat(1)  # the protocol reads the connection again: every byte wakes it
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def finish(self) -> None:
        """Give the connection back to the protocol (on the event loop, once)."""
        self.close_fd()
        done, self._done = self._done, None  # type: ignore[assignment]
        if done is not None:
            done(self)


class DirectBody:
    """A request body that may be received directly (``open``), else read as the ASGI stream."""

    def __init__(self, scope: Scope, stream: AsyncIterator[bytes]) -> None:
        self.scope = scope
        self.stream = stream

    def open(self) -> SocketBody | None:
        """The body as a SocketBody, or None when the server does not offer it (or no longer can:
        the stream was read already)."""
        ext = (self.scope.get("extensions") or {}).get(EXTENSION)
        if not ext:
            return None
        body: SocketBody | None = ext["open"]()
        return body


def offered(scope: Scope) -> bool:
    return bool((scope.get("extensions") or {}).get(EXTENSION))


_spares: list[list[bytearray]] = []
_spares_lock = threading.Lock()


def _buffers() -> list[bytearray]:
    with _spares_lock:
        if _spares:
            return _spares.pop()
    return [bytearray(BUFFER) for _ in range(BUFFERS)]


def _give_back(buffers: list[bytearray]) -> None:
    with _spares_lock:
        if len(_spares) < _SPARE_SETS:
            _spares.append(buffers)


def _fill(body: SocketBody, view: memoryview) -> tuple[int, BaseException | None]:
    """Bytes read into ``view`` until it is full or the body ends, and the error that stopped it."""
    filled = 0
    try:
        while filled < len(view):
            n = body.readinto(view[filled:])
            if n == 0:
                break
            filled += n
    except ClientDisconnect as e:
        return filled, e
    return filled, None


def pump(body: SocketBody, write: Callable[[memoryview], None] | None, hasher: Hasher | None) -> int:
    """Receive the whole body: each buffer is written by this thread while another hashes it.

    Returns the bytes received. What arrived before a disconnect is written and hashed, then the
    ClientDisconnect is raised. Blocking: run it in a thread.
    """
    buffers = _buffers()
    hashing: deque[tuple[Future[None], int]] = deque()  # (hash of a buffer, its bytes), in order
    pool = ThreadPoolExecutor(1, thread_name_prefix="pyreg-hash") if hasher is not None else None
    total = 0
    index = 0
    try:
        while True:
            while hashing and (len(hashing) >= BUFFERS or hashing[0][0].done()):
                hashing.popleft()[0].result()  # the oldest buffer is hashed: it may be filled again
            view = memoryview(buffers[index])
            index = (index + 1) % BUFFERS
            n, error = _fill(body, view)
            if n:
                part = view[:n]
                if pool is not None and hasher is not None:
                    hashing.append((pool.submit(hasher.update, part), n))  # type: ignore[arg-type]
                if write is not None:
                    write(part)
                total += n
            if error is not None:
                raise error
            if n < len(view):
                return total
    finally:
        try:
            while hashing:
                hashing.popleft()[0].result()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            _give_back(buffers)
