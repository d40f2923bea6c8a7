"""The container's side of its veth, set up from inside its network namespace with ioctls.

Why ioctls rather than ``ip`` or netlink: ``lo`` up, one IPv4 address, ``eth0`` up and a default
route are four requests the kernel has answered through ``SIOCSIF*``/``SIOCADDRT`` since long
before netlink; doing them in-process costs microseconds, where each ``ip`` process costs
milliseconds of a start-up budget of 30 ms, and ``import pyroute2`` 100-250 ms.
"""

from __future__ import annotations

import _socket  # not socket.py: its enums cost milliseconds of start-up
import fcntl
import struct

SIOCSIFFLAGS, SIOCGIFFLAGS = 0x8914, 0x8913
SIOCSIFADDR, SIOCSIFNETMASK = 0x8916, 0x891C
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP, RTF_GATEWAY = 0x1, 0x2


def _sockaddr(ip: str) -> bytes:
    """struct sockaddr_in (16 bytes): family in host order, port 0, the address."""
    return struct.pack("=HH4s8x", _socket.AF_INET, 0, _socket.inet_aton(ip))


def _ifreq(name: str, payload: bytes) -> bytes:
    """struct ifreq: a 16-byte name, then a 24-byte union."""
    return struct.pack("16s24s", name.encode(), payload)


def set_up(sock: _socket.socket, name: str) -> None:
    flags = struct.unpack_from("h", fcntl.ioctl(sock, SIOCGIFFLAGS, _ifreq(name, b"")), 16)[0]
    fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(name, struct.pack("h", flags | IFF_UP)))


def configure(name: str, ip: str, prefixlen: int, gateway: str) -> None:
    """``lo`` up; ``name`` up with ``ip/prefixlen``; a default route via ``gateway``. Runs in the
    calling thread's network namespace; OSError names the step that failed."""
    mask = _socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF))
    # struct rtentry in native layout: pad, dst, gateway, genmask, flags, pad, pad, pad, metric,
    # dev (NULL: the kernel picks the interface that reaches the gateway), mtu, window, irtt
    route = struct.pack("@L16s16s16sHhLPhPLLH", 0, _sockaddr("0.0.0.0"), _sockaddr(gateway),
                        _sockaddr("0.0.0.0"), RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        steps = (("lo up", lambda: set_up(s, "lo")),
                 (f"address {ip}", lambda: fcntl.ioctl(s, SIOCSIFADDR, _ifreq(name, _sockaddr(ip)))),
                 (f"netmask {mask}", lambda: fcntl.ioctl(s, SIOCSIFNETMASK, _ifreq(name, _sockaddr(mask)))),
                 (f"{name} up", lambda: set_up(s, name)),
                 (f"default route via {gateway}", lambda: fcntl.ioctl(s, SIOCADDRT, route)))
        for step, call in steps:
            try:
                call()
            except OSError as e:
                raise OSError(e.errno, f"{step}: {e.strerror}") from None
    finally:
        s.close()
