"""Client settings: plain HTTP and TLS trust per registry, parallelism, chunk size.

Values come from flags, then environment (``PYREG_INSECURE_REGISTRIES`` comma list,
``PYREG_CA_FILE``, ``PYREG_CERTS_D``, ``PYREG_PARALLEL``, ``PYREG_CHUNK_SIZE``), then the client
config file read by ``storage.reference.client_config`` (keys ``insecure_registries``, ``ca_file``,
``parallel``, ``chunk_size``).

TLS: certificates are verified for every registry (loopback included) unless the user opted out
for that host (``--insecure`` or ``insecure_registries``). Trust is the system store plus the CA
file plus the registry's certs.d directory, where Docker and podman users already keep theirs.
"""

from __future__ import annotations

import os

from pyreg.storage.frozen import Frozen
from pyreg.storage.netaddr import host_of, is_loopback
from pyreg.storage.reference import client_config
from pyreg.storage.units import parse_size

TYPE_CHECKING = False  # pathlib is imported only where certs.d is looked at (TLS), not at start-up
if TYPE_CHECKING:
    from pathlib import Path

# blobs at once: containers/image's (skopeo, podman) default, so that a typical image (a config
# and up to five layers) moves in one wave of requests rather than two
DEFAULT_PARALLEL = 6


def insecure_registries() -> set[str]:
    env = os.environ.get("PYREG_INSECURE_REGISTRIES")
    if env is not None:
        return {h.strip() for h in env.split(",") if h.strip()}
    return {str(h) for h in client_config().get("insecure_registries") or []}


def listed_insecure(registry: str) -> bool:
    """``registry`` (``host:port`` or just its host) is in the insecure list."""
    listed = insecure_registries()
    return registry in listed or host_of(registry) in listed


def plain_http_allowed(registry: str, insecure_flag: bool = False) -> bool:
    """Plain HTTP only for loopback, ``--insecure``, or a host listed as insecure."""
    return insecure_flag or is_loopback(registry) or listed_insecure(registry)


def tls_verify(registry: str, insecure_flag: bool = False) -> bool:
    """Verify the registry's certificate unless the user opted out for it. Loopback is no
    exception: its allowance is plain HTTP, not an unverified handshake."""
    return not (insecure_flag or listed_insecure(registry))


# --ca-file, recorded by client.common while the command line is parsed (so that every command
# gets it without passing it down); None when not given
_ca_file_flag: str | None = None


def set_ca_file_flag(path: str | None) -> None:
    global _ca_file_flag
    _ca_file_flag = path


def ca_file(flag: str | None = None) -> str | None:
    """Extra CA bundle trusted for every registry: ``--ca-file``, ``PYREG_CA_FILE``, ``ca_file``."""
    value = flag or _ca_file_flag or os.environ.get("PYREG_CA_FILE") or client_config().get("ca_file")
    return str(value) if value else None


def certs_d_roots() -> list[Path]:
    """Where per-registry certificate directories live: ``PYREG_CERTS_D`` (a ``:`` list; empty for
    none), else podman's and Docker's places, in containers/image's order."""
    from pathlib import Path

    env = os.environ.get("PYREG_CERTS_D")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    user = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers" / "certs.d"
    return [user, Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d")]


class CertsDir(Frozen):
    """What a ``certs.d/<host:port>/`` directory holds: ``*.crt`` CAs, ``*.cert`` + ``*.key`` the
    client certificate for mutual TLS (Docker's and containers/image's convention)."""

    __slots__ = ("path", "cas", "client")  # noqa: RUF023 - __init__'s order (repr, pickling)
    path: Path | None
    cas: tuple[Path, ...]
    client: tuple[Path, Path] | None

    def __init__(self, path: Path | None = None, cas: tuple[Path, ...] = (),
                 client: tuple[Path, Path] | None = None) -> None:
        self._set("path", path)
        self._set("cas", cas)
        self._set("client", client)


def certs_dir(registry: str) -> CertsDir:
    """The first ``<root>/<registry>`` directory that exists (as containers/image picks it)."""
    for root in certs_d_roots():
        d = root / registry
        if not d.is_dir():
            continue
        try:
            files = sorted(f for f in d.iterdir() if f.is_file())
        except OSError as exc:
            raise ValueError(f"cannot read certificate directory {d}: {exc.strerror}") from exc
        cas = tuple(f for f in files if f.suffix == ".crt")
        pairs: list[tuple[Path, Path]] = []
        for f in files:
            if f.suffix == ".cert":
                key = f.with_suffix(".key")
                if not key.is_file():
                    raise ValueError(f"{f} has no matching key {key.name} (mutual TLS needs both)")
                pairs.append((f, key))
            elif f.suffix == ".key" and not f.with_suffix(".cert").is_file():
                raise ValueError(f"{f} has no matching certificate {f.with_suffix('.cert').name}")
        return CertsDir(d, cas, pairs[0] if pairs else None)
    return CertsDir()


def parallel(flag: int | None = None) -> int:
    value = flag or os.environ.get("PYREG_PARALLEL") or client_config().get("parallel") or DEFAULT_PARALLEL
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        raise ValueError(f"invalid parallel {value!r} (PYREG_PARALLEL or parallel in the client "
                         "config: how many blobs at once, e.g. 6)") from None


def chunk_size(flag: str | None = None) -> int | None:
    return parse_size(flag or os.environ.get("PYREG_CHUNK_SIZE") or client_config().get("chunk_size"))


DEFAULT_MAX_CONFIG_SIZE = 8 << 20


def max_config_size() -> int:
    """Largest image config read into memory (``PYREG_MAX_CONFIG_SIZE``, ``max_config_size``;
    default 8 MiB): a config is JSON held whole, so an endless one must stop early."""
    text = os.environ.get("PYREG_MAX_CONFIG_SIZE") or client_config().get("max_config_size")
    try:
        value = parse_size(text)
    except ValueError:
        raise ValueError(f"invalid max_config_size {text!r} (e.g. 8M)") from None
    return value or DEFAULT_MAX_CONFIG_SIZE
