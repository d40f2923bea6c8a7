"""The metrics listener on its own address (``metrics.addr``, Distribution's ``http.debug.addr``).

Distribution serves Prometheus metrics on a separate debug listener, so the registry's port never
exposes them and a firewall or a NetworkPolicy can keep scrapes internal. Here it is a small
threaded HTTP server in the ``pyreg serve`` process: with one worker it renders that worker's
metrics; with several (the supervisor process) it sums the workers' shared metric files, as a
scrape of the main listener does. The same ``metrics.path`` and ``metrics.token`` apply.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from pyreg.registry.config import Config, split_addr


def start(config: Config, render: Callable[[], bytes]) -> str | None:
    """Listen on ``metrics.addr`` in a daemon thread; None, or the one line saying why it cannot."""
    try:
        serve(config, render)
    except OSError as e:
        return f"metrics.addr (http.debug.addr) {config.metrics.addr}: {e.strerror or e}"
    return None


def serve(config: Config, render: Callable[[], bytes]) -> ThreadingHTTPServer:
    """Listen on ``metrics.addr`` in a daemon thread; returns the server (``shutdown()`` stops it)."""
    metrics = config.metrics
    assert metrics.addr is not None
    host, port = split_addr(metrics.addr, "metrics.addr")
    expected = f"Bearer {metrics.token}".encode() if metrics.token else None

    class Handler(BaseHTTPRequestHandler):
        server_version = "pyreg"
        sys_version = ""

        def _answer(self, body: bool) -> None:
            if self.path.split("?", 1)[0] != metrics.path:
                self._send(404, b"not found\n", "text/plain; charset=utf-8", body)
            elif expected is not None and not hmac.compare_digest(
                    self.headers.get("Authorization", "").encode(), expected):
                self._send(401, b"metrics: a bearer token is required\n", "text/plain; charset=utf-8", body,
                           [("WWW-Authenticate", 'Bearer realm="metrics"')])
            else:
                self._send(200, render(), CONTENT_TYPE_LATEST, body)

        def _send(self, status: int, data: bytes, content_type: str, body: bool,
                  extra: list[tuple[str, str]] | None = None) -> None:
            self.send_response(status)
            for key, value in [("Content-Type", content_type), ("Content-Length", str(len(data))),
                               ("Cache-Control", "no-store"), *(extra or [])]:
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="pyreg-metrics", daemon=True).start()
    return server
