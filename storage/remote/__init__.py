"""A remote registry over HTTP: transport (TLS, retries), auth flow, body limits, the
distribution-spec client, and (``store``) a ContentStore over one of its repositories.

Shared by the client's pull / push / copy and the registry's pull-through cache; it reads no
user files (the client passes credentials and TLS settings in).

The names below are imported on first use (PEP 562): ``from pyreg.storage.remote import
RemoteError`` must not cost an import of httpx, which a plain-HTTP pull never needs
(``plain.py``, ``plainstore.py``)."""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any

    from pyreg.storage.remote.auth import AuthError, Credentials, Login, RegistryAuth
    from pyreg.storage.remote.client import RegistryClient, error_message
    from pyreg.storage.remote.errors import RemoteError, network_reason
    from pyreg.storage.remote.limits import ResponseRefused
    from pyreg.storage.remote.transport import TLSSettings, tls_context

_WHERE = {"AuthError": "auth", "Credentials": "auth", "Login": "auth", "RegistryAuth": "auth",
          "RegistryClient": "client", "error_message": "client", "RemoteError": "errors",
          "network_reason": "errors", "ResponseRefused": "limits", "TLSSettings": "transport",
          "tls_context": "transport"}

__all__ = ["AuthError", "Credentials", "Login", "RegistryAuth", "RegistryClient", "RemoteError",
           "ResponseRefused", "TLSSettings", "error_message", "network_reason", "tls_context"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
