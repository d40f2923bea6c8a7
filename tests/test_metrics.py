"""Prometheus /metrics (registry/metrics.py): counts by bounded labels, uploads, auth, workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyreg.registry.config import ConfigError, load_config
from tests.fixtures.registry import push_blob, push_image, sha256


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the text exposition format."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient, path: str = "/metrics", **kw: Any) -> dict[Any, float]:
    r = await client.get(path, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return samples(r.text)


@pytest.mark.filesystem_only
async def test_requests_uploads_and_bytes(registry_client: httpx.AsyncClient) -> None:
    c = registry_client
    assert (await c.get("/v2/")).status_code == 200
    # chunked upload: POST 202, PATCH 202, PUT 201
    data = b"x" * 1000
    r = await c.post("/v2/team/app/blobs/uploads/")
    assert r.status_code == 202
    r = await c.patch(r.headers["Location"], content=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    r = await c.put(r.headers["Location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    # monolithic, then one whose digest is wrong
    await push_blob(c, "team/app", b"monolithic")
    r = await c.post("/v2/team/app/blobs/uploads/", params={"digest": sha256(b"other")}, content=b"bad")
    assert r.status_code == 400
    # a mount is not an upload
    r = await c.post("/v2/team/copy/blobs/uploads/", params={"mount": sha256(data), "from": "team/app"})
    assert r.status_code == 201
    digest, manifest = await push_image(c, "team/app", "v1")
    assert (await c.get(f"/v2/team/app/manifests/{digest}")).status_code == 200
    assert (await c.get(f"/v2/team/app/blobs/{sha256(data)}")).content == data
    assert (await c.get("/v2/team/app/tags/list")).status_code == 200
    assert (await c.get("/v2/_catalog")).status_code == 200
    assert (await c.get(f"/v2/team/app/referrers/{digest}")).status_code == 200
    assert (await c.get("/v2/team/app/nothing/here")).status_code == 404
    assert (await c.get("/healthz")).status_code == 200

    found = await scrape(c)
    total = "pyreg_http_requests_total"
    assert value(found, total, method="GET", route="base", status="200") == 1
    assert value(found, total, method="POST", route="upload", status="202") == 1
    assert value(found, total, method="PATCH", route="upload", status="202") == 1
    assert value(found, total, method="PUT", route="upload", status="201") == 1
    assert value(found, total, method="POST", route="upload", status="201") == 1 + 1 + 2  # mono, mount, image
    assert value(found, total, method="POST", route="upload", status="400") == 1
    assert value(found, total, method="PUT", route="manifest", status="201") == 1
    assert value(found, total, method="GET", route="manifest", status="200") == 1
    assert value(found, total, method="GET", route="blob", status="200") == 1
    assert value(found, total, method="GET", route="tags", status="200") == 1
    assert value(found, total, method="GET", route="catalog", status="200") == 1
    assert value(found, total, method="GET", route="referrers", status="200") == 1
    assert value(found, total, method="GET", route="other", status="404") == 1
    assert value(found, total, method="GET", route="other", status="200") == 1  # /healthz
    assert value(found, "pyreg_uploads_started_total") == 4  # chunked, monolithic x3 (one image: 2)
    assert value(found, "pyreg_uploads_completed_total") == 4
    assert value(found, "pyreg_uploads_failed_total") == 1
    assert value(found, "pyreg_http_requests_in_flight") == 0
    assert value(found, "pyreg_http_received_bytes_total", route="upload") == (
        len(data) + len(b"monolithic") + len(b"bad") + len(b"{}") + len(b"layer"))
    assert value(found, "pyreg_http_received_bytes_total", route="manifest") == len(manifest)
    assert value(found, "pyreg_http_sent_bytes_total", route="blob") == len(data)
    assert value(found, "pyreg_http_request_duration_seconds_count", method="PUT", route="manifest") == 1
    # labels are bounded: no repository name or digest anywhere
    r = await c.get("/metrics")
    assert "team/app" not in r.text and sha256(data) not in r.text
    routes = {dict(labels).get("route") for (_, labels) in found if dict(labels).get("route")}
    assert routes <= {"blob", "manifest", "upload", "tags", "catalog", "referrers", "base", "other"}
    # scrapes are not counted
    again = await scrape(c)
    assert value(again, total, method="GET", route="other", status="200") == 1


@pytest.mark.filesystem_only
async def test_auth_does_not_block_metrics(make_registry_client: Callable[..., Any],
                                           htpasswd_users: Path) -> None:
    c = await make_registry_client({"auth": {"htpasswd": {"path": str(htpasswd_users)}}})
    assert (await c.get("/v2/")).status_code == 401
    found = await scrape(c)
    assert value(found, "pyreg_http_requests_total", method="GET", route="base", status="401") == 1
    assert (await c.get("/healthz")).status_code == 200


@pytest.mark.filesystem_only
async def test_token_and_path(make_registry_client: Callable[..., Any]) -> None:
    c = await make_registry_client({"metrics": {"path": "/_/metrics", "token": "s3cret"}})
    assert (await c.get("/metrics")).status_code == 404
    r = await c.get("/_/metrics")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert (await c.get("/_/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    await scrape(c, "/_/metrics", headers={"Authorization": "Bearer s3cret"})


@pytest.mark.filesystem_only
async def test_disabled(make_registry_client: Callable[..., Any]) -> None:
    c = await make_registry_client({"metrics": {"enabled": False}})
    assert (await c.get("/metrics")).status_code == 404
    assert (await c.get("/v2/")).status_code == 200


def test_path_validated() -> None:
    for bad in ("metrics", "/v2/metrics", "/v2", "/healthz"):
        with pytest.raises(ConfigError, match=r"metrics\.path"):
            load_config(data={"metrics": {"path": bad}}, environ={})
    assert load_config(environ={"PYREG_METRICS_TOKEN": "t"}).metrics.token == "t"


@pytest.mark.filesystem_only
def test_workers_add_up(make_registry_server: Callable[..., Any]) -> None:
    """With two worker processes every scrape shows the requests of both, whichever answers it."""
    server = make_registry_server(workers=2)

    def base_requests() -> float:
        found = samples(httpx.get(f"{server.url}/metrics", timeout=30).text)
        return value(found, "pyreg_http_requests_total", method="GET", route="base", status="200")

    before = base_requests()  # the fixture's readiness probe
    n = 24
    for _ in range(n):  # a new connection each time, so both workers take some
        assert httpx.get(f"{server.url}/v2/", timeout=30).status_code == 200
    for _ in range(6):
        assert base_requests() == before + n
