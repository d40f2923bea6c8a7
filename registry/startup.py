"""What ``pyreg serve`` does before it accepts requests: say what it is running, and prove storage works.

``summary(config)`` is the one start-up log line an operator reads to know the effective setup
(the config file, ``REGISTRY_*``/``PYREG_*`` variables and flags merged). ``check_storage(config)``
writes and deletes a small object at the storage root (only lists it in read-only mode), so an
unwritable data directory or an unreachable bucket stops the server with one clear line instead of
a server that answers every push with 500. ``/readyz`` (registry/app.py) runs the reachability
half of the same check for the probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

from pyreg.registry.config import Config
from pyreg.storage.errors import PathNotFoundError

CHECK_TIMEOUT = 60.0  # seconds for the whole check (the S3 client retries a refused connection)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def storage_location(config: Config) -> str:
    storage = config.storage
    if storage.s3 is not None:
        s3 = storage.s3
        endpoint = f" at {s3.regionendpoint}" if s3.regionendpoint else ""
        return f"s3 s3://{s3.bucket}/{s3.rootdirectory.strip('/')}{endpoint}"
    assert storage.filesystem is not None
    return f"filesystem {storage.filesystem.rootdirectory}"


def auth_mode(config: Config) -> str:
    auth = config.auth
    if auth.token is not None:
        issuer = "built-in issuer" if auth.token.signingkey else f"issuer {auth.token.issuer}"
        return f"token ({issuer})"
    if auth.htpasswd is not None:
        return f"htpasswd {auth.htpasswd.path}"
    return "none"


def summary(config: Config) -> str:
    """One line: address, TLS, storage, auth, delete, read-only, workers, cache, redis, metrics."""
    tls = config.tls is not None and bool(config.tls.certificate)
    mtls = tls and config.tls is not None and bool(config.tls.clientcas)
    cache = config.storage.cache
    cache_text = f"cache ttl {cache.ttl:g}s" if cache.ttl > 0 else "cache off"
    if config.redis is not None and config.redis.addr:
        redis_text = f"redis {config.redis.addr} db {config.redis.db}"
    else:
        redis_text = "redis off"
    metrics = config.metrics
    if not metrics.enabled:
        metrics_text = "metrics off"
    else:
        where = metrics.addr or "main listener"
        metrics_text = f"metrics {metrics.path} on {where}{' (token)' if metrics.token else ''}"
    return (f"pyreg serve: addr {config.addr}, tls {'mtls' if mtls else _on(tls)}, "
            f"storage {storage_location(config)}, auth {auth_mode(config)}, "
            f"delete {_on(config.storage.delete.enabled)}, "
            f"read-only {_on(config.storage.maintenance.readonly.enabled)}, workers {config.workers}, "
            f"{cache_text}, {redis_text}, {metrics_text}")


async def probe(driver: Any, write: bool) -> None:
    """List the storage root; with ``write``, also put and delete one small object there."""
    with contextlib.suppress(PathNotFoundError):  # an empty store
        await driver.list("/")
    if write:
        path = f"/.pyreg-write-check-{secrets.token_hex(8)}"
        await driver.put_content(path, b"pyreg start-up check\n")
        await driver.delete(path)


def check_storage(config: Config) -> str | None:
    """None when storage works, else the one line that says why it does not."""
    from pyreg.registry.drivers import make_driver

    where = storage_location(config)
    write = not config.storage.maintenance.readonly.enabled
    hint = (" (pass --data-dir DIR or storage.filesystem.rootdirectory naming a writable directory)"
            if config.storage.filesystem is not None and write else "")
    try:
        driver = make_driver(config)
    except Exception as e:
        return f"storage {where}: {_reason(e)}{hint}"
    try:
        asyncio.run(asyncio.wait_for(probe(driver, write), CHECK_TIMEOUT))
    except TimeoutError:
        return f"storage {where}: no answer within {CHECK_TIMEOUT:g}s"
    except Exception as e:
        what = "not writable" if write else "not readable"
        return f"storage {where} is {what}: {_reason(e)}{hint}"
    finally:
        close = getattr(driver, "close", None)
        if callable(close):
            close()
    return None


def check_auth(config: Config) -> str | None:
    """None when the auth files load (htpasswd, keys, certificates), else one line naming the key."""
    from pyreg.registry.auth.setup import build_service

    try:
        build_service(config)
    except OSError as e:
        key = "auth.htpasswd.path" if config.auth.htpasswd is not None else "auth.token"
        return f"{key}: cannot read {e.filename or ''}: {e.strerror or _reason(e)}"
    except ValueError as e:  # AuthSetupError and the key loaders' errors name the key
        return _reason(e)
    return None


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


def start_up(config: Config) -> bool:
    """Before serving: warn once about keys pyreg ignores, check storage (False: do not start, the
    reason is printed as one line), then log the effective setup."""
    import logging
    import sys

    from pyreg.registry.config import not_implemented_keys

    ignored = not_implemented_keys(config)
    if ignored:
        logging.getLogger("pyreg.config").warning(
            "configuration keys accepted but not implemented by pyreg (ignored): %s", ", ".join(ignored))
    if config.ignored_env:
        logging.getLogger("pyreg.config").warning(
            "environment variables that name no configuration key (ignored): %s",
            ", ".join(config.ignored_env))
    problem = check_auth(config) or check_storage(config)
    if problem is not None:
        print(f"pyreg serve: {problem}", file=sys.stderr)
        return False
    logging.getLogger("pyreg.serve").info(summary(config))
    return True
