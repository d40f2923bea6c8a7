"""Unit tests of the auth building blocks: scopes, access rules, htpasswd, JWT keys and tokens."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pyreg.registry.auth import htpasswd
from pyreg.registry.auth.access import ANONYMOUS, AccessConfigError, AccessPolicy, Identity, parse_rules
from pyreg.registry.auth.scope import ScopeError, format_scopes, parse_scope, parse_scopes
from pyreg.registry.auth.tokens import (
    InvalidToken,
    TokenIssuer,
    TokenVerifier,
    jwk_thumbprint,
    libtrust_key_id,
)

# ---------------------------------------------------------------- scopes


def test_scope_grammar() -> None:
    s = parse_scope("repository:team/api:pull,push")
    assert (s.type, s.name, s.actions, s.resource_class) == ("repository", "team/api", {"pull", "push"}, "")
    p = parse_scope("repository(plugin):vieux/sshfs:pull")
    assert (p.type, p.resource_class, p.name) == ("repository", "plugin", "vieux/sshfs")
    assert str(p) == "repository(plugin):vieux/sshfs:pull"
    c = parse_scope("registry:catalog:*")
    assert c.actions == {"*"}
    host = parse_scope("repository:localhost:5000/foo/bar:pull")
    assert host.name == "localhost:5000/foo/bar"
    assert parse_scope("repository:foo:").actions == frozenset()


@pytest.mark.parametrize(
    "bad", ["", "repository", "repository:foo", "Repo:foo:pull", "repository::pull", "repository:foo:PULL",
            "repository(x:foo:pull", "repository:fo o:pull"],
)
def test_scope_grammar_rejects(bad: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(bad)


def test_scopes_merge_and_format() -> None:
    scopes = parse_scopes(["repository:a:pull", "repository:a:push repository:b:pull"])
    assert [(s.name, s.actions) for s in scopes] == [("a", {"pull", "push"}), ("b", {"pull"})]
    assert format_scopes(scopes) == "repository:a:pull,push repository:b:pull"


# ---------------------------------------------------------------- access rules

RULES = [
    {"repository": "team/*", "users": ["alice"], "groups": ["dev"], "actions": ["pull", "push"]},
    {"repository": "secret/*", "actions": []},
    {"repository": "admin/*", "users": ["root"], "actions": ["*"]},
    {"repository": "*", "users": ["*"], "actions": ["pull"]},
    {"repository": "public/*", "anonymous": True, "actions": ["pull"]},
]


def test_first_match_wins() -> None:
    policy = AccessPolicy(parse_rules(RULES), group_members={"dev": ["bob"]})
    alice, bob, carol = policy.identity("alice"), policy.identity("bob"), policy.identity("carol")
    assert policy.actions(alice, "team/api") == {"pull", "push"}
    assert policy.actions(bob, "team/api") == {"pull", "push"}  # via group
    assert policy.actions(carol, "team/api") == {"pull"}  # falls through to "*"
    assert policy.actions(alice, "secret/x") == frozenset()  # deny rule matches first
    assert policy.actions(policy.identity("root"), "admin/x") == {"pull", "push", "delete"}
    assert policy.actions(ANONYMOUS, "team/api") == frozenset()
    assert policy.actions(ANONYMOUS, "public/x") == {"pull"}
    assert policy.actions(carol, "public/x") == {"pull"}  # the users:* rule came first
    assert policy.may_list_catalog(ANONYMOUS)


def test_default_policies() -> None:
    assert AccessPolicy([], auth_enabled=False).actions(ANONYMOUS, "x") == {"pull", "push", "delete"}
    on = AccessPolicy([], auth_enabled=True)
    assert on.actions(ANONYMOUS, "x") == frozenset()
    assert on.actions(Identity("u"), "x") == {"pull", "push", "delete"}
    assert not on.may_list_catalog(ANONYMOUS)


def test_grant_is_intersection() -> None:
    policy = AccessPolicy(parse_rules(RULES))
    asked = parse_scopes(
        ["repository:team/api:pull,push,delete repository:other:pull,push", "registry:catalog:*"]
    )
    got = {(s.type, s.name): s.actions for s in policy.grant(policy.identity("alice"), asked)}
    assert got == {("repository", "team/api"): {"pull", "push"}, ("repository", "other"): {"pull"},
                   ("registry", "catalog"): {"*"}}
    assert [str(s) for s in policy.grant(ANONYMOUS, asked)] == ["registry:catalog:*"]  # public/* is open


@pytest.mark.parametrize(
    "raw, key",
    [([{"repository": "*", "actions": ["fly"]}], "access[0].actions"),
     ([{"repository": "*", "colour": 1}], "access[0].colour"),
     ([{"repository": "*"}, {"anonymous": "yes"}], "access[1].anonymous"),
     (["x"], "access[0]")],
)
def test_rule_errors_name_the_key(raw: list, key: str) -> None:
    with pytest.raises(AccessConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(raw)


# ---------------------------------------------------------------- htpasswd


def test_htpasswd_add_verify_delete_and_reload(tmp_path) -> None:
    path = tmp_path / "htpasswd"
    assert htpasswd.set_user(path, "alice", "s3cret", cost=4)
    db = htpasswd.Htpasswd(path)
    assert db.verify("alice", "s3cret")
    assert db.verify("alice", "s3cret")  # remembered
    assert not db.verify("alice", "wrong")
    assert not db.verify("nobody", "s3cret")
    assert path.read_text().startswith("alice:$2y$04$")  # the format htpasswd -B writes
    # a change on disk is seen without restarting
    assert htpasswd.set_user(path, "bob", "pw", cost=4)
    assert not htpasswd.set_user(path, "alice", "new", cost=4)
    assert db.verify("bob", "pw")
    assert not db.verify("alice", "s3cret")
    assert db.verify("alice", "new")
    assert htpasswd.delete_user(path, "bob")
    assert not htpasswd.delete_user(path, "bob")
    assert not db.verify("bob", "pw")
    assert db.users() == ["alice"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_htpasswd_reads_apache_format_and_skips_other_hashes(tmp_path) -> None:
    import bcrypt

    h = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path = tmp_path / "h"
    path.write_text(f"# comment\nu1:$2y${h[4:]}\nu2:{h}\nmd5:$apr1$abc$def\n\n")
    db = htpasswd.Htpasswd(path)
    assert db.users() == ["u1", "u2"]
    assert db.verify("u1", "pw") and db.verify("u2", "pw") and not db.verify("md5", "pw")


def test_htpasswd_unknown_user_checks_a_dummy_of_the_same_cost(tmp_path) -> None:
    path = tmp_path / "h"
    htpasswd.set_user(path, "alice", "pw", cost=6)
    db = htpasswd.Htpasswd(path)
    assert db._dummy.decode().split("$")[2] == "06"


def test_htpasswd_rejects_bad_names(tmp_path) -> None:
    for bad in ("", "a:b", "a b"):
        with pytest.raises(htpasswd.HtpasswdError):
            htpasswd.set_user(tmp_path / "h", bad, "pw", cost=4)


def test_htpasswd_missing_file_denies(tmp_path) -> None:
    db = htpasswd.Htpasswd(tmp_path / "none")
    assert not db.verify("a", "b")


def test_htpasswd_concurrent_verify(tmp_path) -> None:
    path = tmp_path / "h"
    htpasswd.set_user(path, "alice", "pw", cost=4)
    db = htpasswd.Htpasswd(path)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(db.verify("alice", "pw"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8


# ---------------------------------------------------------------- keys and tokens


def _self_signed(key, cn: str = "pyreg token signer", issuer_key=None, issuer_name=None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(issuer_key or key, hashes.SHA256())
    )


def test_libtrust_key_id_shape_and_known_vector() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    kid = libtrust_key_id(key)
    parts = kid.split(":")
    assert len(parts) == 12 and all(len(p) == 4 for p in parts)
    # RFC 7638's example RSA key and thumbprint
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPe"
         "bWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQM"
         "icAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3X"
         "PksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=="), "big")
    rsa_key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    assert jwk_thumbprint(rsa_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("make_key", [lambda: rsa.generate_private_key(65537, 2048),
                                      lambda: ec.generate_private_key(ec.SECP256R1())])
def test_issue_and_verify(make_key) -> None:
    key = make_key()
    issuer = TokenIssuer(key, issuer="pyreg", service="reg", ttl=300)
    tok = issuer.issue("alice", parse_scopes(["repository:a:pull,push"]))
    header = jwt.get_unverified_header(tok.token)
    assert header["kid"] == libtrust_key_id(key.public_key())
    assert header["alg"] in ("RS256", "ES256")
    assert tok.expires_in == 300 and tok.issued_at.endswith("Z")
    v = issuer.verifier()
    got = v.verify(tok.token)
    assert got.subject == "alice"
    assert got.allows("repository", "a", "push") and not got.allows("repository", "b", "pull")
    assert v.verify(tok.token) is got  # cached
    claims = jwt.decode(tok.token, options={"verify_signature": False})
    assert claims["aud"] == "reg" and isinstance(claims["aud"], str)  # Distribution 2.x wants a string


def test_refused_tokens() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = TokenIssuer(key, issuer="pyreg", service="reg", ttl=300)
    v = issuer.verifier()
    good = issuer.issue("alice", parse_scopes(["repository:a:pull"])).token
    head, _body, sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    claims["access"][0]["name"] = "b"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        v.verify(f"{head}.{forged_body}.{sig}")
    expired = issuer.issue("alice", [], now=0).token
    with pytest.raises(InvalidToken):
        v.verify(expired)
    with pytest.raises(InvalidToken):
        v.verify(TokenIssuer(key, issuer="other", service="reg").issue("a", []).token)
    with pytest.raises(InvalidToken):
        v.verify(TokenIssuer(key, issuer="pyreg", service="elsewhere").issue("a", []).token)
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidToken):
        v.verify(TokenIssuer(stranger, issuer="pyreg", service="reg").issue("a", []).token)
    none_alg = jwt.encode({"iss": "pyreg", "aud": "reg", "exp": 2**40}, None, algorithm="none")
    with pytest.raises(InvalidToken):
        v.verify(none_alg)
    with pytest.raises(InvalidToken):
        v.verify("not.a.token")
    # a refresh token is no access token, and an access token no refresh token
    refresh = issuer.issue_refresh("alice")
    with pytest.raises(InvalidToken):
        v.verify(refresh)
    assert issuer.refresh_claims(refresh) == ("alice", "")
    with pytest.raises(InvalidToken):
        issuer.refresh_claims(good)


def test_external_issuer_with_cert_bundle_kid_thumbprint_and_x5c() -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _self_signed(ca_key, "test CA")
    leaf_key = rsa.generate_private_key(65537, 2048)
    leaf = _self_signed(leaf_key, "signer", issuer_key=ca_key, issuer_name=ca.subject)
    ca_direct = TokenIssuer(ca_key, issuer="ext", service="reg", kid_format="thumbprint")
    via_chain = TokenIssuer(leaf_key, issuer="ext", service="reg", chain=[leaf])
    v = TokenVerifier(issuers=["ext"], audience="reg", roots=[ca])
    assert v.verify(ca_direct.issue("u", []).token).subject == "u"
    assert v.verify(via_chain.issue("v", []).token).subject == "v"
    # a chain that does not lead to the bundle is refused
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue = _self_signed(leaf_key, "signer", issuer_key=other_ca_key, issuer_name=ca.subject)
    with pytest.raises(InvalidToken):
        v.verify(TokenIssuer(leaf_key, issuer="ext", service="reg", chain=[rogue]).issue("w", []).token)


def test_verifier_reads_groups_claim() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key()
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    tok = jwt.encode({"iss": "ext", "aud": "reg", "exp": 2**40, "sub": "u", "groups": ["dev"]}, key,
                     algorithm="ES256")
    v = TokenVerifier(issuers=["ext"], audience="reg", keys=[key.public_key()])
    assert v.verify(tok).groups == {"dev"}


# ---------------------------------------------------------------- failed-login limiting


def test_failed_login_limiter() -> None:
    from pyreg.registry.auth.ratelimit import FailedLoginLimiter

    lim = FailedLoginLimiter(failures=3, window=60)
    for t in (0.0, 1.0):
        lim.failed("1.2.3.4", now=t)
    assert lim.retry_after("1.2.3.4", now=2.0) == 0
    lim.failed("1.2.3.4", now=2.0)
    assert lim.retry_after("1.2.3.4", now=3.0) == 57.0  # the first failure ages out at 60
    assert lim.retry_after("5.6.7.8", now=3.0) == 0  # per address
    assert lim.retry_after("1.2.3.4", now=60.5) == 0
    small = FailedLoginLimiter(failures=1, window=10, max_clients=2)
    for i in range(5):
        small.failed(f"10.0.0.{i}", now=0)
    assert len(small._seen) == 2


def test_verifier_trusts_a_jwks_file(tmp_path) -> None:
    from pyreg.registry.auth.tokens import load_jwks, public_jwk

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public_jwk(key.public_key()), "kid": "k1",
                                                               "use": "sig"}]}))
    named = load_jwks(tmp_path / "jwks.json")
    v = TokenVerifier(issuers=["ext"], audience="reg", named_keys=named)
    tok = jwt.encode({"iss": "ext", "aud": "reg", "exp": 2**40, "sub": "u"}, key, algorithm="ES256",
                     headers={"kid": "k1"})
    assert v.verify(tok).subject == "u"
    other = jwt.encode({"iss": "ext", "aud": "reg", "exp": 2**40}, key, algorithm="ES256",
                       headers={"kid": "k2"})
    with pytest.raises(InvalidToken):
        v.verify(other)
