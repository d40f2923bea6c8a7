"""JWTs of the Docker token authentication spec: issuing them (pyreg's own ``/token``) and
verifying them (pyreg's own or an external issuer's).

Key ids: a token names its signing key in the ``kid`` header. CNCF Distribution 2.x looks keys up
by their libtrust key id (``ABCD:EFGH:…``, base32 of the first 240 bits of the SHA-256 of the
DER public key); Distribution 3 by their RFC 7638 JWK thumbprint. pyreg writes the libtrust form
by default (``kidformat: thumbprint`` for the other), also sends the signing certificate in
``x5c`` when it has one (both Distribution versions then check it against their
``rootcertbundle``), and accepts all three forms when verifying. Verified tokens are cached per
token string until they expire, so a pull does not pay a signature check per request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pyreg.registry.auth.scope import Scope

LEEWAY = 60
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                         "EdDSA")
_REFRESH_AUDIENCE_SUFFIX = "#refresh"


class InvalidToken(Exception):
    """A token that is malformed, badly signed, expired, or not for us."""


class KeyError_(ValueError):
    """A key or certificate file that cannot be used; the message names the file."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")


def libtrust_key_id(key: PublicKey) -> str:
    """Docker libtrust's key id: the one CNCF Distribution 2.x matches a ``kid`` against."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The public JWK members that RFC 7638 hashes."""
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return {"e": _b64url(_int_bytes(nums.e)), "kty": "RSA", "n": _b64url(_int_bytes(nums.n))}
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
        pn = key.public_numbers()
        return {"crv": crv, "kty": "EC", "x": _b64url(pn.x.to_bytes(size, "big")),
                "y": _b64url(pn.y.to_bytes(size, "big"))}
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}


