"""A remote registry over HTTP: transport (TLS, retries), auth flow, body limits, the
distribution-spec client, and (``store``) a ContentStore over one of its repositories.

Shared by the client's pull / push / copy and the registry's pull-through cache; it reads no
user files (the client passes credentials and TLS settings in)."""

from pyreg.storage.remote.auth import AuthError, Credentials, Login, RegistryAuth
from pyreg.storage.remote.client import RegistryClient, error_message
from pyreg.storage.remote.errors import RemoteError, network_reason
from pyreg.storage.remote.limits import ResponseRefused
from pyreg.storage.remote.transport import TLSSettings, tls_context

__all__ = ["AuthError", "Credentials", "Login", "RegistryAuth", "RegistryClient", "RemoteError",
           "ResponseRefused", "TLSSettings", "error_message", "network_reason", "tls_context"]
