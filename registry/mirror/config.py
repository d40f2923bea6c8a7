"""The mirror's configuration checks and name mapping: which upstream serves a name, under
which name upstream.

``mirror.upstreams[i].namespace`` is ``*`` (every name, at the root: Docker's
``registry-mirrors`` style, one default upstream) or ``<prefix>/*`` (``hub/*``: ``hub/alpine``
is ``alpine`` upstream). ``remoteprefix`` goes before the rest upstream, and with ``library``
(on by default for Docker Hub) a one-part rest gets ``library/``, as docker's reference rules
say. ``mirror.local`` patterns (``team/*``, or a plain name) are never mirrored and stay
pushable; everything else a namespace matches is read-only here.

Distribution's ``proxy: {remoteurl, username, password, ttl}`` becomes the first upstream,
namespace ``*``: a Distribution proxy config works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pyreg.registry.config import Config, ConfigError, MirrorConfig, UpstreamConfig
from pyreg.storage.names import name_problem

DOCKER_HUB_HOSTS = frozenset({"registry-1.docker.io", "docker.io", "index.docker.io"})


def upstream_host(url: str) -> str:
    """host[:port] of an upstream URL (with or without a scheme)."""
    return urlsplit(url if "://" in url else f"https://{url}").netloc


def _check_pattern(pattern: str, key: str) -> str:
    if pattern == "*":
        return pattern
    prefix = pattern[:-2] if pattern.endswith("/*") else pattern
    problem = name_problem(prefix)
    if problem is not None:
        raise ConfigError(f"{key}: expected * or a namespace like hub/*, got {pattern!r} ({problem})")
    return pattern


def matches(pattern: str, name: str) -> bool:
    """``*`` matches every name, ``hub/*`` every name under hub/, anything else exactly itself."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def check_mirror(config: Config) -> None:
    """Move Distribution's ``proxy.remoteurl`` into ``mirror.upstreams`` and check every upstream;
    errors name the key."""
    proxy = config.proxy
    mirror: MirrorConfig = config.mirror
    if proxy.remoteurl:
        if any(u.namespace == "*" for u in mirror.upstreams):
            raise ConfigError("proxy.remoteurl: mirror.upstreams already has an upstream for every "
                              "name (namespace *); keep one")
        upstream = UpstreamConfig(url=proxy.remoteurl, namespace="*", username=proxy.username,
                                  password=proxy.password)
        if proxy.ttl is not None:
            upstream.ttl = proxy.ttl
        mirror.upstreams.append(upstream)
        # moved, not copied: the config handed to workers (config_to_dict) must load again
        proxy.remoteurl = proxy.username = proxy.password = None
        proxy.ttl = None
    elif proxy.username or proxy.password or proxy.ttl is not None:
        raise ConfigError("proxy.remoteurl: required with proxy.username, proxy.password or proxy.ttl")
    seen: set[str] = set()
    for i, upstream in enumerate(mirror.upstreams):
        key = f"mirror.upstreams[{i}]"
        if not upstream.url:
            raise ConfigError(f"{key}.url: required (https://registry-1.docker.io, http://host:port)")
        parts = urlsplit(upstream.url if "://" in upstream.url else f"https://{upstream.url}")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") \
                or parts.query:
            raise ConfigError(f"{key}.url: expected http(s)://host[:port], got {upstream.url!r}")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"{key}.url: bad port in {upstream.url!r}") from None
        _check_pattern(upstream.namespace, f"{key}.namespace")
        if upstream.namespace in seen:
            raise ConfigError(f"{key}.namespace: {upstream.namespace!r} is mirrored twice")
        seen.add(upstream.namespace)
        if upstream.remoteprefix and name_problem(upstream.remoteprefix.rstrip("/")) is not None:
            raise ConfigError(f"{key}.remoteprefix: not a repository namespace: {upstream.remoteprefix!r}")
        if upstream.password is not None and upstream.username is None:
            raise ConfigError(f"{key}.username: required with a password")
        if upstream.credentialhelper is not None and (
                not upstream.credentialhelper or "/" in upstream.credentialhelper):
            raise ConfigError(f"{key}.credentialhelper: the helper's name (docker-credential-<name>), "
                              f"got {upstream.credentialhelper!r}")
        if upstream.ttl <= 0:
            raise ConfigError(f"{key}.ttl: must be positive")
        if upstream.tagttl < 0:
            raise ConfigError(f"{key}.tagttl: must not be negative")
        if upstream.library is None:
            upstream.library = parts.hostname in DOCKER_HUB_HOSTS
        upstream.name = upstream.name or upstream_host(upstream.url)
    for i, pattern in enumerate(mirror.local):
        _check_pattern(pattern, f"mirror.local[{i}]")


@dataclass(frozen=True)
class Route:
    """Where a local name comes from: the upstream's index and the name upstream."""

    upstream: int
    remote: str


def route(mirror: MirrorConfig, name: str) -> Route | None:
    """The upstream serving ``name`` (None: a local name). Longer namespaces win over ``*``."""
    if any(matches(p, name) for p in mirror.local):
        return None
    best: tuple[int, int] | None = None
    for i, upstream in enumerate(mirror.upstreams):
        if matches(upstream.namespace, name):
            weight = len(upstream.namespace)
            if best is None or weight > best[1]:
                best = (i, weight)
    if best is None:
        return None
    upstream = mirror.upstreams[best[0]]
    rest = name if upstream.namespace == "*" else name[len(upstream.namespace) - 1:]
    if not rest:
        return None
    remote = upstream.remoteprefix.rstrip("/") + "/" + rest if upstream.remoteprefix else rest
    if upstream.library and "/" not in remote:
        remote = f"library/{remote}"
    return Route(best[0], remote)
