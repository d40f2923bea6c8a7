"""Hosts and ports as people write them: ``host:port``, ``[v6]:port``, bare hosts — and loopback.

One place for the grammar so the server (is it safe to run without auth?), the client (may it
speak plain HTTP?) and the config (which address to bind) agree on what ``[::1]:5000`` means.
"""

from __future__ import annotations

import re

_HOST_PORT = re.compile(r"\[([0-9A-Za-z:.%]+)\](?::(\d+))?|([^:\[\]]*)(?::(\d+))?")


def split_host_port(addr: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``host``, ``[v6]`` or a bare IPv6 address -> (host, port).

    A bare IPv6 address (``::1``) has no port: more than one ``:`` without brackets is a host.
    Raises ValueError for what is neither, or a port outside 0-65535."""
    text = addr.strip()
    if text.count(":") > 1 and not text.startswith("["):
        import ipaddress

        try:
            ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"expected HOST:PORT, got {addr!r}") from None
        return text, None
    m = _HOST_PORT.fullmatch(text)
    if not m:
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port_text = m.group(2) or m.group(4)
    port = int(port_text) if port_text is not None else None
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {addr!r}")
    return host, port


def host_of(addr: str) -> str:
    """The host part of ``addr`` (no brackets), or ``addr`` itself when it does not parse."""
    try:
        return split_host_port(addr)[0]
    except ValueError:
        return addr


def is_loopback(addr: str) -> bool:
    """Whether ``addr`` (a host or host:port) names this machine only: ``localhost`` and its
    subdomains (RFC 6761), ``ip6-localhost``, 127.0.0.0/8, ``::1`` and ``::ffff:127.x.y.z``."""
    host = host_of(addr).lower().rstrip(".")
    if host in ("localhost", "ip6-localhost", "ip6-loopback") or host.endswith(".localhost"):
        return True
    quad = host.split(".")
    if len(quad) == 4 and all(q.isascii() and q.isdigit() and len(q) <= 3 and str(int(q)) == q
                              and int(q) <= 255 for q in quad):
        return quad[0] == "127"  # a dotted quad as ipaddress spells it (no leading zeros)
    import ipaddress  # ~1 ms: only for IPv6 and the odd spelling

    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
