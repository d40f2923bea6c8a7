"""A client on the same host (nginx in front of pyreg, a local pull) is answered without pacing:
with bbr as the host's congestion control, its segments would be spaced out by timers meant for a
network path's bottleneck, which loopback does not have (a 256 MiB blob GET from curl: ~3.1 GB/s
paced, ~4.2-4.7 GB/s not; bench/README.md, session 6). Any other peer keeps the host's choice.

Nothing on the host is changed: the sockets are the test's own, and the served check reads the
server's socket with ``ss``."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyreg.registry.http_protocol import unpaced_on_loopback
from tests.fixtures.registry import RegistryServer


def _congestion(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")


@pytest.fixture
def paced_pair() -> Iterator[tuple[socket.socket, tuple[str, int]]]:
    """An accepted loopback connection whose socket uses bbr (set on it, not on the host)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, peer = server.accept()
        try:
            try:
                accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
            except OSError:
                pytest.skip("this kernel has no bbr congestion control")
            yield accepted, peer
        finally:
            accepted.close()
            client.close()


def test_a_loopback_peer_is_answered_unpaced(paced_pair: tuple[socket.socket, tuple[str, int]]) -> None:
    sock, peer = paced_pair
    unpaced_on_loopback(sock, peer)
    assert _congestion(sock) in (b"cubic", b"reno")


@pytest.mark.parametrize("peer", [("192.0.2.7", 40000), ("2001:db8::7", 40000, 0, 0), "", None])
def test_any_other_peer_keeps_the_hosts_choice(paced_pair: tuple[socket.socket, tuple[str, int]],
                                               peer: object) -> None:
    sock, _ = paced_pair
    unpaced_on_loopback(sock, peer)
    assert _congestion(sock) == b"bbr"


@pytest.mark.parametrize("peer", [("::1", 40000, 0, 0), ("::ffff:127.0.0.1", 40000, 0, 0), ("127.1.2.3", 1)])
def test_every_spelling_of_loopback(paced_pair: tuple[socket.socket, tuple[str, int]], peer: object) -> None:
    sock, _ = paced_pair
    unpaced_on_loopback(sock, peer)
    assert _congestion(sock) in (b"cubic", b"reno")


def test_a_congestion_control_that_does_not_pace_is_left_alone(
        paced_pair: tuple[socket.socket, tuple[str, int]]) -> None:
    sock, peer = paced_pair
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
    unpaced_on_loopback(sock, peer)
    assert _congestion(sock) == b"reno"


@pytest.mark.skipif(Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip() != "bbr",
                    reason="the host's congestion control does not pace: nothing to see")
def test_pyreg_serve_answers_a_local_client_unpaced(tmp_path: Path) -> None:
    server = RegistryServer({"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}},
                            tmp_path / "server")
    server.start()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
            local = client.getsockname()[1]
            out = subprocess.run(["ss", "-tinH", "state", "established",
                                  f"( sport = :{port} and dport = :{local} )"],
                                 capture_output=True, text=True, check=True).stdout
            assert out.strip(), "the server's side of the connection was not found"
            assert "bbr" not in out and ("cubic" in out or "reno" in out), out
    finally:
        server.stop()
