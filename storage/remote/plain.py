"""Anonymous plain-HTTP requests to a registry over a bare socket: the client's fast paths.

A pull from a loopback registry is mostly start-up: httpx, httpcore, h11 and ssl cost more CPU to
import than busybox takes to download. For the narrow case where nothing is unusual — plain HTTP,
no credentials asked for, ``Content-Length`` bodies, no redirects — this module speaks the few
lines of HTTP/1.1 that a pull needs with the interpreter's ``_socket`` alone (no
``http.client``: its email-parser imports cost more than the request; not even ``socket``, whose
enum conversions and ``selectors`` cost ~2.5 ms of a pull's start-up for ``create_connection``
and ``makefile``, the two helpers below), keeping connections alive for the next request.

Anything else raises :class:`Unsupported`, and the caller takes the full path
(storage/remote/client.py over httpx), which handles auth, redirects, TLS, retries and error
bodies. So this module never decides an outcome the full path would decide differently; it only
answers quickly when the answer is plain. Callers verify every byte they are handed (digests).
"""

from __future__ import annotations

import _socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from io import BufferedReader, RawIOBase

from pyreg.storage.netaddr import split_host_port

MAX_HEAD = 64 << 10          # a response head larger than this is no registry's answer
CONNECT_TIMEOUT = 15.0       # as the full path's
READ_TIMEOUT = 300.0
USER_AGENT = "pyreg/0.1"


class Unsupported(Exception):
    """Not a plain answer (a status, header or connection this client leaves alone): take the
    full path."""


