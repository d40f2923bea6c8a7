"""The container's /etc/hosts and /etc/resolv.conf on the bridge."""

from __future__ import annotations

FALLBACK_DNS = ("8.8.8.8", "8.8.4.4")  # docker's, when the host names only loopback resolvers


def hosts(hostname: str, ip: str) -> str:
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{ip}\t{hostname}\n")


def resolv_conf(host_text: str) -> str:
    """The host's resolv.conf without loopback nameservers (unreachable from the container's
    namespace: systemd-resolved's 127.0.0.53), as docker filters it."""
    out, servers = [], 0
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            if words[1].startswith("127.") or words[1] == "::1":
                continue
            servers += 1
        out.append(line)
    if not servers:
        out += [f"nameserver {ns}" for ns in FALLBACK_DNS]
    return "\n".join(out) + "\n"
