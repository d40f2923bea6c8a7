"""Authentication and authorization for the registry.

Everything here plugs into the app as one ASGI middleware (``registry.auth.middleware``) so the
routes never see credentials: they only read the caller's decision from ``request.state.auth``.

- ``scope``: the Docker token spec's scope grammar.
- ``access``: per-repository rules (first match wins) and the caller's identity.
- ``htpasswd``: bcrypt htpasswd files, reloaded when they change; ``user_command``: ``pyreg user``.
- ``tokens``: JWT issuing and verification (built-in issuer or an external one).
- ``token_endpoint``: the ``/token`` endpoint (GET and the OAuth2 POST form).
- ``ratelimit``: failed-login limiting per client address.
- ``middleware``: request → required access, challenges, 401/403.
- ``setup``: the middleware built from the config; ``tls``: the mTLS CA bundle for ``pyreg serve``.

The configuration (registry/config.py holds the keys)::

    auth:
      htpasswd: {realm: pyreg, path: /etc/pyreg/htpasswd}     # Basic auth; `pyreg user add NAME`
      # or token auth. pyreg issues the tokens itself (users from auth.htpasswd when given):
      token: {service: registry.example.com, issuer: pyreg, signingkey: /etc/pyreg/token.key,
              certificate: /etc/pyreg/token.crt,   # optional: sent as x5c
              expiration: 5m, refreshexpiration: 720h, kidformat: libtrust}  # or thumbprint
      # ... or trusts an external issuer:
      # token: {realm: https://auth.example.com/token, service: …, issuer: …,
      #         rootcertbundle: /etc/pyreg/issuer.pem, jwks: /etc/pyreg/issuer.jwks}
      groups: {dev: [alice, bob]}                            # for htpasswd users
      ratelimit: {failures: 10, window: 1m}                  # failed logins per client address
    access:                                                  # first match wins
      - {repository: "team/*", users: [alice], groups: [dev], actions: [pull, push]}
      - {repository: "secret/*", actions: []}                # matches everyone: a deny rule
      - {repository: "*", users: ["*"], actions: [pull]}     # any logged-in user
      - {repository: "public/*", anonymous: true, actions: [pull]}
    tls: {certificate: …, key: …, clientcas: [ca1.pem, ca2.pem], hsts: 8760h}   # hsts: 0 (off) by default

Without ``access`` rules: auth off → everyone may do everything; auth on → every logged-in user
may do everything and anonymous callers nothing. A cross-repository mount needs pull on the source
(else it becomes a plain upload) and push on the target; ``_catalog`` lists only what the caller
may pull and, under token auth, needs ``registry:catalog:*``.
"""
