"""What every route shares: the registry's state, name/reference checks, headers, bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from starlette.requests import Request

from registry.config import Config
from registry.errors import API_VERSION, API_VERSION_HEADER, RegistryError, digest_invalid, name_invalid
from registry.layout import Layout
from registry.uploads import Uploads
from storage.digest import Digest, DigestError
from storage.driver import Driver
from storage.names import NAME_MAX_LENGTH, is_valid_tag, name_problem

MAX_MANIFEST_SIZE: Final = 4 * 1024 * 1024
BASE_HEADERS: Final = {API_VERSION_HEADER: API_VERSION}


@dataclass
class Registry:
    """Everything a request handler needs; one per app, kept in ``app.state.registry``."""

    config: Config
    driver: Driver
    layout: Layout
    uploads: Uploads


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
    if not is_valid_tag(tag):
        raise RegistryError("MANIFEST_INVALID", f"invalid tag {tag[:200]!r}: must match "
                            "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", detail={"tag": tag[:200]})
    return tag


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


_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(\d+|\*))?$")


def parse_content_range(value: str) -> tuple[int, int] | None:
    """(start, end) inclusive from ``start-end`` (also ``bytes start-end/total``); None if bad."""
    m = _CONTENT_RANGE.match(value.strip())
    if not m:
        return None
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        return None
    return start, end


def pagination(request: Request) -> tuple[int | None, str | None]:
    """``n`` and ``last`` query parameters of a listing."""
    raw_n = request.query_params.get("n")
    n: int | None = None
    if raw_n is not None and raw_n != "":
        if not raw_n.isdigit():
            raise RegistryError("PAGINATION_NUMBER_INVALID",
                                f"n must be a non-negative integer, got {raw_n[:50]!r}")
        n = int(raw_n)
    last = request.query_params.get("last") or None
    return n, last
