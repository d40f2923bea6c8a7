"""storage/routes.py: the one /v2 path grammar, and the registry, its auth middleware and the
client agreeing on it (they once parsed it three ways)."""

from __future__ import annotations

import httpx
import pytest

from pyreg.registry.auth.middleware import classify
from pyreg.registry.routes import match as route_match
from pyreg.storage.remote.auth import request_scopes
from pyreg.storage.routes import Route, match, parse_path, token_scopes

PATHS = [
    "", "_catalog", "a/manifests/1", "a/b/blobs/sha256:00", "a/blobs/uploads/", "a/blobs/uploads",
    "a/blobs/uploads/u-1", "a/tags/list", "a/referrers/sha256:00", "team/blobs/x/manifests/1",
    "team/blobs/x/blobs/uploads/u", "blobs/manifests/blobs", "blobs/uploads/u", "a/manifests/",
    "a/nothing/here", "a/tags/other", "_catalog/",
]


@pytest.mark.parametrize("rest,route", [
    ("", Route("base")),
    ("_catalog", Route("catalog")),
    ("team/blobs/x/manifests/1", Route("manifest", "team/blobs/x", "1")),
    ("team/blobs/x/blobs/sha256:ab", Route("blob", "team/blobs/x", "sha256:ab")),
    ("a/blobs/uploads/", Route("upload_start", "a")),
    ("a/blobs/uploads", Route("upload_start", "a")),
    ("a/b/blobs/uploads/u-1", Route("upload", "a/b", "u-1")),
    ("a/tags/list", Route("tags", "a")),
    ("a/referrers/sha256:ab", Route("referrers", "a", "sha256:ab")),
    ("blobs/uploads/u", None),
    ("a/manifests/", None),
    ("a/tags/other", None),
])
def test_match(rest: str, route: Route | None) -> None:
    assert match(rest) == route


def test_parse_path_only_under_v2() -> None:
    assert parse_path("/v2") == Route("base") and parse_path("/v2/") == Route("base")
    assert parse_path("/v1/a/manifests/1") is None and parse_path("/v2x/a/manifests/1") is None


@pytest.mark.parametrize("rest", PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"])
def test_registry_middleware_and_client_agree(rest: str, method: str) -> None:
    """Same repository, same actions, whichever of the three reads the path."""
    path = "/v2/" + rest
    found = route_match(rest)
    need = classify(method, path)
    client = request_scopes(httpx.Request(method, "http://r" + path))
    if found is None or not found[1]:
        assert need.kind in ("base", "catalog") and need.repository == ""
        assert client == (["registry:catalog:*"] if need.kind == "catalog" else [])
        return
    assert need.repository == found[1]
    wanted = set(need.actions) | ({"pull"} if "push" in need.actions else set())
    assert client == [f"repository:{found[1]}:{','.join(sorted(wanted))}"]


def test_team_blobs_x_scope() -> None:
    """The client once asked for ``repository:team:pull`` for the repository ``team/blobs/x``."""
    request = httpx.Request("GET", "http://r/v2/team/blobs/x/manifests/latest")
    assert request_scopes(request) == ["repository:team/blobs/x:pull"]


def test_mount_scope() -> None:
    route = match("t/blobs/uploads/")
    assert token_scopes(route, "POST", "s/r") == ["repository:t:pull,push", "repository:s/r:pull"]
    assert token_scopes(route, "POST", "t") == ["repository:t:pull,push"]


def test_only_short_paths_are_cached() -> None:
    """Every real path is short; a hostile one up to the 64 KiB header limit is parsed each time,
    so 4096 of them can't hold hundreds of MiB in the route cache."""
    from pyreg.storage import routes

    long_name = "a/" * 2000 + "b"
    before = routes._match_cached.cache_info().currsize
    assert routes.match(f"{long_name}/manifests/latest") == routes.Route("manifest", long_name, "latest")
    assert routes._match_cached.cache_info().currsize == before
    routes.match("team/app/manifests/v-cache-probe")
    assert routes._match_cached.cache_info().currsize == before + 1
