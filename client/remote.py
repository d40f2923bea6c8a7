"""The client's side of a registry connection: storage/remote's client, wired with the user's
settings — credential files, ``--insecure`` and ``insecure_registries``, ``--ca-file`` and the
certs.d directories, ``max_config_size`` — and a 429 notice on stderr."""

from __future__ import annotations

import sys
from typing import Any

from pyreg.client import config as client_config
from pyreg.client import credentials as creds
from pyreg.storage.remote import RegistryClient, TLSSettings
from pyreg.storage.remote import tls_context as _tls_context
from pyreg.storage.remote.transport import RETRIES


def tls_settings(registry: str, verify: bool = True, ca_file: str | None = None) -> TLSSettings:
    """What a TLS connection to ``registry`` trusts and presents: the system store plus ``ca_file``
    (default: the configured one) plus the registry's certs.d CAs, and its certs.d client
    certificate for mutual TLS."""
    ca_file = ca_file or client_config.ca_file()
    certs = client_config.certs_dir(registry)
    cas = ([("--ca-file", ca_file)] if ca_file else []) + [("certs.d CA", str(p)) for p in certs.cas]
    client = (str(certs.client[0]), str(certs.client[1])) if certs.client else None
    return TLSSettings(verify, tuple(cas), client)


def tls_context(registry: str, verify: bool = True, ca_file: str | None = None) -> Any:
    """The ``ssl.SSLContext`` for ``registry`` under the user's settings (cached per settings)."""
    return _tls_context(tls_settings(registry, verify, ca_file))


def rate_limited(message: str) -> None:
    print(f"pyreg: {message}", file=sys.stderr, flush=True)


def connect(registry: str, *, insecure: bool = False, retries: int = RETRIES,
            credentials: creds.Credentials | None = None, pool: int = 8,
            ca_file: str | None = None) -> RegistryClient:
    """A ``RegistryClient`` for ``registry`` as the user configured it: ``credentials`` given
    (``pyreg login``) or read from the credential files when the registry first asks."""

    def tls(host: str) -> TLSSettings:
        own = host == registry or host == f"{registry}:443"
        return tls_settings(host, client_config.tls_verify(host, insecure and own), ca_file)

    return RegistryClient(
        registry, plain_http=client_config.plain_http_allowed(registry, insecure), retries=retries,
        credentials=credentials if credentials is not None else creds.get, pool=pool, tls=tls,
        plain_realm=lambda host: client_config.is_loopback(host) or client_config.listed_insecure(host),
        max_config_size=client_config.max_config_size,
        has_client_cert=lambda: client_config.certs_dir(registry).client is not None, notify=rate_limited)
