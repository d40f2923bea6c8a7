"""The one rtnetlink request a bridge container needs at start: its veth pair.

Why not pyroute2 (the well-kept netlink library): ``import pyroute2`` (0.9.7) costs 100-250 ms
of CPU (asyncio, its message classes) against a start-up budget of 30 ms; and why not ``ip``:
a fork and exec of iproute2 on every start. One ``RTM_NEWLINK`` is ~40 lines of ``struct``:
the same message ``ip link add NAME up master BRIDGE type veth peer name eth0 netns FD`` sends.
"""

from __future__ import annotations

import _socket  # not socket.py: its enums cost milliseconds of start-up
import os
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK = 16
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFF_UP = 0x1


def _attr(kind: int, payload: bytes) -> bytes:
    """A struct rtattr, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _ifinfo(flags: int = 0, change: int = 0) -> bytes:
    """struct ifinfomsg: family AF_UNSPEC, type, index 0 (new), flags, change."""
    return struct.pack("=BxHiII", _socket.AF_UNSPEC, 0, 0, flags, change)


def add_veth(name: str, bridge: str, peer: str, netns_fd: int) -> None:
    """Make the veth pair ``name`` (up, a port of ``bridge``) / ``peer`` (in the network
    namespace of ``netns_fd``), in the caller's network namespace. OSError with the kernel's
    errno when it refuses (EEXIST, ENODEV for a missing bridge, ...)."""
    peer_msg = _ifinfo() + _attr(IFLA_IFNAME, peer.encode() + b"\0") + \
        _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
    linkinfo = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_msg))
    body = (_ifinfo(IFF_UP, IFF_UP) + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_MASTER, struct.pack("=I", _socket.if_nametoindex(bridge)))
            + _attr(IFLA_LINKINFO, linkinfo))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        s.bind((0, 0))
        s.send(struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, flags, 1, 0) + body)
        reply = s.recv(65536)
    finally:
        s.close()
    _length, kind = struct.unpack_from("=IH", reply)
    if kind != NLMSG_ERROR:
        raise OSError(0, f"rtnetlink: unexpected reply type {kind}")
    error = struct.unpack_from("=i", reply, 16)[0]
    if error:
        raise OSError(-error, f"veth {name}: {os.strerror(-error)}")
