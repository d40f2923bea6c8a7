"""Authentication and authorization for the registry.

Everything here plugs into the app as one ASGI middleware (``registry.auth.middleware``) so the
routes never see credentials: they only read the caller's decision from ``request.state.auth``.

- ``scope``: the Docker token spec's scope grammar.
- ``access``: per-repository rules (first match wins) and the caller's identity.
- ``htpasswd``: bcrypt htpasswd files, reloaded when they change.
- ``tokens``: JWT issuing and verification (built-in issuer or an external one).
- ``token_endpoint``: the ``/token`` endpoint (GET and the OAuth2 POST form).
- ``ratelimit``: failed-login limiting per client address.
- ``middleware``: request → required access, challenges, 401/403.
"""
