"""Working behind a reverse proxy (nginx): handing blob bodies to it with X-Accel-Redirect.

With the filesystem driver and ``proxy.xaccelredirect.enabled``, a blob GET answers with an empty
body and ``X-Accel-Redirect: <internalprefix><driver path>``; nginx's ``internal`` location for
that prefix (deploy/nginx.conf) aliases the driver's rootdirectory and serves the file itself
with sendfile, answering the client's Range header on its own. ``Location`` URLs behind a proxy
are built in registry/routes/common.py (relative, or from X-Forwarded-Proto/Host when
``proxy.trustforwarded``); uvicorn's proxy_headers handle X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from starlette.responses import Response

from registry.config import ProxyConfig
from storage.driver import Driver

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
