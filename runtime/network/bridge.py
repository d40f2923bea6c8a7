"""The bridge, the veth pair and the container's network namespace, through iproute2 (`ip -batch`).

The supervisor makes the container's network namespace itself before forking PID 1 (unshare,
keep an fd, setns back), so the whole set-up is done and checked before anything of the image
runs; PID 1 only ``setns``-es into it. Inside: ``lo`` up, ``eth0`` (the veth's peer, renamed)
with the container's address, a default route via the bridge's address.

``release`` undoes it: the host end of the veth (gone already when the namespace died), and the
bridge with its NAT rules once no veth is attached to it any more, so the host's links,
addresses and firewall tables are as they were before the first container.
"""

from __future__ import annotations

import contextlib
import os
import subprocess

from runtime import linux
from runtime.errors import ContainerError
from runtime.network import BRIDGE, ipam, nat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtime.record import Container


def _veth_names(cid: str) -> tuple[str, str]:
    return f"veth{cid[:8]}", f"vp{cid[:10]}"  # IFNAMSIZ: 15 characters


def _ip(commands: list[str], pass_fds: tuple[int, ...] = ()) -> None:
    """``commands`` in one ``ip -batch -`` run, in the calling thread's network namespace.

    iproute2 rather than pyroute2: ``import pyroute2`` (0.9) costs 100-250 ms of CPU even
    without its package ``__init__`` (asyncio, its message classes), the start-up budget of
    ``--network bridge`` is 30 ms, and one ``ip`` process is ~2 ms."""
    proc = subprocess.run(["ip", "-batch", "-"], input="".join(c + "\n" for c in commands),
                          capture_output=True, text=True, pass_fds=pass_fds)
    if proc.returncode != 0:
        raise RuntimeError(f"ip: {proc.stderr.strip()}")


def _exists(ifname: str) -> bool:
    """A link of this name in the current network namespace (an ioctl, no process)."""
    import socket

    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def create(rec: Container) -> int:
    """Make the container's network namespace, wired to the bridge; returns an fd of it."""
    net: dict[str, Any] = rec.net or {}
    host_if, peer_if = _veth_names(rec.id)
    bridge = str(net.get("bridge", BRIDGE))
    prefixlen = int(net["prefixlen"])
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ctr_ns = -1
    try:
        with ipam.locked():
            linux.unshare(linux.CLONE_NEWNET)
            try:
                ctr_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                linux.setns(host_ns, linux.CLONE_NEWNET)
            cmds = [] if _exists(bridge) else [f"link add name {bridge} type bridge"]
            cmds += [f"addr replace {net['gateway']}/{prefixlen} dev {bridge}",
                     f"link set {bridge} up",
                     f"link add name {host_if} type veth peer name {peer_if}",
                     f"link set {host_if} master {bridge} up",
                     f"link set {peer_if} netns /proc/self/fd/{ctr_ns}"]
            _ip(cmds, pass_fds=(ctr_ns,))
            nat.ensure(net["subnet"], bridge)
            _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
        linux.setns(ctr_ns, linux.CLONE_NEWNET)
        try:
            _ip(["link set lo up", f"link set {peer_if} name eth0",
                 f"addr add {net['ip']}/{prefixlen} dev eth0", "link set eth0 up",
                 f"route add default via {net['gateway']}"])
        finally:
            linux.setns(host_ns, linux.CLONE_NEWNET)
    except Exception as e:
        if ctr_ns >= 0:
            os.close(ctr_ns)
        release(rec)
        raise ContainerError(f"network: {e}") from None
    finally:
        os.close(host_ns)
    return ctr_ns


def _write_sysctl(path: str, value: str) -> None:
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)


def release(rec: Container) -> None:
    """Remove the container's veth; the bridge and NAT too when it was the last. Idempotent."""
    from runtime.network import networks

    net = rec.net or {}
    name = str(net.get("bridge", BRIDGE))
    host_if, _ = _veth_names(rec.id)
    with ipam.locked():
        if _exists(host_if):  # usually gone already: it died with the container's namespace
            with contextlib.suppress(RuntimeError):
                _ip([f"link del {host_if}"])
        found = _exists(name)
        if found:
            members = subprocess.run(["ip", "-o", "link", "show", "master", name], capture_output=True,
                                     text=True)
            if members.returncode == 0 and not members.stdout.strip():
                _ip([f"link del {name}"])
                found = False
        if not found and net.get("subnet"):
            nat.remove(str(net["subnet"]), name)
        networks.update_hosts(str(net.get("network", "bridge")), skip=rec.id)
