"""Outbound NAT for the bridge: one iptables chain of ours in the nat table.

``PYREG-POSTROUTING`` masquerades what leaves the subnet other than through the bridge, and
``PYREG-FORWARD`` (filter table) accepts the bridge's traffic whatever the FORWARD policy;
each is reached by one jump rule, so removal is exact: the jumps, then the chains. iptables
(the ``nf_tables`` backend on current Debian) because it is what the hosts here have;
published ports need no rules (runtime/network/ports.py: a userland proxy).
"""

from __future__ import annotations

import subprocess

from runtime.network import BRIDGE

_CHAINS = (("nat", "POSTROUTING", "PYREG-POSTROUTING"), ("filter", "FORWARD", "PYREG-FORWARD"))


def _ipt(*args: str, check: bool = True) -> bool:
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(args)}: {proc.stderr.strip()}")
    return proc.returncode == 0


def _rules(subnet: str, bridge: str) -> list[tuple[str, list[str]]]:
    return [("nat", ["PYREG-POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"]),
            ("filter", ["PYREG-FORWARD", "-i", bridge, "-j", "ACCEPT"]),
            ("filter", ["PYREG-FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                        "-j", "ACCEPT"])]


def ensure(subnet: str, bridge: str = BRIDGE) -> None:
    """The chains, their jumps and this bridge's rules, once each (idempotent)."""
    for table, hook, chain in _CHAINS:
        if not _ipt("-t", table, "-C", hook, "-j", chain, check=False):
            _ipt("-t", table, "-N", chain, check=False)
            _ipt("-t", table, "-I", hook, "-j", chain)
    for table, rule in _rules(subnet, bridge):
        if not _ipt("-t", table, "-C", *rule, check=False):
            _ipt("-t", table, "-A", *rule)


def remove(subnet: str, bridge: str = BRIDGE) -> None:
    """This bridge's rules; the jumps and the chains too once no bridge has rules left."""
    for table, rule in _rules(subnet, bridge):
        while _ipt("-t", table, "-D", *rule, check=False):
            pass
    for table, hook, chain in _CHAINS:
        listing = subprocess.run(["iptables", "-w", "-t", table, "-S", chain], capture_output=True,
                                 text=True)
        if listing.returncode == 0 and "-A " in listing.stdout:
            continue
        while _ipt("-t", table, "-D", hook, "-j", chain, check=False):
            pass
        _ipt("-t", table, "-F", chain, check=False)
        _ipt("-t", table, "-X", chain, check=False)
