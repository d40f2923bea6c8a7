"""Build the auth layer from the registry config and put it in front of an app.

``auth_middleware(config)`` is the one entry ``create_app`` adds to its middleware list.
The mode follows the config:
``auth.token`` → token auth (with ``signingkey``: pyreg issues tokens itself at ``/token``,
checking passwords against ``auth.htpasswd`` when given; without: tokens of an external issuer,
trusted through ``rootcertbundle`` and/or ``jwks``), else ``auth.htpasswd`` → Basic auth, else none.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from starlette.middleware import Middleware

from pyreg.registry.auth.access import AccessPolicy, parse_rules
from pyreg.registry.auth.middleware import AuthMiddleware, AuthService, warn_if_open
from pyreg.registry.auth.ratelimit import FailedLoginLimiter
from pyreg.registry.shared_state import LoginCounts, SharedState, TokenMarks
from pyreg.storage.netaddr import host_of

log = logging.getLogger("pyreg.auth")


class AuthSetupError(ValueError):
    """Auth config that cannot be used (a key file that does not load…); names the key."""


def _rules(config: Any) -> list[dict[str, Any]]:
    out = []
    for rule in getattr(config, "access", None) or []:
        is_instance = dataclasses.is_dataclass(rule) and not isinstance(rule, type)
        out.append(dataclasses.asdict(rule) if is_instance else dict(rule))
    return out


def build_service(config: Any, shared: SharedState | None = None) -> AuthService:
    auth = getattr(config, "auth", None)
    htcfg = getattr(auth, "htpasswd", None)
    tokcfg = getattr(auth, "token", None)
    mode = "token" if tokcfg is not None else "htpasswd" if htcfg is not None else "none"
    policy = AccessPolicy(parse_rules(_rules(config)), auth_enabled=mode != "none",
                          group_members=dict(getattr(auth, "groups", None) or {}))
    rl = getattr(auth, "ratelimit", None)
    limiter = FailedLoginLimiter(failures=int(getattr(rl, "failures", 10)),
                                 window=float(getattr(rl, "window", 60.0)))
    tls = getattr(config, "tls", None)
    hsts_age = float(getattr(tls, "hsts", 0) or 0) if tls is not None else 0.0
    svc = AuthService(mode=mode, policy=policy, limiter=limiter,
                      hsts=f"max-age={int(hsts_age)}" if hsts_age > 0 else None)
    svc.external_host = getattr(getattr(config, "http", None), "host", None) or None
    if shared is not None:
        svc.shared_logins = LoginCounts(shared, limiter.failures, limiter.window)
    svc.trust_forwarded = bool(getattr(getattr(config, "proxy", None), "trustforwarded", False))
    if htcfg is not None:
        from pyreg.registry.auth.htpasswd import Htpasswd  # bcrypt: only with Basic auth configured

        svc.htpasswd = Htpasswd(htcfg.path)
        svc.realm = htcfg.realm
    if tokcfg is not None:
        from pyreg.registry.auth.tokens import (  # jwt + cryptography (~17 MiB): only in token mode
            KeyError_,
            TokenIssuer,
            TokenVerifier,
            load_certificates,
            load_jwks,
            load_private_key,
            load_public_keys,
        )

        # autoredirect (as in Distribution): the realm is this server's /token as the client reached it
        redirect = bool(getattr(tokcfg, "autoredirect", False) and tokcfg.signingkey)
        svc.realm = "" if redirect else tokcfg.realm or ""
        svc.service = tokcfg.service
        svc.token_path = getattr(tokcfg, "path", None) or "/token"
        keys = []
        roots = []
        named = {}
        try:
            if tokcfg.signingkey:
                chain = load_certificates(tokcfg.certificate) if getattr(tokcfg, "certificate", None) else []
                svc.issuer = TokenIssuer(
                    load_private_key(tokcfg.signingkey), issuer=tokcfg.issuer, service=tokcfg.service,
                    ttl=int(tokcfg.expiration),
                    refresh_ttl=int(getattr(tokcfg, "refreshexpiration", 30 * 86400)),
                    chain=chain, kid_format=getattr(tokcfg, "kidformat", "libtrust") or "libtrust",
                )
                keys.append(svc.issuer.public_key)
            if tokcfg.rootcertbundle:
                roots = load_certificates(tokcfg.rootcertbundle)
                keys += load_public_keys(tokcfg.rootcertbundle)
            if getattr(tokcfg, "jwks", None):
                named = load_jwks(tokcfg.jwks)
        except KeyError_ as e:
            raise AuthSetupError(f"auth.token: {e}") from e
        if not (keys or roots or named):
            raise AuthSetupError("auth.token: give signingkey (to issue tokens) or rootcertbundle/jwks "
                                 "(to trust an external issuer)")
        if svc.issuer is None and not svc.realm:
            raise AuthSetupError("auth.token.realm: required with an external issuer")
        svc.verifier = TokenVerifier(issuers=[tokcfg.issuer], audience=tokcfg.service, keys=keys,
                                     named_keys=named, roots=roots)
        secret = getattr(getattr(config, "http", None), "secret", None)
        if shared is not None and secret:  # the marks are keyed by it: replicas must share it
            svc.shared_tokens = TokenMarks(shared, secret)
    return svc


def auth_middleware(config: Any, shared: SharedState | None = None) -> Middleware:
    """The auth entry of the app's middleware list; warns loudly if the registry is wide open."""
    svc = build_service(config, shared)
    addr = str(getattr(config, "addr", "127.0.0.1:5000"))
    warn_if_open(host_of(addr) or "0.0.0.0", svc.mode)
    return Middleware(AuthMiddleware, service=svc)
