"""The registry's whole configuration: one YAML file, ``PYREG_*`` environment overrides, flags.

This module is the single definition of every key (as dataclasses) and its validation. Precedence:
flags beat environment variables, which beat the file, which beats the defaults here. An
environment variable names a key path in upper case joined by ``_``: ``PYREG_STORAGE_S3_BUCKET``
sets ``storage.s3.bucket``; its value is read as YAML (so ``true``, ``5`` and ``[a, b]`` work).
A bad key or value raises ``ConfigError`` naming the key path.

A Distribution (``registry:2``) config file works unchanged, through the same schema: its keys
that name a pyreg key in another place (``http.addr``, ``http.tls``, ``http.debug``,
``log.formatter``, ``loglevel``) are moved there by ``ALIASES`` before the file, each environment
variable and the flags are merged; ``REGISTRY_*`` variables work as ``PYREG_*`` ones do. Keys of
Distribution that pyreg does not implement are fields marked ``not_implemented()``: accepted, and
named by ``not_implemented_keys(config)`` (``pyreg serve`` logs them in one warning line).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

ENV_PREFIX = "PYREG_"
ENV_PREFIXES = (ENV_PREFIX, "REGISTRY_")  # pyreg's own, and Distribution's names


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value; the message names the key path."""


# Field metadata marking how a scalar is read.
DURATION = {"kind": "duration"}  # "168h", "20m", "1h30m", "500ms" or a number of seconds
SIZE = {"kind": "size"}  # bytes: 10485760, "10MiB", "5MB"


def duration_field(default: float) -> Any:
    return field(default=default, metadata=DURATION)


def not_implemented(*harmless: Any) -> dict[str, Any]:
    """Field metadata of a Distribution key pyreg accepts but does not act on: any value is kept
    as given, and one other than ``harmless`` (values whose meaning pyreg already has) is named in
    the start-up warning. Used as ``field(default=None, metadata=not_implemented(...))``."""
    return {"notimplemented": True, "harmless": harmless}


NOT_IMPLEMENTED = not_implemented()


@dataclass
class FilesystemConfig:
    rootdirectory: str = "./data"
    maxthreads: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class RedirectConfig:
    enabled: bool = False
    expiry: float = duration_field(1200.0)


@dataclass
class S3Config:
    bucket: str = ""
    region: str = "us-east-1"
    regionendpoint: str | None = None
    forcepathstyle: bool = False
    rootdirectory: str = "/"
    accesskey: str | None = None
    secretkey: str | None = None
    chunksize: int = field(default=10 * 1024 * 1024, metadata=SIZE)
    secure: bool = True
    sessiontoken: str | None = None
    redirect: RedirectConfig = field(default_factory=RedirectConfig)
    lockttl: float = duration_field(30.0)  # an upload-session lock outlives a dead holder this long
    # Distribution's s3-aws keys that pyreg's driver does not act on (boto3 signs with v4 anyway)
    v4auth: Any = field(default=None, metadata=not_implemented(True))
    encrypt: Any = field(default=None, metadata=not_implemented(False))
    keyid: Any = field(default=None, metadata=not_implemented(""))
    skipverify: Any = field(default=None, metadata=not_implemented(False))
    storageclass: Any = field(default=None, metadata=not_implemented("STANDARD"))
    objectacl: Any = field(default=None, metadata=not_implemented("private"))
    accelerate: Any = field(default=None, metadata=not_implemented(False))
    usedualstack: Any = field(default=None, metadata=not_implemented(False))
    useragent: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopychunksize: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopymaxconcurrency: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopythresholdsize: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    loglevel: Any = field(default=None, metadata=not_implemented("off"))
    checksumdisabled: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class DeleteConfig:
    enabled: bool = False


@dataclass
class ReadOnlyConfig:
    enabled: bool = False


@dataclass
class UploadPurgingConfig:
    enabled: bool = True
    age: float = duration_field(168 * 3600.0)
    interval: float = duration_field(24 * 3600.0)
    dryrun: bool = False


