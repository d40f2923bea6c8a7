"""The bridge, the veth pair and the container's network namespace.

The bridge (``pyreg0``, or a user network's) and its NAT rules are made by the first container
that needs them and then left up, as docker leaves ``docker0``: per container there is one
rtnetlink request (runtime/network/netlink.py: the veth pair, its container end made straight in
the container's namespace as ``eth0``) and four ioctls in that namespace (ifconfig.py), and one
``iptables-save`` running beside them that tells whether a firewall reload took the NAT rules
(runtime/network/nat.py ``Check``: they are made again then).

The supervisor makes the container's network namespace itself before forking PID 1 (unshare,
keep an fd, setns back), so the whole set-up is done and checked before anything of the image
runs; PID 1 only ``setns``-es into it. Nothing needs undoing when the container ends: its
namespace dies with its last process and the kernel deletes the veth pair with it, ``kill -9``
included. ``remove_bridge`` (``pyreg network rm``) takes a user network's bridge and rules away.
"""

from __future__ import annotations

import contextlib
import os

from pyreg.runtime import linux
from pyreg.runtime.errors import ContainerError
from pyreg.runtime.network import BRIDGE, ipam

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container


def _veth_names(cid: str) -> tuple[str, str]:
    return f"veth{cid[:8]}", f"vp{cid[:10]}"  # IFNAMSIZ: 15 characters


def _ip(commands: list[str], pass_fds: tuple[int, ...] = ()) -> None:
    """``commands`` in one ``ip -batch -`` run, in the calling thread's network namespace.

    iproute2 rather than pyroute2: ``import pyroute2`` (0.9) costs 100-250 ms of CPU even
    without its package ``__init__`` (asyncio, its message classes), the start-up budget of
    ``--network bridge`` is 30 ms, and one ``ip`` process is ~2 ms."""
    import subprocess  # here: only when a bridge is made or removed, not on every start

    proc = subprocess.run(["ip", "-batch", "-"], input="".join(c + "\n" for c in commands),
                          capture_output=True, text=True, pass_fds=pass_fds)
    if proc.returncode != 0:
        raise RuntimeError(f"ip: {proc.stderr.strip()}")


def _exists(ifname: str) -> bool:
    """A link of this name in the current network namespace (an ioctl, no process)."""
    import _socket  # socket.py's enums cost milliseconds of start-up

    try:
        _socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def create(rec: Container) -> int:
    """Make the container's network namespace, wired to the bridge; returns an fd of it."""
    from pyreg.runtime.network import ifconfig, netlink

    net: dict[str, Any] = rec.net or {}
    host_if, _ = _veth_names(rec.id)
    bridge = str(net.get("bridge", BRIDGE))
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ctr_ns = -1
    check = None
    try:
        if _exists(bridge):  # its NAT rules may have gone with a firewall reload: see nat.Check
            from pyreg.runtime.network import nat

            check = nat.Check()
        linux.unshare(linux.CLONE_NEWNET)
        try:
            ctr_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            linux.setns(host_ns, linux.CLONE_NEWNET)
        if check is None:
            with ipam.locked():
                if not _exists(bridge):
                    _make_bridge(bridge, str(net["subnet"]), f"{net['gateway']}/{net['prefixlen']}")
        netlink.add_veth(host_if, bridge, "eth0", ctr_ns)
        linux.setns(ctr_ns, linux.CLONE_NEWNET)
        try:
            ifconfig.configure("eth0", str(net["ip"]), int(net["prefixlen"]), str(net["gateway"]))
        finally:
            linux.setns(host_ns, linux.CLONE_NEWNET)
        if check is not None:
            check.finish(str(net["subnet"]), bridge)
    except Exception as e:
        if check is not None:
            check.close()
        if ctr_ns >= 0:
            os.close(ctr_ns)  # the namespace, and the veth's end in it, die with this fd
        if _exists(host_if):
            with contextlib.suppress(RuntimeError):
                _ip([f"link del {host_if}"])
        raise ContainerError(f"network: {e}") from None
    finally:
        os.close(host_ns)
    return ctr_ns


def _make_bridge(bridge: str, subnet: str, gateway: str) -> None:
    """The bridge with the gateway address, its NAT rules, forwarding on: once, under the lock."""
    # a MAC of its own (locally administered), as docker gives docker0: otherwise the bridge
    # takes its ports' lowest, which changes as containers come and go (stale ARP entries)
    mac = "02:" + ":".join(f"{b:02x}" for b in os.urandom(5))
    _ip([f"link add name {bridge} address {mac} type bridge", f"addr replace {gateway} dev {bridge}",
         f"link set {bridge} up"])
    from pyreg.runtime.network import nat

    nat.ensure(subnet, bridge)
    _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")


def _write_sysctl(path: str, value: str) -> None:
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)


def release(rec: Container) -> None:
    """What a container leaves on its network: its name in the others' /etc/hosts, its DNAT
    rules. (Its veth
    went with its namespace; the bridge stays for the next container.) Forks nothing: the
    supervisor calls it after its pid namespace's PID 1 is gone."""
    from pyreg.runtime.network import networks

    net = rec.net or {}
    if net.get("dnat"):  # -p on other addresses than loopback: its rules go with it
        from pyreg.runtime.network import dnat

        dnat.remove(rec.id)
    networks.update_hosts(str(net.get("network", "bridge")), skip=rec.id)


def remove_bridge(bridge: str, subnet: str) -> None:
    """A user network's bridge and NAT rules (``pyreg network rm``), under the network lock."""
    from pyreg.runtime.network import nat

    with ipam.locked():
        if _exists(bridge):
            _ip([f"link del {bridge}"])
            nat.remove(subnet, bridge)
        else:  # never used (or removed by hand): rules only if iptables is there to have them
            with contextlib.suppress(OSError, RuntimeError):
                nat.remove(subnet, bridge)
