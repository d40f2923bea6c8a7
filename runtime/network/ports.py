"""``-p``/``-P``: the grammar, and the userland proxy that publishes a container's port.

Why a proxy (docker's ``docker-proxy``) for every port, and DNAT only beside it: the supervisor
binds the host address itself, so a port in use fails at once with the kernel's own answer and
no other process can take it later; ``127.0.0.1`` works without ``route_localnet`` and a
masquerade of loopback sources. Ports on other addresses (and 0.0.0.0) are also DNAT-ed by
iptables (runtime/network/dnat.py), as docker does: what reaches a non-loopback address skips the
proxy's hop. The proxy's bytes are ``splice``d through a pipe, never copied into Python
(bench/README.md). Under slirp4netns and pasta, they forward the ports themselves
(runtime/network/slirp.py, pasta.py); this module binds them first there too, for the same errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading

from pyreg.runtime.errors import ContainerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def parse(text: str) -> dict[str, Any]:
    """``[HOSTIP:][HOSTPORT:]CTRPORT[/tcp|/udp]`` -> {host_ip, host_port (0: any), port, proto}."""
    body, _, proto = text.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise ValueError(f"invalid -p {text!r}: protocol must be tcp or udp")
    host_ip, host_port, port = "", "", body
    if body.startswith("["):  # [::1]:8080:80
        end = body.find("]")
        host_ip, rest = body[1:end], body[end + 2:]
        host_port, _, port = rest.rpartition(":")
    elif body.count(":") == 2:
        host_ip, host_port, port = body.split(":")
    elif body.count(":") == 1:
        host_port, port = body.split(":")
    try:
        ctr, hp = int(port), int(host_port or 0)
    except ValueError:
        raise ValueError(f"invalid -p {text!r}: expected [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|/udp]") from None
    if not 0 < ctr < 65536 or not 0 <= hp < 65536:
        raise ValueError(f"invalid -p {text!r}: ports are 1-65535")
    return {"host_ip": host_ip, "host_port": hp, "port": ctr, "proto": proto}


def exposed(image_config: dict[str, Any]) -> list[dict[str, Any]]:
    """``-P``: every ``EXPOSE``d port of the image, on a random host port."""
    cfg = image_config.get("config") or {}
    return [parse(key) for key in sorted(cfg.get("ExposedPorts") or {})]


def format_port(p: dict[str, Any]) -> str:
    """docker's ``0.0.0.0:32768->80/tcp``."""
    return f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}->{p['port']}/{p['proto']}"


class Proxy:
    """The listening sockets of a container's published ports, bound before it starts."""

    def __init__(self, ports: list[dict[str, Any]]) -> None:
        self.socks: list[tuple[socket.socket, dict[str, Any]]] = []
        try:
            for p in ports:
                host = p.get("host_ip") or "0.0.0.0"
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
                s = socket.socket(family, kind)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((host, int(p["host_port"])))
                except OSError as e:
                    s.close()
                    raise ContainerError(f"-p {host}:{p['host_port']}:{p['port']}/{p['proto']}: cannot "
                                         f"bind {host}:{p['host_port']}: {e.strerror}") from None
                if kind == socket.SOCK_STREAM:
                    s.listen(128)
                self.socks.append((s, {**p, "host_port": s.getsockname()[1]}))
        except BaseException:
            self.close()
            raise

    @property
    def published(self) -> list[dict[str, Any]]:
        return [p for _, p in self.socks]

    def start(self, target_ip: str) -> None:
        """Forward every port to ``target_ip`` in daemon threads (they die with the supervisor)."""
        for s, p in self.socks:
            loop = _tcp_accept if p["proto"] == "tcp" else _udp_relay
            threading.Thread(target=loop, args=(s, (target_ip, int(p["port"]))), daemon=True).start()

    def close(self) -> None:
        for s, _ in self.socks:
            s.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy one direction until EOF: ``splice`` through a pipe, so the bytes stay in the kernel
    (docker-proxy copies them through user space); recv/sendall where splice is refused."""
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        r = w = -1
    try:
        spliced = False
        while r >= 0:
            try:
                n = os.splice(src.fileno(), w, 1 << 20, flags=_SPLICE_F_MOVE)
            except OSError as e:
                if spliced or e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                break  # not spliceable here: copy instead
            spliced = True
            if n == 0:
                return
            while n:
                n -= os.splice(r, dst.fileno(), n, flags=_SPLICE_F_MOVE)
        while data := src.recv(262144):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


_SPLICE_F_MOVE = getattr(os, "SPLICE_F_MOVE", 1)


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _tcp_accept(s: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            client, _ = s.accept()
        except OSError:
            return
        threading.Thread(target=_serve, args=(client, target), daemon=True).start()


def _udp_relay(s: socket.socket, target: tuple[str, int]) -> None:
    """One upstream socket per client address, its replies sent back from the published port."""
    peers: dict[Any, socket.socket] = {}

    def replies(up: socket.socket, client: Any) -> None:
        with contextlib.suppress(OSError):
            while True:
                s.sendto(up.recv(65536), client)

    while True:
        try:
            data, client = s.recvfrom(65536)
        except OSError:
            return
        up = peers.get(client)
        if up is None:
            up = peers[client] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.connect(target)
            threading.Thread(target=replies, args=(up, client), daemon=True).start()
        with contextlib.suppress(OSError):
            up.send(data)
