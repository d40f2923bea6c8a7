"""The bridge, the veth pair and the container's network namespace, through netlink (pyroute2).

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

from runtime import linux
from runtime.errors import ContainerError
from runtime.network import BRIDGE, ipam, nat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runtime.record import Container


def _veth_names(cid: str) -> tuple[str, str]:
    return f"veth{cid[:8]}", f"vp{cid[:10]}"  # IFNAMSIZ: 15 characters


def _ensure_bridge(ipr: Any, name: str, gateway: str, prefixlen: int) -> int:
    found = ipr.link_lookup(ifname=name)
    if found:
        idx = int(found[0])
    else:
        ipr.link("add", ifname=name, kind="bridge")
        idx = int(ipr.link_lookup(ifname=name)[0])
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
    if (gateway, prefixlen) not in have:
        ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
    ipr.link("set", index=idx, state="up")
    return idx


def _iproute() -> type[Any]:
    """pyroute2's IPRoute without the package's ``__init__``, which imports every family it has
    (conntrack, ndb, ipdb, wireguard, nl80211...: ~60 ms of CPU, most of ``import pyroute2``).
    The package is entered as a bare namespace so only ``pyroute2.iproute.linux`` and what it
    needs load; harmless when pyroute2 is imported already (then its own module is used)."""
    import sys

    if "pyroute2" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.submodule_search_locations is not None:
            bare = types.ModuleType("pyroute2")
            bare.__path__ = list(spec.submodule_search_locations)
            bare.__spec__ = spec
            sys.modules["pyroute2"] = bare
    from pyroute2.iproute.linux import IPRoute

    return IPRoute


def create(rec: Container) -> int:
    """Make the container's network namespace, wired to the bridge; returns an fd of it."""
    IPRoute = _iproute()

    net: dict[str, Any] = rec.net or {}
    host_if, peer_if = _veth_names(rec.id)
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ctr_ns = -1
    try:
        with ipam.locked(), IPRoute() as ipr:
            br = _ensure_bridge(ipr, net.get("bridge", BRIDGE), net["gateway"], int(net["prefixlen"]))
            nat.ensure(net["subnet"], net.get("bridge", BRIDGE))
            _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
            ipr.link("add", ifname=host_if, kind="veth", peer=peer_if)
            hidx = int(ipr.link_lookup(ifname=host_if)[0])
            ipr.link("set", index=hidx, master=br)
            ipr.link("set", index=hidx, state="up")
            linux.unshare(linux.CLONE_NEWNET)
            try:
                ctr_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                linux.setns(host_ns, linux.CLONE_NEWNET)
            pidx = int(ipr.link_lookup(ifname=peer_if)[0])
            ipr.link("set", index=pidx, net_ns_fd=ctr_ns)
        linux.setns(ctr_ns, linux.CLONE_NEWNET)
        try:
            with IPRoute() as ipr:
                lo = int(ipr.link_lookup(ifname="lo")[0])
                ipr.link("set", index=lo, state="up")
                idx = int(ipr.link_lookup(ifname=peer_if)[0])
                ipr.link("set", index=idx, ifname="eth0")
                ipr.addr("add", index=idx, address=net["ip"], prefixlen=int(net["prefixlen"]))
                ipr.link("set", index=idx, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=net["gateway"])
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
    IPRoute = _iproute()

    from runtime.network import networks

    net = rec.net or {}
    name = net.get("bridge", BRIDGE)
    host_if, _ = _veth_names(rec.id)
    with ipam.locked(), IPRoute() as ipr:
        for idx in ipr.link_lookup(ifname=host_if):
            with contextlib.suppress(Exception):
                ipr.link("del", index=idx)
        found = ipr.link_lookup(ifname=name)
        if found and not ipr.get_links(master=int(found[0])):
            ipr.link("del", index=int(found[0]))
            found = []
        if not found and net.get("subnet"):
            nat.remove(str(net["subnet"]), name)
        networks.update_hosts(str(net.get("network", "bridge")), skip=rec.id)
