"""Failed-login limiting per client address.

Each failure is remembered for ``window`` seconds; an address with ``failures`` of them in that
window is refused (429) until the oldest one ages out. Successful logins do not clear the count,
so interleaving a known password does not buy more guesses. Memory is bounded.

The address is the connection's peer, or behind trusted proxies the client that registry/proxy.py
found in X-Forwarded-For. ``client_key`` counts an IPv6 client by its /64, the least a site is
given, so one host cannot step through its own addresses to get fresh counts.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field


def client_key(address: str) -> str:
    """What failures are counted under: an IPv4 address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class FailedLoginLimiter:
    failures: int = 10
    window: float = 60.0
    max_clients: int = 65536
    _seen: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        q = self._seen.get(client)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._seen[client]
            return None
        return q

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        if self.failures <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        q = self._recent(client, now)
        if q is None or len(q) < self.failures:
            return 0.0
        return max(0.0, q[-self.failures] + self.window - now)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        q = self._recent(client, now)
        if q is None:
            q = self._seen[client] = deque(maxlen=max(self.failures, 1))
        q.append(now)
        self._seen.move_to_end(client)
        while len(self._seen) > self.max_clients:
            self._seen.popitem(last=False)
