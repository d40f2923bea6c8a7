"""User networks (``pyreg network create NAME``): a bridge and a subnet of their own each, and
names: every container on one finds the others by name and ``--network-alias``.

Name resolution is ``/etc/hosts`` kept up to date, not a resolver pyreg runs: each container's
hosts file (bound into it as a file) is rewritten in place whenever a container joins or leaves
its network, under the network lock. No daemon has to stay up for names to resolve, nothing
listens inside the container's namespace, and every libc (musl, glibc) reads it; what docker's
embedded DNS adds (forwarding, round-robin over aliases) is not needed for names on one host.

Kept as ``networks/NAME.json`` in the run root. The default network ``bridge`` (``pyreg0``, the
client config's ``run.subnet``) is built in and has no names, as docker's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re

from pyreg.runtime import state
from pyreg.runtime.network import BRIDGE, DEFAULT_SUBNET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container

BUILTIN = ("bridge", "none", "host")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")


def _dir() -> str:
    return os.path.join(state.ensure_run_root(), "networks")


def _path(name: str) -> str:
    return os.path.join(_dir(), name + ".json")


def load(name: str) -> dict[str, Any] | None:
    if not _NAME.match(name):
        return None
    try:
        with open(_path(name)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_networks() -> list[dict[str, Any]]:
    try:
        names = sorted(n[:-5] for n in os.listdir(_dir()) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    return [n for n in (load(name) for name in names) if n is not None]


def create(name: str, subnet: str | None, default_subnet: str = DEFAULT_SUBNET) -> dict[str, Any]:
    """A new network; without ``subnet`` the first free /24 of 10.89.0.0/16."""
    if name in BUILTIN or not _NAME.match(name):
        raise ValueError(f"invalid network name {name!r}")
    if load(name) is not None:
        raise ValueError(f"network {name!r} already exists")
    used = [ipaddress.ip_network(n["subnet"]) for n in all_networks()]
    used.append(ipaddress.ip_network(default_subnet, strict=False))
    if subnet:
        net = ipaddress.ip_network(subnet, strict=False)
        if net.version != 4 or net.prefixlen > 30:
            raise ValueError(f"subnet {subnet}: an IPv4 subnet of at least 4 addresses is needed")
        if any(net.overlaps(u) for u in used):
            raise ValueError(f"subnet {net} overlaps another network's")
    else:
        free = (n for n in ipaddress.ip_network("10.89.0.0/16").subnets(new_prefix=24)
                if not any(n.overlaps(u) for u in used))
        net = next(free, None)  # type: ignore[assignment]
        if net is None:
            raise ValueError("no free subnet left in 10.89.0.0/16: give --subnet")
    import hashlib  # here: OpenSSL's _hashlib is ~3 ms of every bridge start-up otherwise

    nid = hashlib.sha256(os.urandom(32)).hexdigest()
    data = {"name": name, "id": nid, "subnet": str(net), "bridge": f"pyr{nid[:8]}",
            "created": state.now()}
    os.makedirs(_dir(), 0o700, exist_ok=True)
    with open(_path(name), "x") as f:
        json.dump(data, f)
    return data


def remove(name: str) -> None:
    """The network's bridge and NAT rules (made by its first container and left up), then it."""
    from pyreg.runtime.network import bridge

    data = load(name)
    if data is not None:
        bridge.remove_bridge(str(data["bridge"]), str(data["subnet"]))
    os.unlink(_path(name))


def members(name: str, skip: str = "") -> list[Container]:
    """The containers that hold an address on network ``name``."""
    from pyreg.runtime.network.ipam import in_use

    return [r for r in state.all_containers()
            if r.id != skip and r.net and r.net.get("network", "bridge") == name and in_use(r)]


def hosts_text(rec: Container, peers: list[Container]) -> str:
    from pyreg.runtime.network import files

    text = files.hosts(rec.config.hostname, str((rec.net or {}).get("ip")))
    for p in peers:
        if p.id != rec.id and p.net:
            names = [p.name, *p.net.get("aliases", []), p.config.hostname, p.id[:12]]
            text += f"{p.net['ip']}\t{' '.join(dict.fromkeys(n for n in names if n))}\n"
    return text


def update_hosts(name: str, skip: str = "") -> None:
    """Rewrite, in place (the file is bound into each container), every member's /etc/hosts."""
    if name == "bridge":
        return
    peers = members(name, skip)
    for rec in peers:
        path = os.path.join(state.container_dir(rec.id), "hosts")
        try:
            with open(path, "r+") as f:
                f.truncate(0)
                f.write(hosts_text(rec, peers))
        except OSError:
            continue


def resolve(name: str, default_subnet: str) -> dict[str, Any]:
    """{network, subnet, bridge} of ``--network NAME`` (``bridge``: the built-in one)."""
    if name == "bridge":
        return {"network": "bridge", "subnet": default_subnet, "bridge": BRIDGE}
    data = load(name)
    if data is None:
        raise ValueError(f"network {name!r} not found")
    return {"network": name, "subnet": data["subnet"], "bridge": data["bridge"]}
