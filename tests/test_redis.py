"""Shared state in Redis (registry/shared_state.py) with a real ``redis-server``.

Two replicas of two workers each, behind deploy/nginx.conf, on one filesystem store and one
Redis: the 11th failed login from a client is refused whichever process it reaches; a tag moved
through replica A is served by replica B on the next request although every process caches
lookups for an hour; and when Redis goes away every process carries on with its own state,
warning once, and no client sees an error.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pyreg.registry.auth import htpasswd
from tests.fixtures.registry import image_manifest, sha256
from tests.fixtures.s3 import free_port, stop_process

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
USER = ("alice", "alice-pw")


@dataclass
class RedisServer:
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.workdir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def from_address(address: str, base_url: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.0.0.0/8 address is this host)."""
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=address), timeout=30)


def cluster_config(tmp_path: Path, redis: RedisServer | None) -> Path:
    users = tmp_path / "htpasswd"
    htpasswd.set_user(users, *USER, cost=4)
    config: dict[str, Any] = {
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "shared-data")},
                    "delete": {"enabled": True},
                    # An hour: without Redis another replica's tag move goes unseen for that long.
                    "cache": {"ttl": "1h"}},
        "auth": {"htpasswd": {"path": str(users)}, "ratelimit": {"failures": 10, "window": "10m"}},
        "proxy": {"trustforwarded": True, "trustedproxies": ["127.0.0.1/32"]},
        "workers": 2,
    }
    if redis is not None:
        config["redis"] = {"addr": redis.addr, "db": 0, "dialtimeout": "1s", "readtimeout": "1s",
                           "writetimeout": "1s", "pool": {"maxidle": 4, "maxactive": 16, "idletimeout": "5m"}}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Any]:
    from tests.test_replicas import start_behind_nginx, stop_cluster

    config = cluster_config(tmp_path, redis_server)
    c = start_behind_nginx(tmp_path, str(config), [(f"r{i}", {}) for i in range(2)],
                           {"PYREG_BLOB_ROOT": str(tmp_path / "shared-data")})
    try:
        yield c
    finally:
        stop_cluster(c)


def failed_logins(url: str, client: str, count: int) -> list[int]:
    """``count`` wrong passwords from ``client``, each on a new connection (any worker)."""
    statuses = []
    for i in range(count):
        with from_address(client, url) as c:
            statuses.append(c.get("/v2/", auth=("alice", f"guess-{i}")).status_code)
    return statuses


def push_image(base: str, repo: str, tag: str, round_: int) -> bytes:
    config, layer = b'{"architecture":"amd64","os":"linux"}', f"layer {round_}".encode()
    with httpx.Client(base_url=base, auth=USER, timeout=30) as c:
        for blob in (config, layer):
            r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
            assert r.status_code == 201, r.text
        manifest = image_manifest(config, [layer], annotations={"round": str(round_)})
        r = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
    return manifest


def get_manifest(base: str, repo: str, tag: str) -> httpx.Response:
    with httpx.Client(base_url=base, auth=USER, timeout=30) as c:
        return c.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})


def test_eleventh_failed_login_anywhere_is_429(cluster: Any) -> None:
    """Ten failures spread over two replicas and their workers; the 11th is refused everywhere."""
    statuses = []
    for i in range(10):  # alternate replicas directly, through nginx too
        via_nginx = i % 3 == 0
        base = cluster.url if via_nginx else cluster.replicas[i % 2]
        with from_address("127.0.0.21" if via_nginx else "127.0.0.1", base) as c:
            headers = {} if via_nginx else {"X-Forwarded-For": "127.0.0.21"}
            statuses.append(c.get("/v2/", auth=("alice", f"guess-{i}"), headers=headers).status_code)
    assert statuses == [401] * 10
    # Through nginx, the client is 127.0.0.21 as well (nginx's X-Forwarded-For).
    assert failed_logins(cluster.url, "127.0.0.21", 1) == [429]
    for base in cluster.replicas:
        for _ in range(2):
            with from_address("127.0.0.1", base) as c:
                r = c.get("/v2/", auth=USER, headers={"X-Forwarded-For": "127.0.0.21"})
                assert r.status_code == 429  # even the right password: the limit comes first
                assert int(r.headers["Retry-After"]) > 0
    # Another client is not affected.
    with from_address("127.0.0.22", cluster.url) as c:
        assert c.get("/v2/", auth=USER).status_code == 200


def test_tag_moved_on_a_is_served_by_b_at_once(cluster: Any) -> None:
    a, b = cluster.replicas
    for round_, (writer, reader) in enumerate([(a, b), (b, a), (a, b), (a, b)]):
        manifest = push_image(writer, "shared/img", "v1", round_)
        for _ in range(3):  # each worker of the reader, most likely; and through nginx
            for base in (reader, cluster.url):
                got = get_manifest(base, "shared/img", "v1")
                assert got.status_code == 200
                assert got.content == manifest, f"round {round_}: {base} served a stale tag"
    # A deleted tag is gone everywhere at once too.
    with httpx.Client(base_url=a, auth=USER) as c:
        digest = sha256(manifest)
        assert c.delete(f"/v2/shared/img/manifests/{digest}").status_code == 202
    assert get_manifest(b, "shared/img", "v1").status_code == 404


