"""``-p``/``-P``: the grammar, and the userland proxy that publishes a container's port.

Why a proxy (docker's ``docker-proxy``) for every port, and DNAT only beside it: the supervisor
binds the host address itself, so a port in use fails at once with the kernel's own answer and
no other process can take it later; ``127.0.0.1`` works without ``route_localnet`` and a
masquerade of loopback sources. Ports on other addresses (and 0.0.0.0) are also DNAT-ed by
iptables (runtime/network/dnat.py), as docker does: what reaches a non-loopback address skips the
proxy's hop. The proxy's bytes are ``splice``d through a pipe, never copied into Python
(bench/README.md). Under slirp4netns and pasta, they forward the ports themselves
(runtime/network/slirp.py, pasta.py); this module binds them first there too, for the same errors.

IPv6: pyreg's bridges are IPv4-only (runtime/network/networks.py refuses IPv6 subnets), as docker's
``bridge`` with ``ipv6`` off. docker then still publishes ``-p 8080:80`` on ``[::]:8080`` as well as
``0.0.0.0:8080``, the IPv6 side through docker-proxy to the container's IPv4 address, and any
``-p [v6addr]:…`` the same way: netfilter cannot DNAT an IPv6 connection to an IPv4 address, so
there is no ip6tables rule to make. pyreg does the same (``Proxy(dual_stack=True)`` on a bridge):
every IPv6 host address is the proxy's, bound ``IPV6_V6ONLY`` so that ``[::]`` never takes the
IPv4 side (0.0.0.0's, which DNAT serves); without IPv6 on the host only 0.0.0.0 is bound.
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


def host_port(p: dict[str, Any]) -> str:
    """``0.0.0.0:32768``, ``[::]:32768``: an IPv6 address in brackets, as docker prints it."""
    host = p.get("host_ip") or "0.0.0.0"
    return f"[{host}]:{p['host_port']}" if ":" in host else f"{host}:{p['host_port']}"


def format_port(p: dict[str, Any]) -> str:
    """docker's ``0.0.0.0:32768->80/tcp``."""
    return f"{host_port(p)}->{p['port']}/{p['proto']}"


_RANDOM_TRIES = 20  # a random port free on 0.0.0.0 but taken on [::]: pick another, as docker


class Proxy:
    """The listening sockets of a container's published ports, bound before it starts.

    ``dual_stack`` (a bridge): a port without a host address is bound on ``[::]`` too, on the
    same port number, as docker does (the module's docstring)."""

    def __init__(self, ports: list[dict[str, Any]], dual_stack: bool = False) -> None:
        self.socks: list[tuple[socket.socket, dict[str, Any]]] = []
        try:
            for p in ports:
                self.socks += _bind_port(p, dual_stack and not p.get("host_ip") and _has_ipv6())
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


def _bind_port(p: dict[str, Any], both: bool) -> list[tuple[socket.socket, dict[str, Any]]]:
    """``p``'s socket, and with ``both`` its ``[::]`` twin on the same port number (a random
    port taken on one side only is tried again, up to ``_RANDOM_TRIES`` times)."""
    for attempt in range(_RANDOM_TRIES if both and not p["host_port"] else 1):
        s, q = _bind(p, p.get("host_ip") or "0.0.0.0")
        if not both:
            return [(s, q)]
        try:
            return [(s, q), _bind({**p, "host_port": q["host_port"]}, "::")]
        except ContainerError:
            s.close()
            if p["host_port"] or attempt == _RANDOM_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _bind(p: dict[str, Any], host: str) -> tuple[socket.socket, dict[str, Any]]:
    """One listening socket for ``p`` on ``host`` (IPv6 ones ``IPV6_V6ONLY``); the error is the
    kernel's, with the port named."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((host, int(p["host_port"])))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except OSError as e:
        s.close()
        given = host_port({"host_ip": p.get("host_ip") or "0.0.0.0", "host_port": p["host_port"]})
        where = host_port({"host_ip": host, "host_port": p["host_port"]})
        raise ContainerError(f"-p {given}:{p['port']}/{p['proto']}: cannot bind {where}: "
                             f"{e.strerror}") from None
    q = {**p, "host_port": s.getsockname()[1]}
    if family == socket.AF_INET6 and not p.get("host_ip"):
        q["host_ip"] = "::"
    return s, q


def _has_ipv6() -> bool:
    """IPv6 in this network namespace: its ``/proc/net/if_inet6`` lists an address (``::1``
    once ``lo`` is up); without it docker binds only 0.0.0.0."""
    try:
        with open("/proc/net/if_inet6") as f:
            return bool(f.read(1))
    except OSError:
        return False


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
