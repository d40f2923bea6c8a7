"""What every route shares: the registry's state, name/reference checks, headers, bodies."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, TypeVar

from starlette.requests import Request

from pyreg.registry.config import Config
from pyreg.registry.errors import API_VERSION, API_VERSION_HEADER, RegistryError, digest_invalid, name_invalid
from pyreg.registry.layout import Layout
from pyreg.registry.uploads import Uploads
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.driver import Driver
from pyreg.storage.names import NAME_MAX_LENGTH, TAG_PATTERN, is_valid_tag, name_problem
from pyreg.storage.numbers import parse_uint

T = TypeVar("T")

MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024
LOOKUP_CONCURRENCY: Final = 32  # storage lookups one request keeps in flight
BASE_HEADERS: Final = {API_VERSION_HEADER: API_VERSION}


@dataclass
class Registry:
    """Everything a request handler needs; one per app, kept in ``app.state.registry``."""

    config: Config
    driver: Driver
    layout: Layout
    uploads: Uploads
    mirror: Any = None  # registry.mirror.cache.Mirror when mirror.upstreams is configured


@lru_cache(maxsize=4096)
def _valid_name(name: str) -> bool:
    return name_problem(name) is None


def check_name(name: str) -> str:
    """The name, or NAME_INVALID; valid names are remembered (the grammar is the hot path)."""
    if len(name) <= NAME_MAX_LENGTH and _valid_name(name):
        return name
    raise name_invalid(name[:300], name_problem(name) or "invalid repository name")


@lru_cache(maxsize=4096)
def _digest(value: str) -> Digest:
    return Digest.parse(value)


def parse_digest(value: str) -> Digest:
    try:
        return _digest(value) if len(value) <= 200 else Digest.parse(value)
    except DigestError as e:
        raise digest_invalid(str(e), value[:200]) from None


def is_digest_reference(reference: str) -> bool:
    return ":" in reference


def check_tag(tag: str) -> str:
    """The tag of a manifest PUT, or 400 TAG_INVALID (Distribution's code for it)."""
    if not is_valid_tag(tag):
        raise RegistryError("TAG_INVALID", f"invalid tag {tag[:200]!r}: must match {TAG_PATTERN}",
                            detail={"tag": tag[:200]})
    return tag


async def bounded_gather(awaitables: Sequence[Awaitable[T]], limit: int) -> list[T]:
    """``asyncio.gather`` with at most ``limit`` of them running at once (each may be a storage call)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    return list(await asyncio.gather(*(one(a) for a in awaitables)))


def location(request: Request, registry: Registry, path: str) -> str:
    """A Location header value: relative (path only) unless the proxy settings say otherwise."""
    host = registry.config.http.host
    if host:
        return host.rstrip("/") + path
    if registry.config.proxy.trustforwarded:
        fwd_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        if fwd_host:
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or request.url.scheme
            return f"{proto}://{fwd_host}{path}"
    return path


def upload_range(size: int) -> str:
    """The ``Range`` header of an upload reply (Distribution answers 0-0 for an empty session)."""
    return f"0-{max(size - 1, 0)}"


_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?$")


def parse_content_range(value: str) -> tuple[int, int] | None:
    """(start, end) inclusive from ``start-end`` (also ``bytes start-end/total``); None if bad.

    Only ASCII digits, at most ``storage.numbers.MAX_DIGITS`` of each: anything else is malformed.
    """
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        return None
    start, end = parse_uint(m.group(1)), parse_uint(m.group(2))
    if start is None or end is None or end < start:
        return None
    return start, end


def content_length(request: Request) -> int | None:
    """The request's Content-Length (None without one); 400 SIZE_INVALID when it is malformed."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    value = parse_uint(raw.strip())
    if value is None:
        raise RegistryError("SIZE_INVALID", f"invalid Content-Length {raw[:50]!r}")
    return value


def pagination(request: Request) -> tuple[int | None, str | None]:
    """``n`` and ``last`` query parameters of a listing; a bad ``n`` is 400 PAGINATION_NUMBER_INVALID."""
    raw_n = request.query_params.get("n")
    n: int | None = None
    if raw_n is not None and raw_n != "":
        n = parse_uint(raw_n)
        if n is None:
            raise RegistryError("PAGINATION_NUMBER_INVALID",
                                f"n must be a non-negative integer of at most 18 digits, got {raw_n[:50]!r}")
    last = request.query_params.get("last") or None
    return n, last
