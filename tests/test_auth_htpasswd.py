"""htpasswd (Basic) auth on a real ``pyreg serve``, with skopeo and podman as the clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.auth import htpasswd
from tests.fixtures.auth import ACCESS, USERS, podman_login_push_pull
from tests.fixtures.peers import Podman, Skopeo, tagged
from tests.images import TestImage, read_layout

pytestmark = pytest.mark.peers


@pytest.fixture
def storage_config(tmp_path: Path) -> dict[str, Any]:
    """Auth does not touch storage: filesystem only (the API suites cover the drivers)."""
    return {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}}


@pytest.fixture
def server(make_registry_server: Any, htpasswd_users: Path) -> Any:
    return make_registry_server(
        {"auth": {"htpasswd": {"realm": "pyreg-test", "path": str(htpasswd_users)}}, "access": ACCESS}
    )


def creds(user: str) -> tuple[str, str]:
    return (user, USERS[user])


def test_skopeo_login_push_pull(
    server: Any, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    skopeo.login(server.host, "alice", USERS["alice"])
    auths = json.loads(skopeo.authfile.read_text())["auths"]
    assert server.host in auths
    ref = tagged(server.host, "team/app", "1")
    skopeo.copy(busybox_image.oci_ref, ref)
    assert skopeo.inspect_raw(ref) == busybox_image.manifest
    skopeo.copy(ref, f"oci:{tmp_path / 'out'}:1")
    assert read_layout(tmp_path / "out", "1").manifest_digest == busybox_image.manifest_digest


def test_skopeo_login_refuses_a_wrong_password(server: Any, skopeo: Skopeo) -> None:
    r = skopeo.login(server.host, "alice", "wrong", check=False)
    assert r.returncode != 0
    assert "invalid username/password" in r.stderr


def test_copy_with_dest_creds_and_pull_only_user(
    server: Any, skopeo: Skopeo, busybox_image: TestImage
) -> None:
    ref = tagged(server.host, "team/app", "2")
    skopeo.copy(busybox_image.oci_ref, ref, "--dest-creds", "alice:" + USERS["alice"])
    # bob may pull team/* but not push there: the registry says 403 DENIED
    assert skopeo.inspect_raw(ref, "--creds", "bob:" + USERS["bob"]) == busybox_image.manifest
    r = skopeo.copy(
        busybox_image.oci_ref,
        tagged(server.host, "team/app", "3"),
        "--dest-creds",
        "bob:" + USERS["bob"],
        check=False,
    )
    assert r.returncode != 0
    assert "denied" in r.stderr.lower()
    with httpx.Client(base_url=server.url, auth=creds("bob")) as c:
        r2 = c.put(
            "/v2/team/app/manifests/3",
            content=busybox_image.manifest,
            headers={"Content-Type": busybox_image.manifest_json["mediaType"]},
        )  # type: ignore[dict-item]
        assert r2.status_code == 403
        assert r2.json()["errors"][0]["code"] == "DENIED"
        r3 = c.post("/v2/team/app/blobs/uploads/")
        assert r3.status_code == 403


def test_inspect_refused_without_credentials(server: Any, skopeo: Skopeo, busybox_image: TestImage) -> None:
    skopeo.copy(busybox_image.oci_ref, tagged(server.host, "team/app", "1"), "--dest-creds", "alice:alice-pw")
    r = skopeo.run(
        "inspect",
        "--tls-verify=false",
        "--raw",
        "--authfile",
        str(skopeo.authfile),
        tagged(server.host, "team/app", "1"),
        check=False,
    )
    assert r.returncode != 0
    assert "401" in r.stderr or "unauthorized" in r.stderr.lower() or "authentication required" in r.stderr


def test_anonymous_pull_only_where_the_rules_allow(
    server: Any, skopeo: Skopeo, busybox_image: TestImage, tmp_path: Path
) -> None:
    skopeo.copy(
        busybox_image.oci_ref,
        tagged(server.host, "public/busybox", "1"),
        "--dest-creds",
        "admin:" + USERS["admin"],
    )
    skopeo.copy(tagged(server.host, "public/busybox", "1"), f"oci:{tmp_path / 'anon'}:1")
    assert read_layout(tmp_path / "anon", "1").manifest_digest == busybox_image.manifest_digest
    r = skopeo.copy(busybox_image.oci_ref, tagged(server.host, "public/busybox", "2"), check=False)
    assert r.returncode != 0
    with httpx.Client(base_url=server.url) as c:
        assert c.get(f"/v2/public/busybox/manifests/{busybox_image.manifest_digest}").status_code == 200
        assert c.get("/v2/public/busybox/tags/list").json()["tags"] == ["1"]
        r2 = c.get("/v2/private/x/tags/list")
        assert r2.status_code == 401
        assert r2.headers["www-authenticate"].startswith('Basic realm="pyreg-test"')


def test_catalog_shows_only_what_the_caller_may_pull(
    server: Any, skopeo: Skopeo, busybox_image: TestImage
) -> None:
    for repo in ("team/a", "public/b", "zzz/c"):
        skopeo.copy(busybox_image.oci_ref, tagged(server.host, repo, "1"), "--dest-creds", "admin:admin-pw")
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/_catalog", auth=creds("admin")).json()["repositories"] == [
            "public/b",
            "team/a",
            "zzz/c",
        ]
        assert c.get("/v2/_catalog", auth=creds("bob")).json()["repositories"] == ["public/b", "team/a"]
        assert c.get("/v2/_catalog").json()["repositories"] == ["public/b"]
        paged = c.get("/v2/_catalog", params={"n": 1}, auth=creds("bob"))
        assert paged.json()["repositories"] == ["public/b"] and "last=public%2Fb" in paged.headers["link"]


def test_unauthenticated_requests_to_every_endpoint_are_refused(
    make_registry_server: Any, htpasswd_users: Path, busybox_image: TestImage
) -> None:
    # no access rules: anonymous callers may do nothing; no rate limit in the way of the wrong passwords
    server = make_registry_server(
        {"auth": {"htpasswd": {"path": str(htpasswd_users)}, "ratelimit": {"failures": 1000}}}
    )
    d = busybox_image.manifest_digest
    layer = busybox_image.layer_digests[0]
    endpoints = [
        ("GET", "/v2/"),
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/r/tags/list"),
        ("GET", "/v2/r/manifests/latest"),
        ("HEAD", "/v2/r/manifests/latest"),
        ("PUT", "/v2/r/manifests/latest"),
        ("DELETE", f"/v2/r/manifests/{d}"),
        ("GET", f"/v2/r/blobs/{layer}"),
        ("HEAD", f"/v2/r/blobs/{layer}"),
        ("DELETE", f"/v2/r/blobs/{layer}"),
        ("POST", "/v2/r/blobs/uploads/"),
        ("POST", f"/v2/r/blobs/uploads/?mount={layer}&from=s"),
        ("GET", "/v2/r/blobs/uploads/some-id"),
        ("PATCH", "/v2/r/blobs/uploads/some-id"),
        ("PUT", f"/v2/r/blobs/uploads/some-id?digest={layer}"),
        ("DELETE", "/v2/r/blobs/uploads/some-id"),
        ("GET", f"/v2/r/referrers/{d}"),
        ("GET", "/v2/nonsense"),
    ]
    with httpx.Client(base_url=server.url) as c:
        # put something there first, so a leak would show
        c.post(f"/v2/r/blobs/uploads/?digest={layer}", content=busybox_image.blob(layer), auth=creds("admin"))
        for method, path in endpoints:
            r = c.request(method, path, content=b"x" if method in ("PUT", "PATCH") else None)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Basic realm=")
            assert r.headers["docker-distribution-api-version"] == "registry/2.0"
            if method != "HEAD":
                assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
            for user, password in (("admin", "wrong"), ("nobody", "x")):
                assert c.request(method, path, auth=(user, password)).status_code == 401
        assert c.get("/healthz").status_code == 200  # the probes' endpoint stays open


def test_htpasswd_changes_apply_without_restart(server: Any, htpasswd_users: Path) -> None:
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/", auth=("carol", "carol-pw")).status_code == 401
        htpasswd.set_user(htpasswd_users, "carol", "carol-pw", cost=4)
        assert c.get("/v2/", auth=("carol", "carol-pw")).status_code == 200
        htpasswd.delete_user(htpasswd_users, "carol")
        assert c.get("/v2/", auth=("carol", "carol-pw")).status_code == 401


def test_podman_login_push_pull(server: Any, podman: Podman, busybox_image: TestImage) -> None:
    ref = podman_login_push_pull(podman, server.host, busybox_image)
    podman.run("logout", "--authfile", str(podman.authfile), server.host)
    r = podman.run(
        "pull", "--tls-verify=false", "--authfile", str(podman.authfile), f"docker://{ref}", check=False
    )
    assert r.returncode != 0


def test_failed_logins_are_rate_limited(make_registry_server: Any, htpasswd_users: Path) -> None:
    server = make_registry_server(
        {"auth": {"htpasswd": {"path": str(htpasswd_users)}, "ratelimit": {"failures": 3, "window": "10m"}}}
    )
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/v2/", auth=creds("alice")).status_code == 200
        for _ in range(3):
            assert c.get("/v2/", auth=("alice", "guess")).status_code == 401
        r = c.get("/v2/", auth=creds("alice"))
        assert r.status_code == 429
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert int(r.headers["retry-after"]) > 500