@dataclass
class MaintenanceConfig:
    readonly: ReadOnlyConfig = field(default_factory=ReadOnlyConfig)
    uploadpurging: UploadPurgingConfig = field(default_factory=UploadPurgingConfig)


@dataclass
class CacheConfig:
    """In-process cache of tag -> digest, blob stat and manifest lookups.

    Writes and deletes in the same process invalidate at once; ``ttl`` bounds how long another
    replica's change can go unseen. 0 turns the cache off.
    """

    ttl: float = duration_field(1.0)
    maxentries: int = 10000
    blobdescriptor: str = "inmemory"  # Distribution's: inmemory (this cache) or redis (the redis key)
    blobdescriptorsize: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class StorageRedirectConfig:
    """Distribution's ``storage.redirect.disable``: with s3, sets ``storage.s3.redirect.enabled``."""

    disable: bool | None = None


@dataclass
class StorageConfig:
    filesystem: FilesystemConfig | None = None
    s3: S3Config | None = None
    delete: DeleteConfig = field(default_factory=DeleteConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    redirect: StorageRedirectConfig = field(default_factory=StorageRedirectConfig)
    tag: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    # Distribution's other drivers: refused with a clear error (pyreg stores on filesystem or s3)
    inmemory: Any = None
    azure: Any = None
    gcs: Any = None
    swift: Any = None
    oss: Any = None

    @property
    def driver(self) -> str:
        return "s3" if self.s3 is not None else "filesystem"


@dataclass
class HtpasswdConfig:
    realm: str = "pyreg"
    path: str = ""


@dataclass
class TokenConfig:
    """Token auth (registry/auth). With ``signingkey`` pyreg issues tokens at ``/token`` (users from
    ``auth.htpasswd``); ``rootcertbundle``/``jwks`` trust an external issuer's keys."""

    realm: str = ""  # default with signingkey: this server's /token
    service: str = "pyreg"
    issuer: str = "pyreg"
    rootcertbundle: str | None = None
    jwks: str | None = None
    signingkey: str | None = None
    certificate: str | None = None  # the signing key's certificate chain, sent as x5c
    kidformat: str = "libtrust"  # or "thumbprint" (RFC 7638, what Distribution 3 expects)
    expiration: float = duration_field(300.0)
    refreshexpiration: float = duration_field(30 * 86400.0)
    autoredirect: bool = False
    autoredirectpath: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    signingalgorithms: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class RateLimitConfig:
    """Failed logins allowed per client address within ``window`` before 429."""

    failures: int = 10
    window: float = duration_field(60.0)


@dataclass
class AuthConfig:
    htpasswd: HtpasswdConfig | None = None
    token: TokenConfig | None = None
    groups: dict[str, list[str]] = field(default_factory=dict)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    silly: Any = None  # Distribution's development-only auth: refused, never silently dropped


@dataclass
class AccessRule:
    repository: str = "*"
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    anonymous: bool = False
    actions: list[str] = field(default_factory=list)


@dataclass
class TLSConfig:
    certificate: str | None = None
    key: str | None = None
    clientcas: list[str] = field(default_factory=list)
    hsts: float = duration_field(0.0)  # Strict-Transport-Security max-age; 0 = no header
    # Python's TLS server context refuses below TLS 1.2 already; tls1.3 is not enforced (warned)
    minimumtls: Any = field(default=None, metadata=not_implemented("tls1.0", "tls1.1", "tls1.2"))
    ciphersuites: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    clientauth: Any = field(default=None, metadata=not_implemented("require-and-verify-client-cert"))
    letsencrypt: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class XAccelRedirectConfig:
    enabled: bool = False
    internalprefix: str = "/_blobs"


@dataclass
class ProxyConfig:
    """``trustforwarded``: believe X-Forwarded-For/-Proto/-Host, only from ``trustedproxies``
    (addresses or CIDRs; registry/proxy.py)."""

    trustforwarded: bool = False
    trustedproxies: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    xaccelredirect: XAccelRedirectConfig = field(default_factory=XAccelRedirectConfig)
    # Distribution's ``proxy`` is its pull-through cache (a later feature here): accepted, warned
    remoteurl: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    username: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    password: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    ttl: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    exec: Any = field(default=None, metadata=NOT_IMPLEMENTED)

    def __post_init__(self) -> None:
        import ipaddress

        for i, value in enumerate(self.trustedproxies):
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"proxy.trustedproxies[{i}]: expected an address or CIDR like "
                                  f"10.0.0.0/8, got {value!r}") from None


