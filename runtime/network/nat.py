"""Outbound NAT for the bridge: one iptables chain of ours in the nat table.

``PYREG-POSTROUTING`` masquerades what leaves the subnet other than through the bridge, and
``PYREG-FORWARD`` (filter table) accepts the bridge's traffic whatever the FORWARD policy;
each is reached by one jump rule, so removal is exact: the jumps, then the chains. iptables
(the ``nf_tables`` backend on current Debian) because it is what the hosts here have;
published ports on other addresses than loopback have rules of their own (runtime/network/dnat.py).

A firewall reload (``firewall-cmd --reload``, ``iptables -F``, ``nft flush ruleset``) removes
these rules while ``pyreg0`` stays: docker re-adds its rules when firewalld says it reloaded;
pyreg has no daemon to hear that, so every container start on an existing bridge checks them
(``Check``: one ``iptables-save`` spawned before the veth is made and read after, so it runs beside
that work) and re-adds what is missing, under the network lock, with the DNAT rules of the
running containers (runtime/network/dnat.py ``restore``).
"""

from __future__ import annotations

import os

from pyreg.runtime.network import BRIDGE

_CHAINS = (("nat", "POSTROUTING", "PYREG-POSTROUTING"), ("filter", "FORWARD", "PYREG-FORWARD"))


def _save() -> dict[str, list[str]]:
    """The current rules, one ``iptables-save`` for all tables: {table: its lines}."""
    import subprocess

    proc = subprocess.run(["iptables-save"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"iptables-save: {proc.stderr.strip()}")
    return _parse(proc.stdout)


def _parse(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
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
    import subprocess

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
    _restore(_missing(_save(), subnet, bridge))


class Check:
    """``iptables-save`` running beside the caller's work, to tell whether this bridge's rules
    are all there (the module's docstring: a firewall reload). ``os.posix_spawnp`` and a pipe,
    not ``subprocess``: its import is milliseconds of every bridge start."""

    def __init__(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        try:
            self.pid = os.posix_spawnp("iptables-save", ["iptables-save"], os.environ, file_actions=[
                (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, null, 2)])
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)
            os.close(null)
        self.fd = r

    def _output(self) -> str:
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            self.fd = -1
            _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise RuntimeError(f"iptables-save exited with status {code}")
        return b"".join(chunks).decode(errors="replace")

    def finish(self, subnet: str, bridge: str = BRIDGE) -> bool:
        """Re-add what is missing of this bridge's rules (under the network lock); True if any was."""
        if not any(_missing(_parse(self._output()), subnet, bridge).values()):
            return False
        from pyreg.runtime.network import ipam

        with ipam.locked():  # two starts after one reload: the second finds them made
            ensure(subnet, bridge)
        from pyreg.runtime.network import dnat

        dnat.restore()  # the reload took the running containers' DNAT rules too
        return True

    def close(self) -> None:
        """Reap it without looking (the caller failed before ``finish``)."""
        if self.fd >= 0:
            import contextlib

            with contextlib.suppress(OSError, RuntimeError):
                self._output()


def _missing(saved: dict[str, list[str]], subnet: str, bridge: str) -> dict[str, list[str]]:
    """The iptables-restore lines that make what ``saved`` lacks of this bridge's chains, jumps
    and rules."""
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
    return script


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
