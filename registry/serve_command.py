"""``pyreg serve``: run the registry with uvicorn (uvloop + httptools), one or more workers.

Every connection's work is bounded by registry/http_protocol.py (head size, head deadline, idle
keep-alive, connections per worker, from the ``http`` keys); X-Forwarded-* are read by
registry/proxy.py inside the app, only from ``proxy.trustedproxies``, not by uvicorn.

With no flags and no config file it listens on 127.0.0.1:5000 and stores under ./data.
Precedence: flags > PYREG_* environment variables > the config file > defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("PYREG_CONFIG_FILE"),
                        help="YAML configuration file (default: none; also PYREG_CONFIG_FILE)")
    parser.add_argument("--addr", metavar="HOST:PORT", help="listen address (default 127.0.0.1:5000)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="filesystem storage root (storage.filesystem.rootdirectory, default ./data)")
    parser.add_argument("--workers", type=int, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")


def run(args: argparse.Namespace) -> int:
    from pyreg.registry.config import ConfigError, config_to_dict, load_config

    overrides: dict[str, Any] = {}
    if args.addr:
        overrides["addr"] = args.addr
    if args.data_dir:
        overrides["storage.filesystem.rootdirectory"] = args.data_dir
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.log_level:
        overrides["log.level"] = args.log_level
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as e:
        print(f"pyreg serve: configuration error: {e}", file=sys.stderr)
        return 2
    if config.storage.filesystem is not None:
        config.storage.filesystem.rootdirectory = os.path.abspath(config.storage.filesystem.rootdirectory)

    import uvicorn

    from pyreg.registry.app import CONFIG_ENV, create_app
    from pyreg.registry.http_protocol import BoundedHttpToolsProtocol, set_limits
    from pyreg.registry.logs import log_config

    level = config.log.level.lower()
    logging_config = log_config(level, config.log.format, config.log.fields)
    logging.config.dictConfig(logging_config)
    from pyreg.registry.startup import start_up

    if not start_up(config):  # the not-implemented keys, the storage check, the effective setup
        return 1
    options: dict[str, Any] = {
        "log_config": logging_config,
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": BoundedHttpToolsProtocol,
        "ws": "none",  # no WebSocket routes: no upgrade path to a protocol without these limits
        "log_level": "warning" if level == "warn" else level,
        "access_log": False,  # registry/accesslog.py writes one line per request (log.accesslog)
        "server_header": False,
        "proxy_headers": False,  # registry/proxy.py: trusted proxies only, right-most untrusted hop
        "timeout_keep_alive": config.http.idletimeout,
    }
    set_limits(_limits(config))  # the workers build their protocols from it
    if config.tls is not None and config.tls.certificate:
        options["ssl_certfile"] = config.tls.certificate
        options["ssl_keyfile"] = config.tls.key
        if config.tls.clientcas:
            import ssl

            from pyreg.registry.auth.tls import client_ca_bundle

            options["ssl_ca_certs"] = client_ca_bundle(config.tls.clientcas)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    if config.workers > 1:
        os.environ[CONFIG_ENV] = json.dumps(config_to_dict(config))
        if config.metrics.enabled:  # scrapes sum over every worker (registry/metrics.py)
            from pyreg.registry.metrics import prepare_workers

            prepare_workers(config.workers)
        if config.metrics.enabled and config.metrics.addr:  # the workers' sum, from this process
            from pyreg.registry import debug_server
            from pyreg.registry.metrics import render_all_workers

            if problem := debug_server.start(config, render_all_workers):
                print(f"pyreg serve: {problem}", file=sys.stderr)
                return 1
        uvicorn.run("pyreg.registry.app:create_app_from_env", factory=True, workers=config.workers, **options)
    else:
        app = create_app(config)
        if config.metrics.enabled and config.metrics.addr:
            from pyreg.registry import debug_server

            if problem := debug_server.start(config, app.state.metrics.render):
                print(f"pyreg serve: {problem}", file=sys.stderr)
                return 1
        uvicorn.run(app, **options)
    return 0


def _limits(config: Any) -> Any:
    """The per-worker limits, with the connection cap kept under the file descriptor limit (raised
    to its hard maximum first, as Go programs do), leaving room for the files and sockets that
    requests open."""
    import resource

    from pyreg.registry.http_protocol import Limits

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    http = config.http
    cap = http.maxconnections
    if soft != resource.RLIM_INFINITY:
        room = max(16, soft // 2 - 64)
        if cap > room:
            logging.getLogger("pyreg.http").warning(
                "http.maxconnections %d is more than the open-file limit (%d) allows: using %d",
                cap, soft, room)
            cap = room
    return Limits(max_head_bytes=http.maxheaderbytes, head_timeout=http.headertimeout, max_connections=cap)
