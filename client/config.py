"""Client settings: which registries may be spoken to over plain HTTP, parallelism, chunk size.

Values come from flags, then environment (``PYREG_INSECURE_REGISTRIES`` comma list,
``PYREG_PARALLEL``, ``PYREG_CHUNK_SIZE``), then the client config file read by
``storage.reference.client_config`` (keys ``insecure_registries``, ``parallel``, ``chunk_size``).
"""

from __future__ import annotations

import ipaddress
import os

from storage.reference import client_config

DEFAULT_PARALLEL = 4


def host_only(registry: str) -> str:
    """``host`` of ``host:port`` / ``[v6]:port``."""
    if registry.startswith("["):
        return registry[1:registry.index("]")]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    host = host_only(registry)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_registries() -> set[str]:
    env = os.environ.get("PYREG_INSECURE_REGISTRIES")
    if env is not None:
        return {h.strip() for h in env.split(",") if h.strip()}
    return {str(h) for h in client_config().get("insecure_registries") or []}


def plain_http_allowed(registry: str, insecure_flag: bool = False) -> bool:
    """Plain HTTP only for loopback, ``--insecure``, or a host listed as insecure."""
    return insecure_flag or is_loopback(registry) or registry in insecure_registries() \
        or host_only(registry) in insecure_registries()


def parallel(flag: int | None = None) -> int:
    value = flag or os.environ.get("PYREG_PARALLEL") or client_config().get("parallel") or DEFAULT_PARALLEL
    return max(1, int(value))


def parse_size(text: str | int | None) -> int | None:
    """``10M``, ``512k``, ``1048576`` -> bytes; None/0 -> None (monolithic)."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, int):
        return text
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    value = int(float(t) * mult)
    if value <= 0:
        raise ValueError(f"invalid size {text!r}")
    return value


def chunk_size(flag: str | None = None) -> int | None:
    return parse_size(flag or os.environ.get("PYREG_CHUNK_SIZE") or client_config().get("chunk_size"))
