"""Shared state in Redis for replicas and workers, behind a circuit breaker.

Without ``redis:`` in the config each process keeps its own state (the failed-login counts, the
tag and descriptor cache, verified tokens), so N processes allow N times the login attempts and
a tag moved on one replica can be served stale by another until a local cache entry expires.
With it, that state lives in Redis (as Distribution keeps its blob-descriptor cache there);
verified tokens only with ``http.secret`` set as well (TokenMarks).

Redis is an optimisation and a limiter, never a dependency of an answer: every use goes through
``SharedState.run``, and on any Redis error the caller falls back to its per-process state. The
first failure logs one warning and opens the breaker; Redis is tried again after a back-off
(1 s, doubling to 10 s), so a dead Redis costs no latency. When it answers again, the cache
epoch is bumped: entries written before the outage are abandoned, since writes made meanwhile
never reached them.

The lookup cache (``LinkCache``) is coherent across replicas without a TTL: a writer changes
storage first and then, in one script, bumps the key's version and stores the new value; a
reader that missed fills the entry only if the version is still the one it saw before reading
storage, so a slow reader can never put back a value that a write already replaced. Entries
still expire after ``ENTRY_TTL`` to bound what a replica cut off from Redis (but not from storage)
can leave behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pyreg.registry.config import RedisConfig, split_addr

if TYPE_CHECKING:  # redis-py is imported only when ``redis:`` is configured (~15 MiB per worker)
    import redis.asyncio as aioredis

log = logging.getLogger("pyreg.redis")

T = TypeVar("T")
PREFIX = "pyreg:"
ENTRY_TTL = 60  # seconds; see the module docstring
VERSION_TTL = 86400


class Unavailable(Exception):
    """Redis is not usable now; use the per-process state."""


def _client(config: RedisConfig) -> aioredis.Redis:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    host, port = split_addr(config.addr or config.addrs[0], "redis.addr")
    kwargs: dict[str, Any] = {
        "host": host, "port": port, "db": config.db, "username": config.username or None,
        "password": config.password or None, "socket_connect_timeout": config.dialtimeout or None,
        "socket_timeout": max(config.readtimeout, config.writetimeout) or None,
        "max_connections": config.poolsize or config.pool.maxactive or None,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),  # no retries inside redis-py: the breaker decides
    }
    tls = config.tls
    if tls.enabled or tls.certificate or tls.clientcas or tls.rootcas:
        cas = [*tls.clientcas, *tls.rootcas]
        kwargs.update(ssl=True, ssl_certfile=tls.certificate, ssl_keyfile=tls.key,
                      ssl_cert_reqs=ssl.CERT_REQUIRED)
        if cas:
            kwargs["ssl_ca_data"] = "".join(Path(p).read_text(encoding="ascii") for p in cas)
    return aioredis.Redis(**kwargs)


class SharedState:
    """One Redis connection pool per process, and the breaker in front of it."""

    MIN_BACKOFF = 1.0
    MAX_BACKOFF = 10.0

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.where = config.addr or config.addrs[0]
        self.redis = _client(config)
        from redis.exceptions import RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError)
        self._retry_at = 0.0
        self._backoff = 0.0  # 0: closed (Redis in use)

    @property
    def up(self) -> bool:
        return self._backoff == 0.0

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``op(redis)``, or ``Unavailable`` while the breaker is open or when Redis fails."""
        if self._backoff and time.monotonic() < self._retry_at:
            raise Unavailable
        try:
            result = await op(self.redis)
            if self._backoff:
                await self.redis.incr(PREFIX + "epoch")  # abandon what writes missed while down
        except self._errors as e:
            self._trip(e)
            raise Unavailable from e
        if self._backoff:
            log.warning("redis at %s answers again: shared state back in use", self.where)
            self._backoff = 0.0
        return result

    def _trip(self, error: BaseException) -> None:
        if not self._backoff:
            log.warning("redis at %s failed (%s): falling back to per-process state (login limits "
                        "and caches per worker) until it answers again", self.where,
                        error or type(error).__name__)
            self._backoff = self.MIN_BACKOFF
        else:
            self._backoff = min(self._backoff * 2, self.MAX_BACKOFF)
        self._retry_at = time.monotonic() + self._backoff

    async def forget_cache(self) -> None:
        """Abandon every cached lookup (``pyreg gc`` after it unlinks and sets blobs aside, so no
        replica keeps saying a blob is there for longer than its in-process cache ttl would)."""
        with contextlib.suppress(Unavailable):
            await self.run(lambda r: r.incr(PREFIX + "epoch"))

    async def close(self) -> None:
        with contextlib.suppress(*self._errors):
            await self.redis.aclose()


# -- the lookup cache --------------------------------------------------------------------------