@dataclass
class AccessLogConfig:
    disabled: bool = False


@dataclass
class LogConfig:
    level: str = "info"
    format: str = "text"  # text, json or logstash (Distribution's ``log.formatter``)
    fields: dict[str, str] = field(default_factory=dict)  # added to every line, as Distribution does
    accesslog: AccessLogConfig = field(default_factory=AccessLogConfig)
    hooks: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    reportcaller: Any = field(default=None, metadata=not_implemented(False))


@dataclass
class HTTPConfig:
    """``http.host`` and the per-connection limits of ``pyreg serve`` (registry/http_protocol.py)."""

    secret: str | None = None
    host: str | None = None  # external base URL (https://registry.example.com) for absolute Locations
    maxheaderbytes: int = field(default=64 * 1024, metadata=SIZE)  # request line + headers; more: 431
    headertimeout: float = duration_field(20.0)  # deadline for a request's line and headers
    idletimeout: float = duration_field(30.0)  # a keep-alive connection waiting for its next request
    maxconnections: int = 1024  # open connections per worker; at the cap the longest-waiting closes
    headers: dict[str, list[str]] = field(default_factory=dict)  # added to every response
    net: str = "tcp"
    relativeurls: bool = True  # pyreg's Location headers are relative unless http.host is set
    prefix: Any = field(default=None, metadata=not_implemented("", "/"))
    http2: Any = field(default=None, metadata=not_implemented({"disabled": True}))  # HTTP/1.1 only here
    draintimeout: Any = field(default=None, metadata=NOT_IMPLEMENTED)

    def __post_init__(self) -> None:
        if self.maxheaderbytes < 1024:
            raise ConfigError("http.maxheaderbytes: must be at least 1024")
        for key in ("headertimeout", "idletimeout"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"http.{key}: must be positive")
        if self.maxconnections < 1:
            raise ConfigError("http.maxconnections: must be at least 1")


@dataclass
class NotificationIgnore:
    mediatypes: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


@dataclass
class NotificationEndpoint:
    """A webhook (registry/notifications.py), shaped like Distribution's notifications endpoint."""

    name: str = ""
    disabled: bool = False
    url: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)  # Distribution's [v] lists, or "v"
    timeout: float = duration_field(5.0)
    threshold: int = 3  # consecutive failures before waiting ``backoff`` between retries
    backoff: float = duration_field(1.0)
    queuesize: int = 1000  # events held for a slow endpoint; beyond that new ones are dropped
    events: list[str] = field(default_factory=lambda: ["push", "delete"])
    ignoredmediatypes: list[str] = field(default_factory=list)
    ignore: NotificationIgnore = field(default_factory=NotificationIgnore)


@dataclass
class NotificationsConfig:
    endpoints: list[NotificationEndpoint] = field(default_factory=list)
    events: Any = field(default=None, metadata=NOT_IMPLEMENTED)  # Distribution's events.includereferences


@dataclass
class MetricsConfig:
    """Prometheus metrics (registry/metrics.py), outside registry auth; ``token``: scrapes need it."""

    enabled: bool = True
    path: str = "/metrics"
    token: str | None = None
    addr: str | None = None  # a separate listener (Distribution's http.debug.addr); then not on addr


@dataclass
class UIConfig:
    """The web UI (registry/ui/): off by default; served under ``path`` with the API's auth."""

    enabled: bool = False
    path: str = "/ui"


@dataclass
class PlatformConfig:
    architecture: str = ""
    os: str = ""