def test_redis_going_away_degrades_to_per_process_state(cluster: Any, redis_server: RedisServer) -> None:
    a, b = cluster.replicas
    push_image(a, "before/img", "v1", 0)
    assert get_manifest(b, "before/img", "v1").status_code == 200
    redis_server.stop()
    # Clients see no error: pushes, pulls, tag moves, logins.
    for round_ in range(3):
        manifest = push_image(a if round_ % 2 else cluster.url, "during/img", f"t{round_}", round_)
        for base in (a, b, cluster.url):
            got = get_manifest(base, "during/img", f"t{round_}")
            assert got.status_code == 200 and got.content == manifest
    assert get_manifest(b, "before/img", "v1").status_code == 200
    statuses = failed_logins(cluster.url, "127.0.0.31", 12)
    assert set(statuses) <= {401, 429}, statuses
    # Per-process limiting still holds: one keep-alive connection stays with one worker.
    with from_address("127.0.0.1", a) as c:
        hdr = {"X-Forwarded-For": "127.0.0.32"}
        answers = [c.get("/v2/", auth=("alice", f"x{i}"), headers=hdr).status_code for i in range(11)]
    assert answers == [401] * 10 + [429]
    logs = cluster.logs()
    assert "falling back to per-process state" in logs, logs
    assert "Traceback" not in logs, logs
    # Redis back: shared again after the breaker's back-off (1 s at first).
    redis_server.start()
    deadline = time.monotonic() + 60
    while True:
        statuses = failed_logins(cluster.url, "127.0.0.33", 1)
        assert statuses[0] in (401, 429)
        if "answers again" in cluster.logs() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "answers again" in cluster.logs()


async def test_link_cache_refuses_stale_fills_and_forgets_across_an_outage(redis_server: RedisServer) -> None:
    """The two rules that keep the cache coherent without a TTL (registry/shared_state.py)."""
    from pyreg.registry.config import RedisConfig
    from pyreg.registry.shared_state import LinkCache, Miss, SharedState, Unavailable

    shared = SharedState(RedisConfig(addr=redis_server.addr))
    cache = LinkCache(shared)
    try:
        # A reader misses and reads storage; a writer moves the key meanwhile: the reader's
        # (old) value is not cached over the new one.
        miss = await cache.get("tag|a/b|v1")
        assert isinstance(miss, Miss)
        await cache.write("tag|a/b|v1", "sha256:new")
        await cache.fill(miss, "sha256:old")
        assert await cache.get("tag|a/b|v1") == "sha256:new"
        # A fill with nothing in between is kept.
        miss = await cache.get("tag|a/b|v2")
        assert isinstance(miss, Miss)
        await cache.fill(miss, "sha256:two")
        assert await cache.get("tag|a/b|v2") == "sha256:two"
        # Redis goes away: Unavailable (callers use their own state), then back: what was cached
        # before the outage is abandoned, since writes made meanwhile never reached it.
        redis_server.stop()
        with pytest.raises(Unavailable):
            await cache.get("tag|a/b|v2")
        with pytest.raises(Unavailable):  # breaker open: not even tried
            await cache.get("tag|a/b|v2")
        redis_server.start()
        shared._retry_at = 0.0  # skip the back-off
        assert isinstance(await cache.get("tag|a/b|v2"), Miss)
        assert shared.up
    finally:
        await shared.close()


async def test_a_token_verified_by_one_replica_is_taken_by_another(redis_server: RedisServer) -> None:
    """With http.secret, a replica marks the tokens it verified; another takes the mark instead of
    checking the signature (here: one that does not even have the key yet, as in a key rotation).
    A mark made without the secret, or an expired token, is not taken."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from pyreg.registry.auth.middleware import AuthService
    from pyreg.registry.auth.scope import parse_scopes
    from pyreg.registry.auth.tokens import InvalidToken, TokenIssuer, TokenVerifier
    from pyreg.registry.config import RedisConfig
    from pyreg.registry.shared_state import SharedState, TokenMarks

    key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    issuer = TokenIssuer(key, issuer="pyreg", service="reg", ttl=300)
    token = issuer.issue("alice", parse_scopes(["repository:a:pull"])).token
    shared = SharedState(RedisConfig(addr=redis_server.addr))

    def replica(public: Any, secret: str) -> AuthService:
        verifier = TokenVerifier(issuers=["pyreg"], audience="reg", keys=[public])
        svc = AuthService(mode="token", verifier=verifier)
        svc.shared_tokens = TokenMarks(shared, secret)
        return svc

    a = replica(key.public_key(), "the-secret")
    b = replica(other_key.public_key(), "the-secret")  # cannot check this token's signature
    c = replica(other_key.public_key(), "another-secret")
    try:
        with pytest.raises(InvalidToken):
            await b.verify_token(token)  # nobody verified it yet
        verified = await a.verify_token(token)
        assert verified.subject == "alice" and verified.allows("repository", "a", "pull")
        taken = await b.verify_token(token)
        assert taken.subject == "alice" and taken.allows("repository", "a", "pull")
        with pytest.raises(InvalidToken):
            await c.verify_token(token)  # a mark is only good under the same secret
        expired = issuer.issue("alice", [], now=0).token
        await TokenMarks(shared, "the-secret").mark(expired, time.time() + 60, 0)  # a bogus mark
        with pytest.raises(InvalidToken):
            await b.verify_token(expired)  # its own expiry is still checked
        # Redis away: b is back to its own signature checks (the per-process cache keeps "taken").
        redis_server.stop()
        fresh = issuer.issue("bob", []).token
        assert (await a.verify_token(fresh)).subject == "bob"
        with pytest.raises(InvalidToken):
            await b.verify_token(fresh)
    finally:
        await shared.close()
