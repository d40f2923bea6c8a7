"""The registry's whole configuration: one YAML file, ``PYREG_*`` environment overrides, flags.

This module is the single definition of every key (as dataclasses); reading, environment
overrides, aliases and validation are ``registry.config_loader``, re-exported here. Precedence:
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

from dataclasses import dataclass, field
from typing import Any

from pyreg.storage import netaddr, units
from pyreg.storage.configfields import (
    DURATION,
    NOT_IMPLEMENTED,
    SIZE,
    duration_field,
    not_implemented,
)
from pyreg.storage.s3config import RedirectConfig, S3Config  # noqa: F401 - one definition, boto3-free

ENV_PREFIX = "PYREG_"
ENV_PREFIXES = (ENV_PREFIX, "REGISTRY_")  # pyreg's own, and Distribution's names


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value; the message names the key path."""


# Field metadata marking how a scalar is read (storage/configfields.py: the s3 section is defined
# beside its driver, in storage, and reads them too).


@dataclass
class FilesystemConfig:
    rootdirectory: str = "./data"
    maxthreads: Any = field(default=None, metadata=NOT_IMPLEMENTED)


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
    # Distribution's ``proxy`` is its pull-through cache of one upstream: with ``remoteurl`` it
    # becomes ``mirror.upstreams[0]`` serving every name at the root (registry/mirror/config.py)
    remoteurl: str | None = None
    username: str | None = None
    password: str | None = None
    ttl: float | None = field(default=None, metadata=DURATION)
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
class UpstreamConfig:
    """One registry mirrored (registry/mirror/): names matching ``namespace`` (``hub/*``; ``*``
    for every name at the root, Docker's ``registry-mirrors`` style) are pulled through from
    ``url`` with the namespace's prefix replaced by ``remoteprefix``."""

    url: str = ""  # https://registry-1.docker.io, http://127.0.0.1:5001 (plain HTTP: say so)
    namespace: str = "*"
    remoteprefix: str = ""  # put before the rest of the name upstream (quay/x -> <remoteprefix>x)
    library: bool | None = None  # one-part names get library/ (default: on for Docker Hub)
    username: str | None = None
    password: str | None = None
    credentialhelper: str | None = None  # docker-credential-<this> get, asked for the url's host
    ttl: float = duration_field(7 * 86400.0)  # cached content not pulled this long: gc removes it
    tagttl: float = duration_field(60.0)  # a tag older than this is checked upstream (HEAD)
    insecure: bool = False  # https without certificate verification
    cafile: str | None = None  # extra CA for the upstream's certificate
    name: str = ""  # label in metrics and logs (default: the url's host)


@dataclass
class MirrorConfig:
    """The pull-through cache: several upstreams, and the namespaces that stay local (pushable).
    A name matching a ``local`` pattern is never mirrored; the first upstream whose namespace
    matches serves the rest."""

    upstreams: list[UpstreamConfig] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


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
    # headertimeout also bounds a silence inside an upload body a thread receives (registry/directbody.py)
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
    mirror: MirrorConfig = field(default_factory=MirrorConfig)
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

def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from a Go-style duration ("168h", "1h30m", "500ms") or a plain number of seconds
    (``storage.units``' grammar); a bad one is a ConfigError naming ``key``."""
    try:
        return units.parse_duration(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a duration like 30s, 20m or 168h, got {value!r}") from None


def parse_size(value: object, key: str = "size") -> int:
    """Bytes from ``10485760`` or ``10MiB``/``10MB``/``10M`` (all 1024-based, as docker's
    ``--memory``: ``storage.units``); a bad one is a ConfigError naming ``key``."""
    try:
        return units.size_bytes(value)
    except ValueError:
        raise ConfigError(f"{key}: expected a size in bytes (10485760, 10MiB), got {value!r}") from None


def split_addr(addr: str, key: str = "addr") -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:5000; no host means every address) -> (host, port)."""
    try:
        host, port = netaddr.split_host_port(addr)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    if port is None:
        raise ConfigError(f"{key}: expected HOST:PORT, got {addr!r}")
    return host or "0.0.0.0", port


# The loader lives in registry.config_loader; its public names are re-exported here so callers
# keep importing them from the schema module.
from pyreg.registry.config_loader import (  # noqa: E402, F401  (needs the classes above)
    ALIASES,
    config_to_dict,
    env_overrides,
    load_config,
    not_implemented_keys,
)