@dataclass
class IndexValidationConfig:
    """Which children of a pushed index must exist already (Distribution 3's names).

    ``all`` (the default): every child; ``none``: no child (sparse indexes); ``list``: only the
    children whose platform is in ``platformlist`` (a child without a platform always).
    """

    platforms: str = "all"
    platformlist: list[PlatformConfig] = field(default_factory=list)


@dataclass
class LayerValidationConfig:
    """``allowmissing: true`` accepts an image manifest whose layers are not pushed (yet)."""

    allowmissing: bool = False


@dataclass
class ManifestValidationConfig:
    indexes: IndexValidationConfig = field(default_factory=IndexValidationConfig)
    layers: LayerValidationConfig = field(default_factory=LayerValidationConfig)
    urls: Any = field(default=None, metadata=NOT_IMPLEMENTED)  # Distribution 2's foreign-layer URL lists


@dataclass
class ValidationConfig:
    """What a manifest PUT checks beyond its own shape; the defaults are strict."""

    manifests: ManifestValidationConfig = field(default_factory=ManifestValidationConfig)
    enabled: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    disabled: Any = field(default=None, metadata=NOT_IMPLEMENTED)


@dataclass
class StorageDriverHealthConfig:
    """Distribution's storage health check: with ``enabled``, each worker checks storage every
    ``interval`` and ``/readyz`` answers 503 after ``threshold`` failures in a row; without it,
    ``/readyz`` checks storage on each request."""

    enabled: bool = False
    interval: float = duration_field(10.0)
    threshold: int = 1


@dataclass
class HealthConfig:
    storagedriver: StorageDriverHealthConfig = field(default_factory=StorageDriverHealthConfig)
    file: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    http: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    tcp: Any = field(default=None, metadata=NOT_IMPLEMENTED)




# -- redis (registry/shared_state.py): Distribution's ``redis`` section -------------------------


@dataclass
class RedisTLSConfig:
    enabled: bool = False
    certificate: str | None = None  # client certificate, for a server that asks for one
    key: str | None = None
    clientcas: list[str] = field(default_factory=list)  # CAs the server's certificate must chain to
    rootcas: list[str] = field(default_factory=list)  # Distribution 3's name for clientcas


@dataclass
class RedisPoolConfig:
    maxidle: int = 16
    maxactive: int = 64
    idletimeout: float = duration_field(300.0)


@dataclass
class RedisConfig:
    """Shared state for replicas and workers: failed logins, the tag and descriptor cache, verified
    tokens. Distribution 2's keys (``addr``, ``pool``) and 3's (``addrs``, ``poolsize``) both work."""

    addr: str = ""
    addrs: list[str] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    db: int = 0
    dialtimeout: float = duration_field(1.0)
    readtimeout: float = duration_field(1.0)
    writetimeout: float = duration_field(1.0)
    pool: RedisPoolConfig = field(default_factory=RedisPoolConfig)
    poolsize: int = 0
    maxidleconns: int = 0
    connmaxidletime: float = duration_field(0.0)
    tls: RedisTLSConfig = field(default_factory=RedisTLSConfig)

    def __post_init__(self) -> None:
        if not (self.addr or self.addrs):
            raise ConfigError("redis.addr: required (HOST:PORT of the Redis server)")
        split_addr(self.addr or self.addrs[0], "redis.addr")


@dataclass
class Config:
    addr: str = "127.0.0.1:5000"
    workers: int = 1
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    access: list[AccessRule] = field(default_factory=list)
    tls: TLSConfig | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    log: LogConfig = field(default_factory=LogConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    redis: RedisConfig | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    version: str = "0.1"  # Distribution's config version; any value is read the same way
    compatibility: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    reporting: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    middleware: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    catalog: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    # not a key: REGISTRY_* variables that name no key (podman's REGISTRY_AUTH_FILE, say), ignored
    # with a warning as Distribution does; set by load_config, never read from a file
    ignored_env: list[str] = field(default_factory=list, compare=False, metadata={"internal": True})

    @property
    def host(self) -> str:
        return split_addr(self.addr)[0]

    @property
    def port(self) -> int:
        return split_addr(self.addr)[1]


# ---------------------------------------------------------------------------------------------
# scalars

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
                   "d": 86400.0}
