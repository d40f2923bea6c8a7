"""Bounded work per connection on a real ``pyreg serve`` with two workers (registry/http_protocol.py):
the request head's size, its deadline, idle keep-alive connections and connections per worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

MiB = 1 << 20


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Connection limits do not touch storage: filesystem only."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


def session_pids(sid: int) -> list[int]:
    """The server and its workers: every process of the session ``pyreg serve`` leads."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            pids.append(int(name))
    return pids


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def send_head(host: str, port: int, header_size: int) -> bytes:
    """A GET whose one header value is ``header_size`` bytes, sent in 1 MiB writes; the answer.

    The answer is read in a thread while the head is still being sent, as a client would see it
    (the server answers as soon as the limit is passed, then drops the rest)."""
    answer = bytearray()
    with socket.create_connection((host, port), timeout=30) as s:
        def read() -> None:
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    answer.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\nX-Big: ")
            block, sent = b"a" * MiB, 0
            while sent < header_size:
                part = block[: header_size - sent]
                s.sendall(part)
                sent += len(part)
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass  # closed after the answer: the answer is what counts
        reader.join(timeout=30)
    return bytes(answer)


def test_oversized_request_head_is_431_and_its_memory_is_not_kept(make_registry_server: Any) -> None:
    server = make_registry_server(workers=2)
    host, port = server.host.rsplit(":", 1)
    before = {pid: rss_kib(pid) for pid in session_pids(server.pid)}
    for size in (4 * MiB, 64 * MiB):  # Distribution answers 431 to the first already
        answer = send_head(host, int(port), size)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    growth = {pid: rss_kib(pid) - kib for pid, kib in before.items() if os.path.exists(f"/proc/{pid}")}
    assert max(growth.values()) < 16 * 1024, growth  # no worker kept the 64 MiB head (KiB)
    # Heads within the limit are served, and the limit is the configured one.
    assert httpx.get(f"{server.url}/v2/", headers={"X-Fill": "x" * 30000}).status_code == 200
    small = make_registry_server({"http": {"maxheaderbytes": "8KiB"}}, workers=2)
    assert httpx.get(f"{small.url}/v2/", headers={"X-Fill": "x" * 4000}).status_code == 200
    r = httpx.get(f"{small.url}/v2/", headers={"X-Fill": "x" * 12000})
    assert r.status_code == 431


class Trickler:
    """A client connection that sends ``opening`` and then one byte a second until the server
    closes it (or ``stop`` is set); ``closed`` tells whether the server did."""

    def __init__(self, port: int, opening: bytes, stop: asyncio.Event) -> None:
        self.port, self.opening, self.stop = port, opening, stop
        self.closed = False
        self.connected = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.connected.set()
        try:
            if self.opening:
                writer.write(self.opening)
            while not self.stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(65536), 1.0)
                except TimeoutError:
                    writer.write(b"X")  # one more byte of a header name that never ends
                    await writer.drain()
                    continue
                if not data:  # EOF: the server closed it (after a 408, or without a word)
                    self.closed = True
                    return
        except (ConnectionError, OSError):
            self.closed = True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def keep_alive_then_trickle(port: int, stop: asyncio.Event) -> bool:
    """One whole request on a keep-alive connection, then a head that trickles; True when the
    server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nX-Slow: ")
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(65536), 1.0)
            except TimeoutError:
                writer.write(b"y")
                await writer.drain()
                continue
            if not data:
                return True
        return False
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def test_half_sent_requests_neither_lock_out_clients_nor_live_on(make_registry_server: Any) -> None:
    # Two workers of at most 60 connections, each process allowed 200 open files: 400 trickling
    # connections would exhaust both without the cap (and did: the next client was never answered).
    limits = {"maxconnections": 60, "headertimeout": "3s", "idletimeout": "2s"}
    server = make_registry_server({"http": limits}, workers=2)
    port = int(server.host.rsplit(":", 1)[1])
    for pid in session_pids(server.pid):
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (200, 200))
    stop = asyncio.Event()
    openings = [b"", b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nX-"]  # silent, and half a head
    tricklers = [Trickler(port, openings[i % 2], stop) for i in range(400)]
    tasks = [asyncio.create_task(t.run()) for t in tricklers]
    keep_alive: asyncio.Task[bool] | None = None
    try:
        await asyncio.wait_for(asyncio.gather(*(t.connected.wait() for t in tricklers)), 30)
        # Opened last, so the older tricklers are the ones the cap closes first.
        keep_alive = asyncio.create_task(keep_alive_then_trickle(port, stop))
        # Every trickler is connected and none has finished its head: another client is served.
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(4):
                r = await client.get(f"{server.url}/v2/", headers={"Connection": "close"})
                assert r.status_code == 200
        # The head deadline (3 s) closes what the cap left open, trickling or not; idle keep-alive
        # connections too. Waited for up to 30 s, then the test gives up.
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        assert await asyncio.wait_for(keep_alive, 30)
    finally:
        stop.set()
        await asyncio.gather(*tasks, *([keep_alive] if keep_alive else []), return_exceptions=True)
    assert all(t.closed for t in tricklers), sum(not t.closed for t in tricklers)
    assert server.process.poll() is None
    assert httpx.get(f"{server.url}/v2/").status_code == 200


def test_idle_keep_alive_connection_is_closed(make_registry_server: Any) -> None:
    server = make_registry_server({"http": {"idletimeout": "1s"}}, workers=2)
    host, port = server.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:  # uvicorn's own default: 30 s
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\n\r\n")
        data = b""
        while b"\r\n\r\n{}" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 ")
        assert s.recv(65536) == b""  # closed by the server after 1 s idle (the socket waits 15)