def parse_head(head: bytes) -> tuple[str, int, dict[str, list[str]]]:
    """``(version, status, headers)`` of a complete response head (status line and header lines
    up to the blank line); header names lower-cased, every value kept. Unsupported when it is
    not one."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        raise Unsupported("incomplete response head")
    lines = head[:end].decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] not in ("HTTP/1.1", "HTTP/1.0") or not status[1].isdigit() \
            or len(status[1]) != 3:
        raise Unsupported(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise Unsupported(f"malformed header line {line[:80]!r}")
        headers.setdefault(name.lower(), []).append(value.strip())
    return status[0], int(status[1]), headers


class _NoAnswer(Unsupported):
    """The connection ended before any byte of an answer (a kept-alive one the server closed)."""


class Response:
    """One answer: status, headers and (for a GET) its ``Content-Length`` body, read from the
    connection as asked. ``close`` hands a connection whose body was read to the end back for
    the next request, and drops any other."""

    def __init__(self, client: PlainHTTP, conn: _Conn, version: str, status: int,
                 headers: dict[str, list[str]], has_body: bool) -> None:
        self.client = client
        self.conn: _Conn | None = conn
        self.status = status
        self.headers = headers
        self.length = 0
        if has_body:
            if "transfer-encoding" in headers:
                self.abandon()
                raise Unsupported("a Transfer-Encoding body")
            self.length = self._content_length()
        self.remaining = self.length
        self.reusable = version == "HTTP/1.1" and \
            "close" not in ",".join(headers.get("connection", [])).lower()

    def header(self, name: str) -> str | None:
        """The one value of ``name``; None when absent, Unsupported when sent more than once."""
        values = self.headers.get(name, [])
        if len(values) > 1:
            raise Unsupported(f"{name} sent {len(values)} times")
        return values[0] if values else None

    def _content_length(self) -> int:
        value = self.header("content-length")
        if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
            self.abandon()
            raise Unsupported(f"Content-Length {value!r}")
        return int(value)

    def read1(self, size: int = -1) -> bytes:
        """The next piece of the body (at most ``size`` bytes), b"" at its end."""
        if self.remaining == 0 or self.conn is None:
            return b""
        want = self.remaining if size < 0 else min(size, self.remaining)
        try:
            data = self.conn.rfile.read1(want)
        except OSError as exc:
            self.abandon()
            raise Unsupported(f"connection failed: {exc}") from exc
        if not data:
            self.abandon()
            raise Unsupported("connection closed before the end of the body")
        self.remaining -= len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the body (straight from the socket when it is larger than the
        read buffer); fewer bytes only when the body ends; raises OSError when the connection
        fails or closes before the end of the body, having counted what came."""
        if self.conn is None:
            raise OSError("connection closed before the end of the body")
        buffer = buffer[:self.remaining]
        got = self.conn.rfile.readinto(buffer)
        self.remaining -= got
        if got < len(buffer) and self.remaining:
            self.abandon()
            if not got:
                raise OSError("connection closed before the end of the body")
        return got

    def read(self, limit: int) -> bytes:
        """The whole body, refused (Unsupported) when it is longer than ``limit``."""
        if self.length > limit:
            self.abandon()
            raise Unsupported(f"a body of {self.length} bytes, more than {limit}")
        return b"".join(iter(lambda: self.read1(1 << 20), b""))

    def abandon(self) -> None:
        """Close the connection without reading the rest (it can't be used again)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        if self.conn is None:
            return
        if self.remaining == 0 and self.reusable:
            self.client._idle_put(self.conn)
            self.conn = None
        else:
            self.abandon()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(host: bytes, port: int, timeout: float) -> _socket.socket:
    """``socket.create_connection``: each address ``host`` resolves to in turn, the last
    failure raised."""
    failure: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    raise failure or OSError(f"no address for {host!r}")


class _SocketReader(RawIOBase):
    """``socket.makefile("rb")``'s raw layer: ``recv_into`` (a timeout raises, as there)."""

    def __init__(self, sock: _socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self.sock.recv_into(buffer)


class _Conn:
    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.rfile = BufferedReader(_SocketReader(sock))

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class Streamed:
    """A request being sent: ``send`` the body's bytes, then ``answer`` reads the response (any
    failure drops the connection and raises Unsupported)."""

    def __init__(self, client: PlainHTTP, conn: _Conn, method: str, length: int) -> None:
        self.client, self.method, self.left = client, method, length
        self.conn: _Conn | None = conn

    def send(self, data: bytes) -> None:
        if self.conn is None or len(data) > self.left:
            self.abandon()
            raise Unsupported("more body than announced")
        try:
            self.conn.sock.sendall(data)
        except OSError as exc:
            self.abandon()
            raise Unsupported(f"connection failed: {exc}") from exc
        self.left -= len(data)

    def answer(self) -> Response:
        conn, self.conn = self.conn, None
        if conn is None or self.left:
            if conn is not None:
                conn.close()
            raise Unsupported("the body was not sent whole")
        try:
            head = self.client._read_head(conn)
        except (OSError, Unsupported) as exc:
            conn.close()
            raise Unsupported(f"no answer: {exc}") from exc
        return self.client._answer(conn, self.method, head)

    def abandon(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class PlainHTTP:
    """Requests to one registry (``host[:port]``) over plain HTTP; idle connections are kept
    for the next request (one per thread at a time). Thread-safe."""

    def __init__(self, registry: str) -> None:
        host, port = split_host_port(registry)
        self.registry = registry
        self.address = (host, port or 80)
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    def _connect(self) -> _Conn:
        host, port = self.address
        try:
            # an ASCII host as bytes: a str would load the idna codec for an address like 127.0.0.1
            sock = _connect(host.encode("ascii"), port, CONNECT_TIMEOUT)
        except (OSError, UnicodeError, ValueError) as exc:
            raise Unsupported(f"cannot connect: {exc}") from exc
        sock.settimeout(READ_TIMEOUT)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        return _Conn(sock)

    def _idle_put(self, conn: _Conn) -> None:
        with self._lock:
            self._idle.append(conn)

    def _idle_get(self) -> _Conn | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _head(self, method: str, path: str, headers: dict[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.registry}", f"User-Agent: {USER_AGENT}",
                 "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        try:
            return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        except UnicodeError as exc:
            raise Unsupported(f"a request line that is not ASCII: {exc}") from None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> Response:
        """Send ``method path`` (with ``body`` and its ``Content-Length`` when given) and read
        the answer's head. A kept-alive connection the server closed before answering is
        replaced once: no answer began, so the request can be sent again."""
        if body is not None:
            headers = {**(headers or {}), "Content-Length": str(len(body))}
        data = self._head(method, path, headers) + (body or b"")
        while True:
            conn = self._idle_get()
            reused = conn is not None
            conn = conn or self._connect()
            try:
                conn.sock.sendall(data)
                head = self._read_head(conn)
            except (OSError, Unsupported) as exc:
                conn.close()
                if reused and isinstance(exc, (OSError, _NoAnswer)):
                    continue  # a stale kept-alive connection: once more on a fresh one
                if isinstance(exc, Unsupported):
                    raise
                raise Unsupported(f"connection failed: {exc}") from exc
            break
        return self._answer(conn, method, head)

    def _answer(self, conn: _Conn, method: str, head: bytes) -> Response:
        try:
            version, status, fields = parse_head(head)
        except Unsupported:
            conn.close()
            raise
        return Response(self, conn, version, status, fields, method != "HEAD" and status not in (204, 304))

    def stream(self, method: str, path: str, headers: dict[str, str], length: int) -> Streamed:
        """A request whose ``length``-byte body the caller sends piece by piece (an upload), on
        a new connection: a kept-alive one the server has closed could not be told from a
        failure once body bytes are gone."""
        conn = self._connect()
        try:
            conn.sock.sendall(self._head(method, path, {**headers, "Content-Length": str(length)}))
        except OSError as exc:
            conn.close()
            raise Unsupported(f"connection failed: {exc}") from exc
        return Streamed(self, conn, method, length)

    @staticmethod
    def _read_head(conn: _Conn) -> bytes:
        head = bytearray()
        while True:
            line = conn.rfile.readline(MAX_HEAD + 1)
            if not line:
                if head:
                    raise Unsupported("connection closed in the answer's head")
                raise _NoAnswer("connection closed before an answer")
            head += line
            if len(head) > MAX_HEAD:
                raise Unsupported("HTTP answer head too large")
            if line in (b"\r\n", b"\n"):
                return bytes(head).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    @contextmanager
    def get(self, path: str, headers: dict[str, str] | None = None) -> Iterator[Response]:
        """A GET whose answer must be a 200 (anything else: Unsupported, the full path's)."""
        response = self.request("GET", path, headers)
        try:
            if response.status != 200:
                raise Unsupported(f"GET {path}: {response.status}")
            yield response
        finally:
            response.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> PlainHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