_SIZE = re.compile(r"^(\d+)\s*([kmgt]?i?b?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "mi": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
               "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4}


def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from a Go-style duration ("168h", "1h30m", "500ms") or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: duration must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ConfigError(f"{key}: expected a duration like 30s, 20m or 168h, got {value!r}")


def parse_size(value: object, key: str = "size") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ConfigError(f"{key}: expected a size in bytes (10485760, 10MiB), got {value!r}")


def split_addr(addr: str, key: str = "addr") -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:5000) -> (host, port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", addr.strip())
    if not m:
        raise ConfigError(f"{key}: expected HOST:PORT, got {addr!r}")
    host = m.group(1) if m.group(1) is not None else m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port out of range in {addr!r}")
    return host or "0.0.0.0", port


# ---------------------------------------------------------------------------------------------
# building dataclasses from plain data, with errors that name the key


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _convert(tp: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if tp is Any:  # a key kept as given (not_implemented); a bare ``key:`` counts as given
        return {} if value is None else _deep_copy(value)
    optional, tp = _is_optional(tp)
    if value is None:
        if optional:
            return None
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            return _build(tp, {}, key)
        raise ConfigError(f"{key}: must not be empty")
    kind = meta.get("kind")
    if kind == "duration":
        return parse_duration(value, key)
    if kind == "size":
        return parse_size(value, key)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp is ReadOnlyConfig and isinstance(value, bool):  # readonly: true as a shorthand
            return ReadOnlyConfig(enabled=value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str) and item is str:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_convert(item, v, f"{key}[{i}]", {}) for i, v in enumerate(value)]
    if origin is dict:
        _, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(vtype, v, f"{key}.{k}", {}) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        path = f"{prefix}.{key}" if prefix else key
        if key not in fields or fields[key].metadata.get("internal"):
            known = ", ".join(sorted(k for k, f in fields.items() if not f.metadata.get("internal")))
            raise ConfigError(f"unknown configuration key {path!r} (known here: {known})")
        kwargs[key] = _convert(hints[key], value, path, fields[key].metadata)
    return cls(**kwargs)


def _validate(config: Config) -> Config:
    split_addr(config.addr)
    if config.workers < 1:
        raise ConfigError("workers: must be at least 1")
    if config.http.net != "tcp":
        raise ConfigError(f"http.net: pyreg listens on tcp only, got {config.http.net!r}")
    if config.metrics.addr is not None:
        split_addr(config.metrics.addr, "metrics.addr (http.debug.addr)")
    storage = config.storage
    for name in ("inmemory", "azure", "gcs", "swift", "oss"):
        if getattr(storage, name) is not None:
            raise ConfigError(f"storage.{name}: pyreg has no {name} driver; use filesystem or s3")
    if config.auth.silly is not None:
        raise ConfigError("auth.silly: Distribution's development-only auth is not supported; "
                          "use htpasswd or token")
    if storage.cache.blobdescriptor not in ("inmemory", "redis", ""):
        raise ConfigError("storage.cache.blobdescriptor: expected inmemory or redis, "
                          f"got {storage.cache.blobdescriptor!r}")
    if storage.cache.blobdescriptor == "redis" and config.redis is None:
        raise ConfigError("storage.cache.blobdescriptor: redis needs the redis key (redis.addr)")
    if storage.s3 is not None and storage.redirect.disable is not None:
        storage.s3.redirect.enabled = not storage.redirect.disable
    if storage.filesystem is not None and storage.s3 is not None:
        raise ConfigError("storage: configure exactly one driver, not both filesystem and s3")
    if storage.filesystem is None and storage.s3 is None:
        storage.filesystem = FilesystemConfig()
    if storage.filesystem is not None and not storage.filesystem.rootdirectory:
        raise ConfigError("storage.filesystem.rootdirectory: must not be empty")
    if storage.s3 is not None and not storage.s3.bucket:
        raise ConfigError("storage.s3.bucket: required for the s3 driver")
    if storage.maintenance.uploadpurging.enabled and storage.maintenance.uploadpurging.interval <= 0:
        raise ConfigError("storage.maintenance.uploadpurging.interval: must be positive")
    # htpasswd and token together: token auth, with htpasswd holding the built-in /token's users
    if config.auth.htpasswd is not None and not config.auth.htpasswd.path:
        raise ConfigError("auth.htpasswd.path: required")
    token = config.auth.token
    if token is not None and not token.realm and not token.signingkey:
        raise ConfigError("auth.token.realm: required unless pyreg issues the tokens (auth.token.signingkey)")
    if token is not None and not (token.signingkey or token.rootcertbundle or token.jwks):
        raise ConfigError("auth.token: give signingkey (pyreg issues tokens) or rootcertbundle/jwks")
    if token is not None and token.kidformat not in ("libtrust", "thumbprint"):
        raise ConfigError(f"auth.token.kidformat: expected libtrust or thumbprint, got {token.kidformat!r}")
    for i, rule in enumerate(config.access):
        bad = set(rule.actions) - {"pull", "push", "delete", "*"}
        if bad:
            raise ConfigError(f"access[{i}].actions: unknown action(s) {sorted(bad)}")
    if config.tls is not None and bool(config.tls.certificate) != bool(config.tls.key):
        raise ConfigError("tls: certificate and key must be given together")
    if config.log.level.lower() not in ("debug", "info", "warning", "warn", "error", "critical"):
        raise ConfigError(f"log.level: unknown level {config.log.level!r}")
    if config.log.format not in ("text", "json", "logstash"):
        raise ConfigError(f"log.format (log.formatter): expected text, json or logstash, "
                          f"got {config.log.format!r}")
    minimumtls = config.tls.minimumtls if config.tls is not None else None
    if minimumtls is not None and minimumtls not in ("tls1.0", "tls1.1", "tls1.2", "tls1.3"):
        raise ConfigError(f"http.tls.minimumtls: expected tls1.0 … tls1.3, got {minimumtls!r}")
    storagedriver = config.health.storagedriver
    if storagedriver.interval <= 0 or storagedriver.threshold < 1:
        raise ConfigError("health.storagedriver: interval must be positive and threshold at least 1")
    for i, endpoint in enumerate(config.notifications.endpoints):
        key = f"notifications.endpoints[{i}]"
        if not re.match(r"^https?://[^/\s]+", endpoint.url):
            raise ConfigError(f"{key}.url: expected an http:// or https:// URL, got {endpoint.url!r}")
        unknown = (set(endpoint.events) | set(endpoint.ignore.actions)) - {"push", "pull", "delete"}
        if unknown:
            raise ConfigError(f"{key}: unknown action(s) {sorted(unknown)} (push, pull, delete)")
        if endpoint.threshold < 1 or endpoint.queuesize < 1:
            raise ConfigError(f"{key}: threshold and queuesize must be at least 1")
        endpoint.name = endpoint.name or f"endpoint{i}"
    indexes = config.validation.manifests.indexes
    indexes.platforms = indexes.platforms.lower()
    if indexes.platforms not in ("all", "list", "none"):
        raise ConfigError("validation.manifests.indexes.platforms: expected all, list or none, "
                          f"got {indexes.platforms!r}")
    if indexes.platforms == "list" and not indexes.platformlist:
        raise ConfigError("validation.manifests.indexes.platformlist: required when platforms is list")
    for i, platform in enumerate(indexes.platformlist):
        if not platform.architecture or not platform.os:
            raise ConfigError(f"validation.manifests.indexes.platformlist[{i}]: "
                              "needs both architecture and os")
    metrics_path = config.metrics.path
    if not metrics_path.startswith("/") or metrics_path.rstrip("/") in ("", "/v2", "/healthz", "/readyz") or (
            metrics_path.startswith("/v2/")):
        raise ConfigError(f"metrics.path: must be an absolute path outside /v2, got {metrics_path!r}")
    ui_path = config.ui.path.rstrip("/")
    if not ui_path.startswith("/") or ui_path in ("/v2", "/healthz", "/readyz", metrics_path.rstrip("/")) or (
            ui_path.startswith("/v2/")):
        raise ConfigError(f"ui.path: must be an absolute path outside /v2 and /metrics, "
                          f"got {config.ui.path!r}")
    return config


# ---------------------------------------------------------------------------------------------
# environment overrides


def _env_path(cls: type, parts: list[str]) -> list[str] | None:
    """Match upper-case env parts to a key path through the dataclass schema (None: no match)."""
    if not parts:
        return []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.upper() != parts[0]:
            continue
        rest = parts[1:]
        if not rest:
            return [f.name]
        _, tp = _is_optional(hints[f.name])
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            sub = _env_path(tp, rest)
            if sub is not None:
                return [f.name, *sub]
        if typing.get_origin(tp) is dict:
            return [f.name, "_".join(rest).lower()]
        return None
    return None


def _schema_at(path: tuple[str, ...]) -> type:
    """The dataclass holding the keys under ``path`` (a mapping key of the schema)."""
    cls: Any = Config
    for part in path:
        _, cls = _is_optional(_hints(cls)[part])
    return typing.cast(type, cls)


def _env_alias_path(parts: list[str]) -> list[str] | None:
    """An environment variable's parts through ``ALIASES`` (REGISTRY_HTTP_ADDR -> addr)."""
    for source, target in ALIASES.items():
        upper = [p.upper() for p in source]
        if parts[:len(upper)] != upper:
            continue
        rest = parts[len(upper):]
        if not rest:
            return list(target)
        cls = _schema_at(target)
        if dataclasses.is_dataclass(cls):
            sub = _env_path(cls, rest)
            if sub is not None:
                return [*target, *sub]
    return None


def env_overrides(environ: Mapping[str, str],
                  ignored: list[str] | None = None) -> list[tuple[list[str], Any, str]]:
    """(key path, parsed value, variable name) for every PYREG_* or REGISTRY_* variable naming a
    config key (pyreg's or Distribution's name for it).

    Variables whose first component is not a top-level key are left alone (the client has its
    own ``PYREG_*`` settings; Kubernetes adds ``REGISTRY_PORT`` for a Service called registry);
    one that starts like a key but names none is an error for ``PYREG_*`` and, as in Distribution,
    only ignored for ``REGISTRY_*`` (its name appended to ``ignored``): other programs use that
    prefix too (podman's ``REGISTRY_AUTH_FILE``).
    """
    top = {f.name.upper() for f in dataclasses.fields(Config)} | {s[0].upper() for s in ALIASES}
    found = []
    for name, raw in sorted(environ.items()):
        prefix = next((p for p in ENV_PREFIXES if name.startswith(p)), None)
        if prefix is None:
            continue
        parts = name[len(prefix):].split("_")
        if parts[0] not in top:
            continue
        path = _env_alias_path(parts) or _env_path(Config, parts)
        if path is None and prefix != ENV_PREFIX and ignored is not None:
            ignored.append(name)
            continue
        if path is None:
            raise ConfigError(f"environment variable {name} does not name a configuration key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"environment variable {name}: not valid YAML: {e}") from None
        found.append((path, value, name))
    return found


# Distribution's keys that are pyreg keys in another place: moved there in each layer (file,
# environment, flags) before the layers are merged, so precedence holds whichever name is used.
ALIASES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("http", "addr"): ("addr",),
    ("http", "tls"): ("tls",),
    ("http", "debug", "addr"): ("metrics", "addr"),
    ("http", "debug", "prometheus"): ("metrics",),
    ("log", "formatter"): ("log", "format"),
    ("loglevel",): ("log", "level"),
}


_TOP_SECTIONS = frozenset({"storage", "auth"})  # the sections a REGISTRY_<SECTION>=<name> selects in


def _pop_path(data: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        return False, None
    return True, node.pop(path[-1])


def _get_path(data: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _apply_aliases(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Move Distribution's names to pyreg's in one layer; both names in one layer is an error."""
    for source, target in ALIASES.items():
        found, value = _pop_path(data, source)
        if not found:
            continue
        src, dst = ".".join(source), ".".join(target)
        if isinstance(value, dict) and target == ("metrics",):  # http.debug.prometheus: {enabled, path}
            for key, sub in value.items():
                if _get_path(data, (*target, str(key)))[0]:
                    raise ConfigError(f"{where}: {src}.{key} and {dst}.{key} both given; keep one")
                _set_path(data, [*target, str(key)], sub)
            continue
        if _get_path(data, target)[0]:
            raise ConfigError(f"{where}: {src} and {dst} are the same key; keep one")
        _set_path(data, list(target), value)
    for parent in (("http", "debug"),):  # emptied by the moves above
        found, value = _get_path(data, parent)
        if found and value in ({}, None):
            _pop_path(data, parent)
    return data


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def load_config(path: str | os.PathLike[str] | None = None, *, data: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Build the configuration: defaults < file (or ``data``) < environment < ``overrides``.

    ``overrides`` maps dotted key paths (``storage.filesystem.rootdirectory``) to values; the
    ``serve`` command passes its flags this way.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {os.fspath(path)!r}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {os.fspath(path)!r} is not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {os.fspath(path)!r} must hold a mapping")
        raw = _apply_aliases(_deep_copy(loaded or {}), f"configuration file {os.fspath(path)!r}")
    if data is not None:
        raw = _deep_merge(raw, _apply_aliases(_deep_copy(dict(data)), "configuration"))
    ignored: list[str] = []
    for key_path, value, _name in env_overrides(os.environ if environ is None else environ, ignored):
        cls = _schema_at(tuple(key_path)) if len(key_path) == 1 and key_path[0] in _TOP_SECTIONS else None
        if isinstance(value, str) and cls is not None and dataclasses.is_dataclass(cls) and (
                value in {f.name for f in dataclasses.fields(cls)}):
            # Distribution's REGISTRY_AUTH=htpasswd / REGISTRY_STORAGE=s3: selects that sub-key
            found, section = _get_path(raw, tuple(key_path))
            section = section if found and isinstance(section, dict) else {}
            section.setdefault(value, {})
            value = section
        _set_path(raw, key_path, value)
    for dotted, value in (overrides or {}).items():
        _set_path(raw, dotted.split("."), value)
    config = _validate(_build(Config, raw, ""))
    config.ignored_env = ignored
    return config


def not_implemented_keys(config: Config) -> list[str]:
    """The key paths set to something pyreg accepts but does not act on (for one warning line)."""
    found: list[str] = []

    def leaves(value: Any, path: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                leaves(v, f"{path}.{k}")
        else:
            found.append(path)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{prefix}[{i}]")
            return
        if not dataclasses.is_dataclass(node) or isinstance(node, type):
            return
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            path = f"{prefix}.{f.name}" if prefix else f.name
            if f.metadata.get("notimplemented"):
                if value is not None and value not in f.metadata["harmless"]:
                    leaves(value, path)
            else:
                walk(value, path)

    walk(config, "")
    return found


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain data that ``load_config(data=...)`` turns back into the same Config (keys kept as
    given that were not given are left out: a bare ``key:`` in a file means "given")."""

    def plain(node: Any) -> Any:
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            hints = _hints(type(node))
            return {f.name: plain(getattr(node, f.name)) for f in dataclasses.fields(node)
                    if not (hints[f.name] is Any and getattr(node, f.name) is None)
                    and not f.metadata.get("internal")}
        if isinstance(node, list):
            return [plain(v) for v in node]
        if isinstance(node, dict):
            return {k: plain(v) for k, v in node.items()}
        return node

    return typing.cast(dict[str, Any], plain(config))
