"""uvicorn's httptools protocol with bounded work per connection (``pyreg serve`` uses it).

Stock uvicorn with httptools keeps a request's line and headers in memory however large they are
(llhttp has no limit of its own: a 64 MiB header is read, answered and its memory kept), sets no
deadline on a request that never finishes its headers, and arms its keep-alive timer only after a
response, so a client that sends one byte every few seconds, or nothing at all, holds a file
descriptor for ever. ``BoundedHttpToolsProtocol`` adds, per worker process:

- ``http.maxheaderbytes``: the request line and headers together; more answers ``431`` (as Go's
  net/http and so Distribution do) and closes. Counted on the raw bytes before the parser buffers
  them, so no more than the limit (plus one socket read) is ever held.
- ``http.headertimeout``: one deadline, from the connection's start or a request's first byte,
  for the whole request line and headers; it is not reset by each byte, so trickling clients are
  closed (``408`` when they had sent something). A head records when it started (one clock read)
  and one sweep per worker, about every second, closes the heads past their deadline: a timer per
  request cost a measurable share of a small request's time. It is also the longest silence
  allowed inside an upload body received directly (``pyreg.directbody``, below).
- ``http.idletimeout``: uvicorn's keep-alive timeout between requests.
- ``http.maxconnections``: open connections of this worker. At the cap a new connection closes
  the one that has waited longest for a request head (an idle keep-alive or a half-sent head),
  so a flood of half-open connections cannot lock real clients out; when every connection is busy
  with a request, the new one gets ``503`` instead.

Savings on bodies: a request body piece is handed to the app as the bytes object the parser
made (uvicorn copies each piece twice: into a bytearray, then out of it); on plain HTTP the
``pyreg.sendfile`` ASGI extension lets a route have the kernel send an open file's bytes
(registry/zerocopy.py: trusted blobs), and ``pyreg.directbody`` lets a blob upload with a
Content-Length receive the rest of its body from the socket in a thread (registry/directbody.py),
after which a fresh parser takes the next request of the connection. A chunked upload body
(``Transfer-Encoding: chunked``, as docker and containerd send a layer) is kept from the parser
altogether: the parser is fed exactly up to the end of each head (``_feed_head``), the bytes
after an upload's head are held with reading paused, and either a thread decodes them and the
rest of the body (registry/chunkedbody.py), handing back any bytes it read past the body's end,
or, when the upload reads the ASGI stream or answers first, the parser gets them after all.

Errors are written with a lingering close (write side shut, input read and dropped for a moment),
so a client still sending its oversized head reads the ``431`` instead of a connection reset.
The limits reach the worker processes through ``LIMITS_ENV`` (uvicorn builds the protocol itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from pyreg.registry import chunkedbody, directbody, zerocopy
from pyreg.storage.netaddr import is_loopback

log = logging.getLogger("pyreg.http")

LIMITS_ENV = "_PYREG_SERVE_LIMITS_JSON"
_LINGER_SECONDS = 2.0  # how long input is read and dropped after an error answer


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    head_timeout: float = 20.0
    max_connections: int = 1024

    def to_env(self) -> str:
        return json.dumps(asdict(self))


_limits: Limits | None = None


def set_limits(limits: Limits) -> None:
    """Use ``limits`` in this process and in the worker processes it starts (via the environment)."""
    global _limits
    os.environ[LIMITS_ENV] = limits.to_env()
    _limits = limits


def current_limits() -> Limits:
    """This process's limits, read once from ``LIMITS_ENV`` (defaults when unset)."""
    global _limits
    if _limits is None:
        raw = os.environ.get(LIMITS_ENV)
        _limits = Limits(**json.loads(raw)) if raw else Limits()
    return _limits


# Per uvicorn server: the connections waiting for a request head, oldest first (eviction order).
_WAITING: weakref.WeakKeyDictionary[ServerState, OrderedDict[BoundedHttpToolsProtocol, None]] = (
    weakref.WeakKeyDictionary())


_SWEEPING: weakref.WeakSet[ServerState] = weakref.WeakSet()