_GET = """
local e = redis.call('GET', KEYS[1]) or '0'
local v = redis.call('GET', KEYS[2] .. e .. ':' .. ARGV[1]) or ''
local ver = redis.call('GET', KEYS[3] .. ARGV[1]) or '0'
return {v, ver, e}
"""
_FILL = """
local e = redis.call('GET', KEYS[1]) or '0'
local ver = redis.call('GET', KEYS[3] .. ARGV[1]) or '0'
if e == ARGV[3] and ver == ARGV[2] then
  redis.call('SET', KEYS[2] .. e .. ':' .. ARGV[1], ARGV[4], 'EX', ARGV[5])
end
return 1
"""
_WRITE = """
local e = redis.call('GET', KEYS[1]) or '0'
redis.call('INCR', KEYS[3] .. ARGV[1])
redis.call('EXPIRE', KEYS[3] .. ARGV[1], ARGV[4])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[2] .. e .. ':' .. ARGV[1])
else
  redis.call('SET', KEYS[2] .. e .. ':' .. ARGV[1], ARGV[2], 'EX', ARGV[3])
end
return 1
"""
_KEYS = [PREFIX + "epoch", PREFIX + "c:", PREFIX + "v:"]


class Miss:
    """A cache miss; pass it to ``LinkCache.fill`` with the value read from storage."""

    __slots__ = ("epoch", "key", "version")

    def __init__(self, key: str, version: str = "", epoch: str = "") -> None:
        self.key, self.version, self.epoch = key, version, epoch


class LinkCache:
    """String values under string keys in Redis, coherent across replicas (module docstring)."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        r = shared.redis
        self._get, self._fill, self._write = (r.register_script(_GET), r.register_script(_FILL),
                                              r.register_script(_WRITE))

    async def get(self, key: str) -> str | Miss:
        """The cached value, or a ``Miss``; ``Unavailable`` when Redis is not in use."""
        value, version, epoch = await self.shared.run(lambda _: self._get(keys=_KEYS, args=[key]))
        return str(value) if value else Miss(key, str(version), str(epoch))

    async def fill(self, miss: Miss, value: str) -> None:
        """Cache what a reader found, unless a write changed the key since its ``get``."""
        with contextlib.suppress(Unavailable):
            await self.shared.run(lambda _: self._fill(
                keys=_KEYS, args=[miss.key, miss.version, miss.epoch, value, ENTRY_TTL]))

    async def write(self, key: str, value: str | None) -> None:
        """After a storage change: the new value (None: gone) for every replica, at once."""
        with contextlib.suppress(Unavailable):
            await self.shared.run(lambda _: self._write(
                keys=_KEYS, args=[key, value or "", ENTRY_TTL, VERSION_TTL]))


# -- failed logins -----------------------------------------------------------------------------


class LoginCounts:
    """Failed logins per client in one Redis sorted set each (scores: wall-clock times)."""

    def __init__(self, shared: SharedState, failures: int, window: float) -> None:
        self.shared = shared
        self.failures = failures
        self.window = window

    async def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; ``Unavailable`` when Redis is not in use."""
        if self.failures <= 0:
            return 0.0
        key, now = PREFIX + "login:" + client, time.time()

        async def op(r: aioredis.Redis) -> Any:
            async with r.pipeline(transaction=True) as p:
                p.zremrangebyscore(key, "-inf", now - self.window)
                p.zrange(key, -self.failures, -1, withscores=True)
                return (await p.execute())[1]

        recent = await self.shared.run(op)
        if len(recent) < self.failures:
            return 0.0
        return max(0.0, float(recent[0][1]) + self.window - now)

    async def failed(self, client: str) -> None:
        key, now = PREFIX + "login:" + client, time.time()

        async def op(r: aioredis.Redis) -> Any:
            async with r.pipeline(transaction=True) as p:
                p.zremrangebyscore(key, "-inf", now - self.window)
                p.zadd(key, {f"{now:.6f}:{secrets.token_hex(4)}": now})
                p.zremrangebyrank(key, 0, -(max(self.failures, 1) + 1))
                p.expire(key, math.ceil(self.window) + 1)
                return await p.execute()

        await self.shared.run(op)


# -- verified tokens ---------------------------------------------------------------------------


class TokenMarks:
    """Which bearer tokens some replica has verified, so the others skip the signature check.

    A mark is a key named by HMAC-SHA256(``http.secret``, token) that lives until the token
    expires. Without the secret nobody who can write to Redis can mark a token of their making,
    and the token itself (not Redis) supplies its claims, whose expiry, issuer and audience each
    replica still checks (TokenVerifier.claims_of_verified).
    """

    def __init__(self, shared: SharedState, secret: str) -> None:
        self.shared = shared
        self._secret = hashlib.sha256(b"pyreg token marks\0" + secret.encode()).digest()

    def _key(self, raw: str) -> str:
        return PREFIX + "tok:" + hmac.new(self._secret, raw.encode(), hashlib.sha256).hexdigest()

    async def known(self, raw: str) -> bool:
        """Whether a replica verified ``raw``; ``Unavailable`` when Redis is not in use."""
        return bool(await self.shared.run(lambda r: r.exists(self._key(raw))))

    async def mark(self, raw: str, expires: float, leeway: float) -> None:
        ttl = int(expires + leeway - time.time())
        if ttl > 0:
            with contextlib.suppress(Unavailable):
                await self.shared.run(lambda r: r.set(self._key(raw), "1", ex=ttl))


def make_shared_state(config: Any) -> SharedState | None:
    """The process's SharedState when ``redis:`` is configured, else None (per-process state)."""
    rc = getattr(config, "redis", None)
    return SharedState(rc) if rc is not None else None
