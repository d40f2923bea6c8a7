"""The registry core's bad-input suite again, with auth on: Basic (htpasswd) and the Bearer token
flow (challenge -> /token -> retry, as Docker clients do). Each answer must be the same spec error
as without auth, for a caller who is allowed everything."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import test_api_errors as _core
from tests.fixtures.auth import USERS, SigningKey
from tests.fixtures.registry import asgi_client, push_image

# The core's bad-input tests, collected here again with this module's registry_client (auth on).
# Taken by name, so a rename over there drops a test here instead of breaking collection.
for _name in ("test_invalid_names", "test_invalid_tags", "test_unknown_methods_and_paths",
              "test_unknown_things_are_404", "test_encoded_traversal"):
    if hasattr(_core, _name):
        globals()[_name] = getattr(_core, _name)

ADMIN = ("admin", USERS["admin"])
ACCESS = [{"repository": "*", "users": ["admin"], "actions": ["*"]}]


class BearerFlow(httpx.Auth):
    """The Docker token flow: on a Bearer challenge, fetch a token for its scope and retry once."""

    requires_response_body = True

    def __init__(self, user: str, password: str) -> None:
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer "):
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", "")}
        if params.get("scope"):
            query["scope"] = params["scope"]
        token = yield httpx.Request(
            "GET", params["realm"], params=query, headers={"Authorization": self.basic}
        )
        request.headers["Authorization"] = f"Bearer {token.json()['token']}"
        yield request


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Auth does not touch storage: filesystem only (the API suites cover the drivers)."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


@pytest.fixture(params=["htpasswd", "token"])
async def registry_client(
    request: pytest.FixtureRequest, make_registry_app: Any, htpasswd_users: Path, signing_key: SigningKey
) -> AsyncIterator[httpx.AsyncClient]:
    auth: dict[str, Any] = {"htpasswd": {"path": str(htpasswd_users)}}
    if request.param == "token":
        auth["token"] = {"service": "pyreg-test", "issuer": "pyreg-test", "signingkey": str(signing_key.key)}
    app = make_registry_app({"auth": auth, "access": ACCESS})
    async with asgi_client(app) as client:
        client.auth = httpx.BasicAuth(*ADMIN) if request.param == "htpasswd" else BearerFlow(*ADMIN)
        yield client


async def test_readonly_mode_behind_auth(make_registry_app: Any, htpasswd_users: Path) -> None:
    """Auth decides first (a stranger's write is 401), then read-only mode refuses the write (405)."""
    writable = make_registry_app({"auth": {"htpasswd": {"path": str(htpasswd_users)}}, "access": ACCESS})
    async with asgi_client(writable) as c:
        c.auth = httpx.BasicAuth(*ADMIN)
        await push_image(c, "ro/app", "1")
    readonly = make_registry_app(
        {
            "auth": {"htpasswd": {"path": str(htpasswd_users)}},
            "access": ACCESS,
            "storage": {"maintenance": {"readonly": {"enabled": True}}},
        }
    )
    async with asgi_client(readonly) as c:
        assert (await c.put("/v2/ro/app/manifests/2", content=b"{}")).status_code == 401
        c.auth = httpx.BasicAuth(*ADMIN)
        r = await c.put("/v2/ro/app/manifests/2", content=b"{}")
        assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
        assert (await c.post("/v2/ro/app/blobs/uploads/")).status_code == 405
        assert (await c.get("/v2/ro/app/manifests/1")).status_code == 200
        assert (await c.get("/v2/ro/app/tags/list")).json()["tags"] == ["1"]


async def test_odd_paths_never_slip_past_auth(make_registry_app: Any, htpasswd_users: Path) -> None:
    """Whatever a path looks like, an anonymous caller gets a refusal or NAME_INVALID, never content."""
    app = make_registry_app({"auth": {"htpasswd": {"path": str(htpasswd_users)}}, "access": ACCESS})
    async with asgi_client(app) as c:
        c.auth = httpx.BasicAuth(*ADMIN)
        await push_image(c, "foo", "latest")
        await push_image(c, "a/blobs/uploads", "latest")
        c.auth = None
        for method, path in [
            ("GET", "/v2//foo/manifests/latest"),
            ("GET", "/v2/foo//manifests/latest"),
            ("GET", "/v2///foo/tags/list"),
            ("POST", "/v2//foo/blobs/uploads/"),
            ("GET", "/v2/a/blobs/uploads/manifests/latest"),
            ("GET", "/v2/a/blobs/uploads/tags/list"),
            ("POST", "/v2/a/manifests/blobs/uploads"),
            ("GET", "/v2/foo/manifests/latest/"),
            ("GET", "/v2/%66oo/manifests/latest"),
            ("GET", "/v2/foo/./manifests/latest"),
            ("GET", "/v2/_catalog/"),
            ("GET", "/v2/foo/tags/list/"),
        ]:
            r = await c.request(method, path)
            assert r.status_code in (400, 401, 404, 405), (method, path, r.status_code)
            if r.status_code != 401:
                assert r.json()["errors"][0]["code"] != "UNAUTHORIZED"
