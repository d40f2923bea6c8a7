"""Addresses for bridge containers: the lowest free host address of the subnet.

Free means no record of a container that is created or alive holds it; the choice and the
save of the record happen under one lock (``network.lock`` in the run root), so two
``pyreg run`` at once never get the same address. A container killed with ``kill -9`` frees its
address by being dead: nothing to sweep.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os

from pyreg.runtime import state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from pyreg.runtime.record import Container


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The run root's network lock (allocation, bridge creation and removal)."""
    root = state.ensure_run_root()
    fd = os.open(os.path.join(root, "network.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def in_use(rec: Container) -> bool:
    """A record whose network is still (or about to be) set up."""
    if not rec.net:
        return False
    if rec.status == "created":
        return True
    return rec.status == "running" and state.refresh(rec, sweep=False).status == "running"


def allocate(subnet: str, taken_by: list[Container]) -> tuple[str, str, int]:
    """(address, gateway, prefix length): the gateway is the subnet's first host address."""
    net = ipaddress.ip_network(subnet, strict=False)
    if net.version != 4 or net.prefixlen > 30:
        raise ValueError(f"subnet {subnet}: an IPv4 subnet of at least 4 addresses is needed")
    taken = {r.net.get("ip") for r in taken_by if r.net and in_use(r)}
    hosts = net.hosts()
    gateway = str(next(hosts))
    for addr in hosts:
        if str(addr) not in taken:
            return str(addr), gateway, net.prefixlen
    raise ValueError(f"subnet {subnet}: no free address")