def _start_sweep(state: ServerState, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
    """Once per uvicorn server: close, about every second, the connections whose pending request
    head has outlived ``timeout``. Only connections waiting for a head are looked at."""
    if state in _SWEEPING:
        return
    _SWEEPING.add(state)
    ref = weakref.ref(state)
    interval = min(1.0, max(timeout / 4, 0.05))

    def sweep() -> None:
        live = ref()
        if live is None:
            return
        now = loop.time()
        for conn in list(_WAITING.get(live, ())):
            since = conn._head_since
            if since is not None and now - since >= conn._limits.head_timeout:
                conn._head_timed_out()
        loop.call_later(interval, sweep)

    loop.call_later(interval, sweep)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_UPLOAD_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _plain_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The one Content-Length of a body without Transfer-Encoding; 0 for anything else."""
    length = -1
    for name, value in headers:
        if name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return 0
            length = int(value)
        elif name == b"transfer-encoding":
            return 0
    return max(length, 0)


def _only_chunked(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """The body is framed by ``Transfer-Encoding: chunked`` alone (no Content-Length, no other coding)."""
    chunked = False
    for name, value in headers:
        if name == b"content-length" or (name == b"transfer-encoding" and (
                chunked or value.strip().lower() != b"chunked")):
            return False
        chunked = chunked or name == b"transfer-encoding"
    return chunked


_PACING = (b"bbr",)  # congestion controls that pace their sends (timers between segments)
_UNPACED = (b"cubic", b"reno")  # the kernel's default, then the one any user may choose


def unpaced_on_loopback(sock: Any, peer: Any) -> None:
    """A client on this host (nginx in front, a local pull) gets a congestion control that does
    not pace: pacing spaces segments out for a network path's bottleneck, and loopback has none,
    so with bbr (a common host default) a big blob's answer waits on pacing timers and its reader
    on wake-ups. Any other peer keeps the host's choice."""
    if not (isinstance(peer, tuple) and peer and isinstance(peer[0], str) and is_loopback(peer[0])):
        return
    try:
        current = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")
        if current not in _PACING:
            return
        for name in _UNPACED:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name)
                return
    except (OSError, AttributeError):
        return  # not TCP, or not Linux


def _resume_later() -> None:
    """Stands in for FlowControl.resume_reading while a thread reads the socket directly."""


_JOIN_MAX = 64 * 1024  # a first body write up to this size leaves in one send() with the head