def jwk_thumbprint(key: PublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint: what Distribution 3 matches a ``kid`` against."""
    canonical = json.dumps(public_jwk(key), sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    return "EdDSA"


def load_private_key(path: str | os.PathLike[str]) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyError_(f"signing key {path}: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyError_(f"signing key {path}: only RSA, EC and Ed25519 keys can sign tokens")
    return key


def load_certificates(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyError_(f"certificate file {path}: {e}") from e
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise KeyError_(f"certificate file {path}: {e}") from e


def load_public_keys(path: str | os.PathLike[str]) -> list[PublicKey]:
    """The bare ``PUBLIC KEY`` PEM blocks of a file (a bundle may mix them with certificates)."""
    data = Path(path).read_text(encoding="ascii", errors="replace")
    keys: list[PublicKey] = []
    marker = "-----BEGIN PUBLIC KEY-----"
    for chunk in data.split(marker)[1:]:
        end = chunk.find("-----END PUBLIC KEY-----")
        pem = marker + chunk[: end + len("-----END PUBLIC KEY-----")]
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except ValueError as e:
            raise KeyError_(f"public key in {path}: {e}") from e
        if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            keys.append(key)
    return keys


def load_jwks(path: str | os.PathLike[str]) -> dict[str, PublicKey]:
    """kid -> key from a JWKS file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        out: dict[str, PublicKey] = {}
        for jwk in doc["keys"]:
            key = jwt.PyJWK(jwk).key
            kid = jwk.get("kid") or jwk_thumbprint(key)
            out[kid] = key
        return out
    except (OSError, ValueError, KeyError, TypeError, jwt.PyJWKError) as e:
        raise KeyError_(f"jwks file {path}: {e}") from e


def key_ids(key: PublicKey) -> list[str]:
    return [libtrust_key_id(key), jwk_thumbprint(key)]


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenIssuer:
    """Signs access tokens (and refresh tokens) for pyreg's own ``/token`` endpoint."""

    def __init__(
        self,
        key: PrivateKey,
        *,
        issuer: str,
        service: str,
        ttl: int = 300,
        refresh_ttl: int = 30 * 86400,
        chain: Sequence[x509.Certificate] = (),
        kid_format: str = "libtrust",
    ) -> None:
        self.key = key
        self.issuer, self.service, self.ttl, self.refresh_ttl = issuer, service, ttl, refresh_ttl
        self.algorithm = algorithm_for(key)
        pub = key.public_key()
        self.public_key: PublicKey = pub
        if kid_format not in ("libtrust", "thumbprint"):
            raise KeyError_(f"kidformat {kid_format!r}: expected libtrust or thumbprint")
        kid = libtrust_key_id(pub) if kid_format == "libtrust" else jwk_thumbprint(pub)
        self.headers: dict[str, Any] = {"typ": "JWT", "kid": kid}
        if chain:
            self.headers["x5c"] = [
                base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain
            ]

    def issue(self, subject: str | None, access: Iterable[Scope], now: float | None = None) -> IssuedToken:
        now = time.time() if now is None else now
        iat = int(now)
        claims = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            "exp": iat + self.ttl,
            "nbf": iat,
            "iat": iat,
            "jti": secrets.token_urlsafe(16),
            "access": [s.claim() for s in access],
        }
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers=self.headers)
        return IssuedToken(token, self.ttl, _rfc3339(iat))

    def issue_refresh(self, subject: str, now: float | None = None, version: str = "") -> str:
        """A long-lived token that only the token endpoint accepts (its audience differs).
        ``version`` names the user's current password entry, so a password change revokes it."""
        iat = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service + _REFRESH_AUDIENCE_SUFFIX,
            "exp": iat + self.refresh_ttl,
            "iat": iat,
            "jti": secrets.token_urlsafe(16),
        }
        if version:
            claims["ver"] = version
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=self.headers)

    def refresh_claims(self, raw: str) -> tuple[str, str]:
        """(user, password-entry version) of one of our refresh tokens, else InvalidToken."""
        try:
            claims = jwt.decode(
                raw, self.public_key, algorithms=[self.algorithm], issuer=self.issuer,
                audience=self.service + _REFRESH_AUDIENCE_SUFFIX, leeway=LEEWAY,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from e
        sub, ver = claims.get("sub"), claims.get("ver", "")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("refresh token has no subject")
        return sub, ver if isinstance(ver, str) else ""

    def verifier(self) -> TokenVerifier:
        """A verifier that trusts exactly this issuer's key."""
        return TokenVerifier(issuers=[self.issuer], audience=self.service, keys=[self.public_key])


@dataclass(frozen=True)
class VerifiedToken:
    subject: str | None
    access: Mapping[tuple[str, str], frozenset[str]]
    expires: float
    groups: frozenset[str] = frozenset()

    def allows(self, rtype: str, name: str, action: str) -> bool:
        acts = self.access.get((rtype, name), frozenset())
        return action in acts or "*" in acts


@dataclass
class TokenVerifier:
    """Checks tokens from one or more trusted issuers for one audience (our service name)."""

    issuers: Sequence[str]
    audience: str
    keys: Sequence[PublicKey] = ()
    named_keys: Mapping[str, PublicKey] = field(default_factory=dict)
    roots: Sequence[x509.Certificate] = ()
    cache_size: int = 10000
    groups_claim: str = "groups"

    def __post_init__(self) -> None:
        self._by_kid: dict[str, PublicKey] = dict(self.named_keys)
        all_keys = list(self.keys) + list(self.named_keys.values()) + [c.public_key() for c in self.roots]
        for key in all_keys:
            if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
                for kid in key_ids(key):
                    self._by_kid[kid] = key
        self._root_der = {c.public_bytes(serialization.Encoding.DER) for c in self.roots}
        self._cache: OrderedDict[str, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()

    def _key_from_chain(self, x5c: Any) -> PublicKey:
        if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
            raise InvalidToken("malformed x5c header")
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in x5c]
        except ValueError as e:
            raise InvalidToken(f"bad certificate in x5c: {e}") from e
        now = datetime.now(UTC)
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise InvalidToken("certificate in x5c is not valid now")
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
            raise InvalidToken("unsupported key type in x5c")
        if libtrust_key_id(leaf_key) in self._by_kid:
            return leaf_key  # the signing key itself is trusted (our own issuer, or a listed key)
        trusted = False
        for i, cert in enumerate(chain):
            if cert.public_bytes(serialization.Encoding.DER) in self._root_der:
                trusted = True
                break
            issuer_cert = chain[i + 1] if i + 1 < len(chain) else None
            candidates = [issuer_cert] if issuer_cert else [r for r in self.roots if r.subject == cert.issuer]
            ok = False
            for cand in candidates:
                try:
                    cert.verify_directly_issued_by(cand)
                    ok = True
                    break
                except Exception:  # InvalidSignature, ValueError, TypeError: not its issuer
                    continue
            if not ok:
                break
            if issuer_cert is None:
                trusted = True
                break
        if not trusted:
            raise InvalidToken("x5c chain does not lead to a trusted root")
        return leaf_key

    def _signing_key(self, header: Mapping[str, Any]) -> PublicKey:
        if "x5c" in header:
            return self._key_from_chain(header["x5c"])
        kid = header.get("kid")
        if isinstance(kid, str) and kid:
            key = self._by_kid.get(kid)
            if key is None:
                raise InvalidToken(f"token signed by untrusted key {kid!r}")
            return key
        distinct = {libtrust_key_id(k): k for k in self._by_kid.values()}
        if len(distinct) == 1:
            return next(iter(distinct.values()))
        raise InvalidToken("token names no signing key")

    def verify(self, raw: str, now: float | None = None) -> VerifiedToken:
        hit = self.cached(raw, now)
        if hit is not None:
            return hit
        verified = self._verify(raw)
        self.remember(raw, verified)
        return verified

    def cached(self, raw: str, now: float | None = None) -> VerifiedToken | None:
        """This process's earlier verdict on ``raw``, while the token is still valid."""
        now = time.time() if now is None else now
        with self._lock:
            hit = self._cache.get(raw)
            if hit is not None:
                if now <= hit.expires + LEEWAY:
                    self._cache.move_to_end(raw)
                    return hit
                del self._cache[raw]
        return None

    def remember(self, raw: str, verified: VerifiedToken) -> None:
        with self._lock:
            self._cache[raw] = verified
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def claims_of_verified(self, raw: str) -> VerifiedToken:
        """A token whose signature another replica checked (registry/shared_state.py: TokenMarks):
        everything but the signature is checked here again (expiry, issuer, audience, claims)."""
        return self._verify(raw, signature_checked=True)

    def _verify(self, raw: str, signature_checked: bool = False) -> VerifiedToken:
        try:
            if signature_checked:
                claims = jwt.decode(
                    raw, algorithms=list(ASYMMETRIC_ALGORITHMS), audience=self.audience,
                    issuer=list(self.issuers), leeway=LEEWAY,
                    options={"verify_signature": False, "verify_exp": True, "verify_nbf": True,
                             "verify_iat": True, "verify_aud": True, "verify_iss": True,
                             "require": ["exp", "iss", "aud"]},
                )
            else:
                header = jwt.get_unverified_header(raw)
                key = self._signing_key(header)
                claims = jwt.decode(
                    raw, key, algorithms=list(ASYMMETRIC_ALGORITHMS), audience=self.audience,
                    issuer=list(self.issuers), leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]},
                )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from e
        access: dict[tuple[str, str], frozenset[str]] = {}
        entries = claims.get("access") or []
        if not isinstance(entries, list):
            raise InvalidToken("access claim is not a list")
        for entry in entries:
            if not isinstance(entry, dict):
                raise InvalidToken("access claim entry is not an object")
            rtype, name, actions = entry.get("type"), entry.get("name"), entry.get("actions") or []
            if not isinstance(rtype, str) or not isinstance(name, str) or not isinstance(actions, list):
                raise InvalidToken("access claim entry needs type, name and actions")
            key2 = (rtype, name)
            access[key2] = access.get(key2, frozenset()) | frozenset(a for a in actions if isinstance(a, str))
        sub = claims.get("sub")
        groups = claims.get(self.groups_claim)
        return VerifiedToken(
            subject=sub if isinstance(sub, str) and sub else None,
            access=access,
            expires=float(claims["exp"]),
            groups=frozenset(g for g in (groups if isinstance(groups, list) else []) if isinstance(g, str)),
        )
