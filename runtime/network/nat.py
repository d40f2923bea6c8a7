"""Outbound NAT for the bridge: one iptables chain of ours in the nat table.

``PYREG-POSTROUTING`` masquerades what leaves the subnet other than through the bridge, and
``PYREG-FORWARD`` (filter table) accepts the bridge's traffic whatever the FORWARD policy;
each is reached by one jump rule, so removal is exact: the jumps, then the chains. iptables
(the ``nf_tables`` backend on current Debian) because it is what the hosts here have;
published ports need no rules (runtime/network/ports.py: a userland proxy).
"""

from __future__ import annotations

import subprocess

from pyreg.runtime.network import BRIDGE

_CHAINS = (("nat", "POSTROUTING", "PYREG-POSTROUTING"), ("filter", "FORWARD", "PYREG-FORWARD"))


def _save() -> dict[str, list[str]]:
    """The current rules, one ``iptables-save`` for all tables: {table: its lines}."""
    proc = subprocess.run(["iptables-save"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-save: {proc.stderr.strip()}")
    out: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith("*"):
            lines = out.setdefault(line[1:], [])
        else:
            lines.append(line)
    return out


def _restore(script: dict[str, list[str]]) -> None:
    """Apply every change in one ``iptables-restore --noflush`` (one transaction per table)."""
    text = "".join(f"*{table}\n" + "".join(f"{c}\n" for c in cmds) + "COMMIT\n"
                   for table, cmds in script.items() if cmds)
    if not text:
        return
    proc = subprocess.run(["iptables-restore", "-w", "--noflush"], input=text, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-restore: {proc.stderr.strip()}\n{text}")


def _rules(subnet: str, bridge: str) -> list[tuple[str, str]]:
    """(table, rule as iptables-save prints it)."""
    return [("nat", f"-A PYREG-POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE"),
            ("filter", f"-A PYREG-FORWARD -i {bridge} -j ACCEPT"),
            ("filter", f"-A PYREG-FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")]


def ensure(subnet: str, bridge: str = BRIDGE) -> None:
    """The chains, their jumps and this bridge's rules, once each (idempotent). Two processes
    (iptables-save, iptables-restore) rather than one iptables per check and change: each
    iptables run costs milliseconds, and start-up has a budget."""
    saved = _save()
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    for table, hook, chain in _CHAINS:
        have = saved.get(table, [])
        if not any(line.startswith(f":{chain} ") for line in have):
            script[table].append(f":{chain} - [0:0]")  # declared only when absent: it would flush
        if f"-A {hook} -j {chain}" not in have:
            script[table].append(f"-I {hook} -j {chain}")
    for table, rule in _rules(subnet, bridge):
        if rule not in saved.get(table, []):
            script[table].append(rule)
    _restore(script)


def remove(subnet: str, bridge: str = BRIDGE) -> None:
    """This bridge's rules; the jumps and the chains too once no bridge has rules left."""
    saved = _save()
    script: dict[str, list[str]] = {"nat": [], "filter": []}
    ours: dict[str, list[str]] = {"nat": [], "filter": []}
    for table, rule in _rules(subnet, bridge):
        ours[table].append(rule)
        for _ in range(saved.get(table, []).count(rule)):
            script[table].append("-D" + rule[2:])
    for table, hook, chain in _CHAINS:
        have = saved.get(table, [])
        if not any(line.startswith(f":{chain} ") for line in have):
            continue
        if any(line.startswith(f"-A {chain} ") and line not in ours[table] for line in have):
            continue  # another bridge's rules remain
        for _ in range(have.count(f"-A {hook} -j {chain}")):
            script[table].append(f"-D {hook} -j {chain}")
        script[table].append(f"-X {chain}")
    _restore(script)
