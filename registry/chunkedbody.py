"""A ``Transfer-Encoding: chunked`` upload body received by a thread (the direct path's framing).

docker and containerd push a layer as one streaming PATCH with chunked transfer encoding; through
the ASGI stream every piece of it costs the event loop as a Content-Length body did before
registry/directbody.py. ``ChunkedSocketBody`` is a ``SocketBody`` whose ``readinto`` decodes the
HTTP/1.1 chunked framing (RFC 9112 section 7.1) in the thread itself: raw bytes are read into the
pump's buffer and the chunk data is moved down over the framing in place, so the pump writes and
hashes plain body bytes.

The protocol (registry/http_protocol.py) hands it the raw bytes that came with the request head,
never fed to its parser. Bounded: a size line (hex digits, optional extensions) or a trailer line
longer than ``MAX_LINE``, trailers beyond ``MAX_TRAILERS`` bytes, a size that is not hex, a chunk's
data not followed by CRLF: the body is malformed, raised as a ClientDisconnect after everything
decoded before it was handed on (stored and hashed, as the stream path stores what its parser
passed on), and the connection closes. The socket is read in large pieces, so a read may take
bytes past the body's end (a pipelined next request): they are kept as ``leftover`` and the
protocol's fresh parser reads them first.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from starlette.requests import ClientDisconnect

from pyreg.registry.directbody import SocketBody

MAX_LINE = 4096  # a chunk-size line or one trailer line, CRLF included (as Go's net/http)
MAX_TRAILERS = 64 * 1024  # all trailer lines together
_UNBOUNDED = 1 << 62  # the raw reader's remaining count until the last chunk is decoded

# chunk-size [ chunk-ext ]: 1-16 hex digits, then optional whitespace and ";"-extensions in
# visible characters, space or tab (quoted strings included: their content is not interpreted).
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[\x20-\x7e\t\x80-\xff]*)?")
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e\t\x80-\xff]*")

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class BodyMalformed(ClientDisconnect):
    """The chunked framing is broken: nothing after it can be trusted, the connection closes."""


class ChunkedSocketBody(SocketBody):
    """The decoded chunk data of a chunked request body (see the module docstring)."""

    def __init__(self, fd: int | None, first: bytes, lost: threading.Event, stall: float,
                 done: Callable[[SocketBody], None]) -> None:
        super().__init__(fd, first, _UNBOUNDED, lost, stall, done)
        self._state = _SIZE
        self._left = 0  # data bytes left in the current chunk
        self._line = bytearray()  # a size or trailer line split across reads
        self._crlf = 0  # bytes of the CRLF after a chunk's data already seen
        self._trailers = 0
        self._error: BodyMalformed | None = None
        self.decoded = 0  # body bytes handed on
        self.leftover = b""  # bytes read past the body's end: the next request's

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    def readinto(self, view: memoryview) -> int:
        """Up to ``len(view)`` decoded body bytes into ``view``; 0 after the last chunk."""
        while True:
            if self._error is not None:
                self.failed = True
                raise self._error
            if self._state == _DONE or not len(view):
                return 0
            n = super().readinto(view)  # raw bytes; raises ClientDisconnect / BodyStalled
            got = self._decode(view, n)
            self.decoded += got
            if got or self._state == _DONE:
                return got

    def _malformed(self, why: str) -> None:
        self._error = BodyMalformed(f"malformed chunked body: {why}")

    def _decode(self, view: memoryview, n: int) -> int:
        """Decode the raw ``view[:n]`` in place: chunk data moved to ``view[:returned]``."""
        pos = out = 0
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._left, n - pos)
                if out != pos:
                    view[out:out + take] = view[pos:pos + take]
                out += take
                pos += take
                self._left -= take
                if not self._left:
                    self._state, self._crlf = _DATA_END, 0
            elif state == _DATA_END:
                if view[pos] != b"\r\n"[self._crlf]:
                    self._malformed("chunk data not followed by CRLF")
                    return out
                pos += 1
                self._crlf += 1
                if self._crlf == 2:
                    self._state = _SIZE
            elif state in (_SIZE, _TRAILER):
                room = MAX_LINE - len(self._line)
                window = bytes(view[pos:min(n, pos + room)])
                end = window.find(b"\n")
                if end < 0:
                    if len(window) >= room:
                        self._malformed(f"line longer than {MAX_LINE} bytes")
                        return out
                    self._line += window
                    pos += len(window)
                    continue
                line = bytes(self._line) + window[:end + 1]
                self._line.clear()
                pos += end + 1
                if not line.endswith(b"\r\n"):
                    self._malformed("line not ended by CRLF")
                    return out
                if not self._line_done(line[:-2]):
                    return out
                if self._state == _DONE:
                    self._finish(view, pos, n)
                    return out
            else:
                break
        return out

    def _line_done(self, line: bytes) -> bool:
        """One whole size or trailer line (without CRLF); False when it is malformed."""
        if self._state == _SIZE:
            match = _SIZE_LINE.fullmatch(line)
            if match is None:
                self._malformed(f"bad chunk size line {line[:64]!r}")
                return False
            size = int(match.group(1), 16)
            self._state, self._left = (_DATA, size) if size else (_TRAILER, 0)
            return True
        if not line:
            self._state = _DONE
            return True
        self._trailers += len(line) + 2
        if self._trailers > MAX_TRAILERS or _TRAILER_LINE.fullmatch(line) is None:
            self._malformed("bad or too many trailer fields")
            return False
        return True

    def _finish(self, view: memoryview, pos: int, n: int) -> None:
        """The last chunk and its trailers are in: what was read beyond is the next request's."""
        rest = bytes(view[pos:n]) + bytes(self._first)
        self._first = memoryview(b"")
        self.leftover = rest
        self.remaining = 0
