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


def ensure(subnet: str) -> None:
    """The chains and their jumps, once (idempotent)."""
    if _ipt("-t", "nat", "-C", "POSTROUTING", "-j", "PYREG-POSTROUTING", check=False):
        return
    _ipt("-t", "nat", "-N", "PYREG-POSTROUTING", check=False)
    _ipt("-t", "nat", "-F", "PYREG-POSTROUTING")
    _ipt("-t", "nat", "-A", "PYREG-POSTROUTING", "-s", subnet, "!", "-o", BRIDGE, "-j", "MASQUERADE")
    _ipt("-t", "filter", "-N", "PYREG-FORWARD", check=False)
    _ipt("-t", "filter", "-F", "PYREG-FORWARD")
    _ipt("-t", "filter", "-A", "PYREG-FORWARD", "-i", BRIDGE, "-j", "ACCEPT")
    _ipt("-t", "filter", "-A", "PYREG-FORWARD", "-o", BRIDGE, "-m", "conntrack",
         "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
    _ipt("-t", "filter", "-I", "FORWARD", "-j", "PYREG-FORWARD")
    _ipt("-t", "nat", "-I", "POSTROUTING", "-j", "PYREG-POSTROUTING")


def remove() -> None:
    """The jumps and the chains, whatever is left of them."""
    for table, hook, chain in _CHAINS:
        while _ipt("-t", table, "-D", hook, "-j", chain, check=False):
            pass
        _ipt("-t", table, "-F", chain, check=False)
        _ipt("-t", table, "-X", chain, check=False)