class _OneSendTransport:
    """The transport as one response cycle sees it: the response head is held back until the
    first body write, so a small answer (a manifest, an error) goes out in one ``send()`` instead
    of two; on loopback each send costs the sender the receiver's whole TCP path as well. The
    head is written at the latest when the response ends (a HEAD answer has no body write) or
    the connection is closed. Everything else is the real transport's."""

    __slots__ = ("_done", "_head", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, done: Callable[[], None]) -> None:
        self._transport = transport
        self._done = done  # the cycle's own end-of-response callback
        self._head: bytes | None = None
        self._started = False

    def response_done(self) -> None:
        """The cycle's ``on_response``: a head without a body write (HEAD, an empty body) goes now."""
        self.flush()
        self._done()

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= _JOIN_MAX:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif not self._started and data != _CONTINUE:
            self._started = True  # the first write of a response, other than 100 Continue, is its head
            self._head = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = current_limits()
        self._waiting = _WAITING.setdefault(self.server_state, OrderedDict())
        self._head_open = True  # the next bytes belong to a request line or headers
        self._head_bytes = 0
        self._heads_done = 0
        self._head_since: float | None = None  # loop time the pending head started; None: none pending
        self._lingering = False
        self._lost = threading.Event()  # set when the connection goes: a sendfile thread stops
        self._sock_fd: int | None = None
        self._body_seen = 0  # body bytes of the current message the parser has handed on
        self._head_tail = b""  # the last bytes of a head not yet complete (its end may straddle reads)
        self._splitting = False  # the parser is fed exactly up to a head's end (see _feed_head)
        self._held: tuple[Any, bytearray] | None = None  # a chunked upload's raw body, kept from the parser

    # -- connection life ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        tls = transport.get_extra_info("sslcontext") or transport.get_extra_info("ssl_object")
        if sock is not None and tls is None:  # under TLS the socket carries ciphertext: no sendfile
            with contextlib.suppress(OSError, AttributeError):
                self._sock_fd = sock.fileno()
        if sock is not None:
            unpaced_on_loopback(sock, transport.get_extra_info("peername"))
        self._wait_for_head()
        self._head_since = self.loop.time()
        _start_sweep(self.server_state, self.loop, self._limits.head_timeout)
        if len(self.connections) > self._limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._waiting.pop(self, None)
        self._head_since = None
        super().connection_lost(exc)

    def _make_room(self) -> None:
        victim = next((c for c in self._waiting if c is not self), None)
        if victim is not None:
            self._waiting.pop(victim, None)
            victim._head_since = None
            victim.transport.close()
            return
        log.warning("connection limit (%d) reached and every connection is busy: refusing one",
                    self._limits.max_connections)
        self._send_error(503, "too many connections")

    def _busy(self) -> bool:
        """A request of this connection is being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _wait_for_head(self) -> None:
        self._waiting[self] = None
        self._waiting.move_to_end(self)

    # -- the head deadline -------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_since = None
        if self.transport.is_closing() or not self._head_open or self._busy():
            return
        if self._head_bytes:
            self._send_error(408, "request headers not received in time")
        else:
            self.transport.close()

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after an error answer: read and dropped until the linger ends
        if self._held is not None:
            self._held[1].extend(data)  # reading is paused: at most what one read had already taken
            return
        if not self._head_open:
            super().data_received(data)
            return
        if self._head_since is None and not self._busy():
            self._head_since = self.loop.time()  # a head starts after an idle keep-alive: its deadline runs
        room = self._limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed_head(data)
            return
        self._head_bytes = self._limits.max_head_bytes
        done = self._heads_done
        if room > 0:
            self._feed_head(data[:room])
        if self.transport.is_closing():
            return
        if self._heads_done == done:  # the head did not end within the limit
            log.info("request head larger than %d bytes from %s: 431", self._limits.max_head_bytes,
                     self.client[0] if self.client else "?")
            if self._busy():  # a pipelined head during a response: no clean place for an answer
                self.transport.close()
            else:
                self._send_error(431, "request header fields too large")
            return
        if self._held is not None:
            self._held[1].extend(data[room:])  # a chunked upload's body (reading is paused now)
            return
        super().data_received(data[room:])

    def _feed_head(self, data: bytes) -> None:
        """Feed a piece that holds (part of) a request head. On plain HTTP the parser is fed
        exactly up to the head's end when the piece holds it, so a chunked upload's body can be
        kept from the parser (``_held``) for a thread to decode (registry/chunkedbody.py). Should
        the parser read past a head's end after all (a head not ended by CRLF CRLF), it calls
        ``on_chunk_header`` or ``on_body`` before any CRLF CRLF of the body, and the hold drops."""
        if self._sock_fd is None:
            super().data_received(data)
            return
        while True:
            end = -1
            if self._head_tail:  # the end may straddle the previous piece and this one
                end = (self._head_tail + data[:3]).find(b"\r\n\r\n")
                end = end + 4 - len(self._head_tail) if end >= 0 else -1
            if end < 0:
                end = data.find(b"\r\n\r\n")
                end = end + 4 if end >= 0 else -1
            if end < 0:
                self._head_tail = data[-3:]
                super().data_received(data)
                return
            self._head_tail = b""
            self._splitting = True
            try:
                super().data_received(data[:end] if end < len(data) else data)
            finally:
                self._splitting = False
            if end == len(data) or self._lingering or self.transport.is_closing():
                return
            data = data[end:]
            if self._held is not None:
                self._held[1].extend(data)
                return
            if not self._head_open:
                super().data_received(data)
                return
            # the head had not ended there (leading empty lines): look again in the rest

    def _unhold(self) -> None:
        """A held chunked body goes back to the parser (the upload reads the ASGI stream)."""
        held, self._held = self._held, None
        if held is None:
            return
        with contextlib.suppress(AttributeError):
            del self.flow.resume_reading
        if held[1] and not self.transport.is_closing():
            self.data_received(bytes(held[1]))

    def _drop_hold(self) -> None:
        """The parser has read into the held body after all (a head not ended by CRLF CRLF): the
        body is the stream's."""
        if self._held is not None:
            self._held = None
            with contextlib.suppress(AttributeError):
                del self.flow.resume_reading

    def on_chunk_header(self) -> None:
        self._drop_hold()

    def on_body(self, body: bytes) -> None:
        """A body piece that arrives while the app has taken everything before it is handed on
        as the very bytes object the parser made; uvicorn would append it to a bytearray and
        copy that again into the ``http.request`` message (two copies of every uploaded byte)."""
        self._drop_hold()
        self._body_seen += len(body)
        cycle = self.cycle
        if (cycle is None or cycle.body or cycle.response_complete
                or (self.parser.should_upgrade() and self._should_upgrade())):
            super().on_body(body)  # pieces pile up (uvicorn joins them), or uvicorn drops it
            return
        cycle.body = body  # type: ignore[assignment]  # bytes(body) in receive() is body itself
        if len(body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_headers_complete(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete  # not a pipelined request
        self._head_open = False
        self._head_tail = b""
        self._heads_done += 1
        self._head_since = None
        self._waiting.pop(self, None)
        self._body_seen = 0
        super().on_headers_complete()
        cycle = self.cycle  # this head's cycle (pipelined heads each get their own)
        if cycle is not None:
            writer = _OneSendTransport(self.transport, cycle.on_response)
            cycle.transport = writer  # type: ignore[assignment]
            cycle.on_response = writer.response_done
            scope = cycle.scope
            if self._sock_fd is not None and scope["method"] == "GET" and "/blobs/" in scope["path"]:
                # a blob GET may have the kernel send file bytes; other requests pay nothing for it
                scope.setdefault("extensions", {})[zerocopy.EXTENSION] = {}
                cycle.send = self._send_hook(cycle, writer)  # type: ignore[method-assign,assignment]
            elif (self._sock_fd is not None and scope["method"] in _UPLOAD_METHODS
                  and "/blobs/uploads" in scope["path"]):
                length = _plain_length(scope["headers"])
                if length:  # a blob upload's body may be received by a thread (registry/directbody.py)
                    scope.setdefault("extensions", {})[directbody.EXTENSION] = {
                        "open": functools.partial(self._open_direct, cycle, length)}
                elif self._splitting and idle and _only_chunked(scope["headers"]):
                    self._hold(cycle)

    def _hold(self, cycle: Any) -> None:
        """Keep a chunked upload's body from the parser until the upload takes it: by a thread
        (``_open_chunked``) or, when it reads the ASGI stream or answers first, by the parser."""
        self._held = (cycle, bytearray())
        self.flow.pause_reading()
        self.flow.resume_reading = _resume_later  # type: ignore[method-assign]
        cycle.scope.setdefault("extensions", {})[directbody.EXTENSION] = {
            "open": functools.partial(self._open_chunked, cycle)}
        receive = cycle.receive

        async def receive_held() -> Any:
            if self._held is not None and self._held[0] is cycle:
                self._unhold()
            return await receive()

        cycle.receive = receive_held
        respond = cycle.on_response

        def responded() -> None:
            if self._held is not None and self._held[0] is cycle:
                self._unhold()  # answered without the body: the parser skips it, as uvicorn does
            respond()

        cycle.on_response = responded

    # -- bodies received by a thread (registry/directbody.py) ------------------------------------

    def _open_direct(self, cycle: Any, length: int) -> directbody.SocketBody | None:
        """The rest of ``cycle``'s body as a SocketBody: what the parser has, then the socket."""
        if cycle.disconnected or cycle.response_complete or self.transport.is_closing():
            return None  # the ASGI stream reports it
        if cycle.waiting_for_100_continue:
            cycle.transport.write(_CONTINUE)
            cycle.waiting_for_100_continue = False
        first = bytes(cycle.body)
        cycle.body = b""
        stall = self._limits.head_timeout
        if not cycle.more_body or cycle is not self.cycle or length <= self._body_seen:
            return directbody.SocketBody(None, first, 0, self._lost, stall,
                                         functools.partial(self._direct_done, cycle))
        assert self._sock_fd is not None
        self.flow.pause_reading()
        self.flow.resume_reading = _resume_later  # type: ignore[method-assign]
        fd = os.dup(self._sock_fd)  # a closed connection's descriptor number may be reused: not ours
        return directbody.SocketBody(fd, first, length - self._body_seen, self._lost, stall,
                                     functools.partial(self._direct_done, cycle))

    def _open_chunked(self, cycle: Any) -> directbody.SocketBody | None:
        """The held chunked body of ``cycle`` for a thread to decode, from the held bytes on."""
        held = self._held
        if (held is None or held[0] is not cycle or cycle.disconnected or cycle.response_complete
                or self.transport.is_closing()):
            return None  # the ASGI stream reports it
        self._held = None
        if cycle.waiting_for_100_continue:
            cycle.transport.write(_CONTINUE)
            cycle.waiting_for_100_continue = False
        assert self._sock_fd is not None
        fd = os.dup(self._sock_fd)
        return chunkedbody.ChunkedSocketBody(fd, bytes(held[1]), self._lost, self._limits.head_timeout,
                                             functools.partial(self._direct_done, cycle))

    def _direct_done(self, cycle: Any, body: directbody.SocketBody) -> None:
        """A thread has done with the socket: the next request is parsed afresh, or the
        connection closes (after the answer, or at once when the client went away)."""
        cycle.scope["extensions"][directbody.EXTENSION]["received"] = getattr(  # the access log's
            body, "decoded", body.received)  # a chunked body counts its data, as the stream path does
        if not body.from_socket:
            return
        with contextlib.suppress(AttributeError):
            del self.flow.resume_reading
        if self.transport.is_closing() or self.parser is None:
            return
        if body.remaining == 0 and cycle is self.cycle:
            self.parser = httptools.HttpRequestParser(self)
            with contextlib.suppress(AttributeError):
                self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            self.on_message_complete()
            self.flow.resume_reading()
            leftover = getattr(body, "leftover", b"")  # read past a chunked body's end
            if leftover:
                self.data_received(leftover)
            return
        cycle.keep_alive = False  # the parser is mid-body: no next request on this connection
        if body.failed:
            cycle.disconnected = True
            self.transport.close()

    # -- zero-copy bodies (registry/zerocopy.py) ------------------------------------------------

    def _send_hook(self, cycle: Any, writer: _OneSendTransport) -> Callable[[Any], Any]:
        send = cycle.send

        async def hooked(message: Any) -> None:
            if message["type"] != zerocopy.EXTENSION:
                await send(message)
                return
            count = int(message["count"])
            if not cycle.response_started or cycle.response_complete or count > cycle.expected_content_length:
                raise RuntimeError("pyreg.sendfile outside a response body or past its Content-Length")
            if cycle.disconnected:
                return
            writer.flush()  # the response head, if still held back
            while self.transport.get_write_buffer_size() and not self.transport.is_closing():
                await asyncio.sleep(0.001)  # what the transport holds goes first (rare: a head is small)
            if self.transport.is_closing():
                cycle.disconnected = True
                return
            cycle.expected_content_length -= count
            assert self._sock_fd is not None
            try:
                await zerocopy.send_file(self._sock_fd, int(message["fd"]), int(message["offset"]), count,
                                         self._lost)
            except OSError:  # the client went away: from now on sends do nothing, as uvicorn's do
                cycle.disconnected = True
                self.transport.close()

        return hooked

    def on_message_complete(self) -> None:
        self._drop_hold()
        super().on_message_complete()
        self._head_open, self._head_bytes = True, 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._busy():
            self._wait_for_head()  # idle keep-alive: uvicorn's timer bounds it, and it may be evicted

    # -- answers of our own ------------------------------------------------------------------

    def _send_error(self, status: int, message: str) -> None:
        """A plain-text answer, then a lingering close so the client can read it."""
        body = message.encode("ascii")
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n\r\n", body])
        self._head_since = None
        self._waiting[self] = None
        self._waiting.move_to_end(self, last=False)  # lingering: the first to go when room is needed
        self.transport.write(b"".join(content))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self.loop.call_later(_LINGER_SECONDS, self.transport.close)
