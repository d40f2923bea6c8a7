"""The distribution-spec ``/v2`` path grammar and the token scopes a request needs.

One parser for the registry's routes, its auth middleware and the client's token flow, so the
three cannot disagree about which repository a path names. Names may hold slashes, and even the
words ``blobs`` or ``manifests`` (``team/blobs/x``), so a path is matched on its LAST segments,
right to left; everything before them is the name::

    /v2/                                   base
    /v2/_catalog                           catalog
    /v2/<name>/manifests/<reference>       manifest
    /v2/<name>/blobs/<digest>              blob
    /v2/<name>/blobs/uploads/              upload_start
    /v2/<name>/blobs/uploads/<id>          upload
    /v2/<name>/tags/list                   tags
    /v2/<name>/referrers/<digest>          referrers

The name is not validated here (storage/names.py does that, where the caller decides the error).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

_READS = frozenset({"GET", "HEAD"})
CATALOG_SCOPE = "registry:catalog:*"


@dataclass(frozen=True)
class Route:
    """One parsed ``/v2`` path: ``kind`` names the endpoint; ``arg`` is the reference, digest or
    upload id ("" where the endpoint has none)."""

    kind: str
    name: str = ""
    arg: str = ""


# Routing, auth and metrics each ask for every request's route, and a Route is frozen: short paths
# (every real one) are cached; a long path is parsed each time, so hostile paths up to the header
# limit can't fill the cache with kilobytes each.
_CACHED_PATH = 512


def match(rest: str) -> Route | None:
    """The route for the part of a path after ``/v2/``; None when no endpoint has that shape."""
    return _match_cached(rest) if len(rest) <= _CACHED_PATH else _match(rest)


def _match(rest: str) -> Route | None:
    """``match`` without the cache."""
    if rest == "":
        return Route("base")
    if rest == "_catalog":
        return Route("catalog")
    parts = rest.rsplit("/", 2)
    if len(parts) != 3 or not parts[0]:
        return None
    name, kind, arg = parts
    if kind == "manifests" and arg:
        return Route("manifest", name, arg)
    if kind == "blobs" and arg:
        return Route("upload_start", name) if arg == "uploads" else Route("blob", name, arg)
    if kind == "uploads" and name.endswith("/blobs") and len(name) > 6:
        return Route("upload", name[:-6], arg) if arg else Route("upload_start", name[:-6])
    if kind == "tags" and arg == "list":
        return Route("tags", name)
    if kind == "referrers" and arg:
        return Route("referrers", name, arg)
    return None


_match_cached = lru_cache(maxsize=4096)(_match)


def parse_path(path: str) -> Route | None:
    """The route of a whole URL path (``/v2``, ``/v2/…``); None outside ``/v2`` or for no endpoint."""
    if path == "/v2":
        return Route("base")
    if not path.startswith("/v2/"):
        return None
    return match(path[4:])


def action(route: Route, method: str) -> str:
    """The one repository action a request needs: uploads are ``push`` whatever the method (the
    spec puts cancelling an upload under push), tag lists ``pull``, and otherwise reads ``pull``,
    ``DELETE`` ``delete``, writes ``push``."""
    if route.kind in ("upload", "upload_start"):
        return "push"
    if route.kind == "tags" or method in _READS:
        return "pull"
    return "delete" if method == "DELETE" else "push"


def repository_scope(name: str, actions: Iterable[str]) -> str:
    """``repository:<name>:<actions>``; a push also asks for pull (what clients ask for, and what
    a push needs to check which blobs exist)."""
    acts = set(actions)
    if "push" in acts:
        acts.add("pull")
    return f"repository:{name}:{','.join(sorted(acts))}"


def token_scopes(route: Route | None, method: str, mount_from: str | None = None) -> list[str]:
    """The token scopes a request needs: the catalog's, or its repository's plus ``pull`` on the
    repository a cross-repository mount reads from."""
    if route is None or route.kind == "base":
        return []
    if route.kind == "catalog":
        return [CATALOG_SCOPE]
    scopes = [repository_scope(route.name, [action(route, method)])]
    if mount_from and mount_from != route.name:
        scopes.append(repository_scope(mount_from, ["pull"]))
    return scopes


def merge_scopes(*groups: Iterable[str]) -> list[str]:
    """Union of scope strings, merging the actions of the same resource (sorted)."""
    merged: dict[str, set[str]] = {}
    for group in groups:
        for scope in group:
            resource, _, actions = scope.rpartition(":")
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return [f"{r}:{','.join(sorted(a))}" for r, a in sorted(merged.items())]
