"""Working behind a reverse proxy (nginx): whose X-Forwarded-* to believe, and handing blob bodies
to it with X-Accel-Redirect.

With ``proxy.trustforwarded``, ``ForwardedMiddleware`` (the app's outermost layer) believes
X-Forwarded-For/-Proto/-Host only on connections from ``proxy.trustedproxies`` (CIDRs; loopback by
default) and strips them from every other request, so nothing further in (Location URLs, the token
realm) can be steered by a client. The client address is the right-most hop of X-Forwarded-For
that is not a trusted proxy, as nginx's ``real_ip_recursive on`` takes it: every trusted proxy
appends the address it saw, so hops left of the first untrusted one are the client's own words.
The access log, the failed-login limiter and webhooks all see that address.

With the filesystem driver and ``proxy.xaccelredirect.enabled``, a blob GET answers with an empty
body and ``X-Accel-Redirect: <internalprefix><driver path>``; nginx's ``internal`` location for
that prefix (deploy/nginx.conf) aliases the driver's rootdirectory and serves the file itself
with sendfile, answering the client's Range header on its own. ``Location`` URLs behind a proxy
are built in registry/routes/common.py (relative, or from X-Forwarded-Proto/Host when
``proxy.trustforwarded``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from pyreg.registry.config import ProxyConfig
from pyreg.storage.driver import Driver
from pyreg.storage.netaddr import host_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
_MAX_HOPS = 32  # a longer X-Forwarded-For is cut from the left (the part a client wrote)


def parse_ip(text: str) -> IPAddress | None:
    """An address from an X-Forwarded-For hop: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80`` or ``::1``."""
    try:
        ip = ipaddress.ip_address(host_of(text.strip()))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class TrustedProxies:
    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __contains__(self, ip: IPAddress | None) -> bool:
        return ip is not None and any(ip.version == n.version and ip in n for n in self.networks)

    def client(self, peer: IPAddress, forwarded_for: str) -> IPAddress:
        """The right-most untrusted hop (nginx real_ip_recursive); all trusted: the left-most. A hop
        that is not an address ends the walk at the trusted hop to its right."""
        address = peer
        for hop in reversed(forwarded_for.split(",")[-_MAX_HOPS:]):
            ip = parse_ip(hop)
            if ip is None:
                break
            address = ip
            if ip not in self:
                break
        return address


class ForwardedMiddleware:
    def __init__(self, app: ASGIApp, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = TrustedProxies(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = parse_ip(str(client[0])) if client else None
        headers = scope.get("headers") or []
        if peer not in self.trusted:
            if any(k in _FORWARDED for k, _ in headers):
                scope = {**scope, "headers": [(k, v) for k, v in headers if k not in _FORWARDED]}
            await self.app(scope, receive, send)
            return
        assert peer is not None
        xff = b",".join(v for k, v in headers if k == b"x-forwarded-for").decode("latin-1")
        proto = next((v for k, v in headers if k == b"x-forwarded-proto"), b"").decode("latin-1")
        proto = proto.split(",")[0].strip().lower()
        scope = dict(scope)
        if xff.strip():
            real = self.trusted.client(peer, xff)
            if real != peer:
                scope["client"] = (str(real), 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto if scope["type"] == "http" else proto.replace("http", "ws")
        await self.app(scope, receive, send)


def forwarded_middleware(proxy: ProxyConfig) -> Middleware:
    return Middleware(ForwardedMiddleware, trusted=proxy.trustedproxies)

# Headers that describe the body; nginx computes its own for the file it sends.
_BODY_HEADERS = {"content-length", "content-range"}


def accel_redirect(proxy: ProxyConfig, driver: Driver, path: str,
                   headers: Mapping[str, str]) -> Response | None:
    """The X-Accel-Redirect answer for a blob GET, or None when the body must stream from pyreg.

    The reply itself carries no body, so it must not announce one: a Content-Length of the blob
    on an empty reply would desynchronise nginx's keepalive connection (and any direct client).
    """
    xaccel = proxy.xaccelredirect
    if not xaccel.enabled or driver.name != "filesystem":
        return None
    out = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    out["X-Accel-Redirect"] = quote(xaccel.internalprefix.rstrip("/") + path)
    return Response(b"", status_code=200, headers=out)
