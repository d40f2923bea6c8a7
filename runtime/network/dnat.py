"""``-p`` on a host address other than loopback (and on 0.0.0.0): iptables DNAT, as docker.

A published port on a bridge container is reached two ways, as with docker's default
``userland-proxy: true``:

* packets for a host address other than 127.0.0.0/8 are rewritten to the container's address by a
  DNAT rule in ``PYREG-DNAT`` (nat table), reached from ``PREROUTING`` (from outside) and
  ``OUTPUT`` (made on this host, loopback destinations excepted) for local destination
  addresses; ``PYREG-FORWARD`` accepts them into the bridge whatever the FORWARD policy. The
  kernel forwards them: no hop through a process (bench/README.md: DNAT vs proxy);
* 127.0.0.1 (and a container of the same bridge reaching the host's address: ``! -i BRIDGE``)
  stays with the userland proxy (runtime/network/ports.py), which needs neither
  ``route_localnet`` nor a masquerade of loopback sources. The proxy still binds every published
  port, 0.0.0.0 included, so a port in use fails at once and no other process can take it.

Every rule carries the comment ``pyreg:<container id>``: removal is exact, by the janitor when the
container ends (its supervisor's end or ``kill -9``), or by the next pyreg command's sweep when
the janitor was killed too (``state.refresh`` -> ``bridge.release``).
"""

from __future__ import annotations

import ipaddress

from pyreg.runtime.network import ipam, nat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container

CHAIN = "PYREG-DNAT"
_JUMPS = ("-A PREROUTING -m addrtype --dst-type LOCAL -j PYREG-DNAT",
          "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYREG-DNAT")


def wanted(p: dict[str, Any]) -> bool:
    """A port DNAT serves: an IPv4 host address that is not loopback, or none (0.0.0.0)."""
    host = p.get("host_ip") or "0.0.0.0"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.version == 4 and not addr.is_loopback


def _tag(cid: str) -> str:
    return f"pyreg:{cid}"


def rules(rec: Container, published: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(table, rule) for each DNAT-served port of ``rec``."""
    net = rec.net or {}
    bridge, ip, tag = str(net.get("bridge")), str(net.get("ip")), _tag(rec.id)
    out = []
    for p in published:
        if not wanted(p):
            continue
        host = p.get("host_ip") or "0.0.0.0"
        dst = f"-d {host}/32 " if host != "0.0.0.0" else ""
        proto = p["proto"]
        out.append(("nat", f"-A {CHAIN} {dst}! -i {bridge} -p {proto} -m {proto} --dport {p['host_port']} "
                           f"-m comment --comment {tag} -j DNAT --to-destination {ip}:{p['port']}"))
        out.append(("filter", f"-A PYREG-FORWARD -d {ip}/32 ! -i {bridge} -o {bridge} -p {proto} -m {proto} "
                              f"--dport {p['port']} -m comment --comment {tag} -j ACCEPT"))
    return out


def add(rec: Container, published: list[dict[str, Any]]) -> bool:
    """The container's DNAT rules (and the chain and its jumps, once); False: none were needed."""
    todo = rules(rec, published)
    if not todo:
        return False
    with ipam.locked():  # the chain declared by two at once would be flushed by the second
        _add(nat._save(), todo, every=True)
    return True


def restore() -> None:
    """After a firewall reload (runtime/network/nat.py ``Check``): the rules of every running
    container that has DNAT-ed ports, where they are missing, as docker re-adds its rules."""
    from pyreg.runtime import state

    running = [r for r in state.all_containers()
               if r.net and r.net.get("dnat") and r.status == "running" and ipam.in_use(r)]
    if running:
        with ipam.locked():
            _add(nat._save(), [rule for r in running for rule in rules(r, (r.net or {}).get("ports") or [])],
                 every=False)


def _add(saved: dict[str, list[str]], todo: list[tuple[str, str]], every: bool) -> None:
    """The chain and its jumps where absent, and ``todo`` (only the absent ones unless ``every``)."""
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    have = saved.get("nat", [])
    if not any(line.startswith(f":{CHAIN} ") for line in have):
        script["nat"].append(f":{CHAIN} - [0:0]")
    for jump in _JUMPS:
        if jump not in have:
            script["nat"].append("-I" + jump[2:])
    for table, rule in todo:
        if every or rule not in saved.get(table, []):
            script[table].append(rule)
    nat._restore(script)


def remove(cid: str) -> None:
    """Every rule tagged with this container; the chain's jumps and the chain once it is empty."""
    tag = _tag(cid)
    with ipam.locked():
        saved = nat._save()
        script: dict[str, list[str]] = {"nat": [], "filter": []}
        for table in script:
            for line in saved.get(table, []):
                if line.startswith("-A ") and (f" {tag} " in line or f'"{tag}"' in line):
                    script[table].append("-D" + line[2:])
        have = saved.get("nat", [])
        left = [ln for ln in have if ln.startswith(f"-A {CHAIN} ") and "-D" + ln[2:] not in script["nat"]]
        if not left and any(ln.startswith(f":{CHAIN} ") for ln in have):
            script["nat"] += ["-D" + jump[2:] for jump in _JUMPS if jump in have]
            script["nat"].append(f"-X {CHAIN}")
        nat._restore(script)
