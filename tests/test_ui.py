"""The web UI (registry/ui/): its JSON API through the ASGI app, and the pages in Debian's
chromium driven by Playwright against a real ``pyreg serve`` with images pushed by skopeo.

Browser tests skip with the reason when chromium or playwright is missing; screenshots are
saved under the test's tmp_path (pytest keeps the last runs' directories).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.auth import ACCESS, USERS

pytestmark = pytest.mark.filesystem_only

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
V2 = "docker/registry/v2"


# -- content written straight into the registry:2 layout (fast, for big registries) -------------


def _put_blob(root: Path, data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    d = root / V2 / "blobs" / "sha256" / hexd[:2] / hexd
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").write_bytes(data)
    return "sha256:" + hexd


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def seed_image(root: Path, created: str = "2024-01-02T03:04:05Z") -> tuple[str, bytes]:
    """A small image (config + one fake layer) in the blob store; (manifest digest, bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": created,
                         "config": {"Env": ["PATH=/bin", "MODE=test"], "Cmd": ["sh"],
                                    "Labels": {"org.example.team": "ui"}},
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "history": [{"created_by": "COPY hello /", "created": created}]}).encode()
    layer = b"not really a tarball, but a blob of known size" * 10
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": _put_blob(root, config),
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": _put_blob(root, layer), "size": len(layer)}]}).encode()
    return _put_blob(root, manifest), manifest


def seed_tags(root: Path, repo: str, digest: str, tags: list[str]) -> None:
    algo, hexd = digest.split(":")
    base = root / V2 / "repositories" / repo / "_manifests"
    _link(base / "revisions" / algo / hexd, digest)
    for tag in tags:
        _link(base / "tags" / tag / "current", digest)
        _link(base / "tags" / tag / "index" / algo / hexd, digest)


# -- the JSON API ---------------------------------------------------------------------------------


def _ui_config(tmp_path: Path, htpasswd: Path | None, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"ui": {"enabled": True, "path": "/ui"}, **extra}
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "pyreg", "path": str(htpasswd)}}
        config["access"] = ACCESS
    return config


def _root(config: dict[str, Any]) -> Path:
    return Path(config["storage"]["filesystem"]["rootdirectory"])


async def _login(client: httpx.AsyncClient, user: str) -> str:
    r = await client.post("/ui/api/login", json={"username": user, "password": USERS[user]},
                          headers={"Origin": "http://registry.test"})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    return str(r.json()["csrf"])


@pytest.fixture
def seeded(make_registry_config: Callable[..., dict[str, Any]], htpasswd_users: Path,
           tmp_path: Path) -> dict[str, Any]:
    config = make_registry_config(_ui_config(tmp_path, htpasswd_users))
    root = _root(config)
    digest, _ = seed_image(root)
    for repo in ("team/app", "public/web", "private/secret"):
        seed_tags(root, repo, digest, ["latest", "v1"])
    return config


async def test_ui_off_by_default(make_registry_client: Callable[..., Any]) -> None:
    client = await make_registry_client()
    assert (await client.get("/ui/")).status_code == 404
    assert (await client.get("/ui/api/repositories")).status_code == 404


async def test_api_lists_only_what_the_caller_may_pull(make_registry_app: Callable[..., Any],
                                                        seeded: dict[str, Any]) -> None:
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    app = create_app(load_config(data=seeded, environ={}))
    async with asgi_client(app) as anon:
        page = await anon.get("/ui/")
        assert page.status_code == 200 and "pyreg" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        r = await anon.get("/ui/api/repositories")
        assert [i["name"] for i in r.json()["items"]] == ["public/web"]
        assert (await anon.get("/ui/api/tags", params={"name": "team/app"})).status_code == 404
    async with asgi_client(app) as alice:
        await _login(alice, "alice")
        r = await alice.get("/ui/api/repositories")
        assert [(i["name"], i["tags"]) for i in r.json()["items"]] == [("public/web", 2), ("team/app", 2)]
        r = await alice.get("/ui/api/repositories", params={"q": "APP"})
        assert [i["name"] for i in r.json()["items"]] == ["team/app"]
        hidden = await alice.get("/ui/api/manifest", params={"name": "private/secret", "ref": "v1"})
        assert hidden.status_code == 404
        tags = (await alice.get("/ui/api/tags", params={"name": "team/app"})).json()
        row = tags["items"][0]
        assert row["tag"] == "latest" and row["platforms"] == ["linux/amd64"] and row["size"] > 460
        assert row["created"] == "2024-01-02T03:04:05Z" and row["pushed"] and tags["can_delete"] is False
        m = (await alice.get("/ui/api/manifest", params={"name": "team/app", "ref": "v1"})).json()
        assert m["config"]["env"] == ["PATH=/bin", "MODE=test"] and m["config"]["cmd"] == ["sh"]
        assert m["config"]["labels"] == {"org.example.team": "ui"} and len(m["layers"]) == 1
        assert m["tags"] == ["latest", "v1"] and m["config"]["history"][0]["created_by"] == "COPY hello /"


async def test_login_refuses_wrong_password_and_other_origins(seeded: dict[str, Any]) -> None:
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    async with asgi_client(create_app(load_config(data=seeded, environ={}))) as c:
        bad = await c.post("/ui/api/login", json={"username": "alice", "password": "nope"},
                           headers={"Origin": "http://registry.test"})
        assert bad.status_code == 401 and "set-cookie" not in bad.headers
        cross = await c.post("/ui/api/login", json={"username": "alice", "password": USERS["alice"]},
                             headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403


async def test_delete_needs_the_right_csrf_origin_and_rule(seeded: dict[str, Any]) -> None:
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    app = create_app(load_config(data=seeded, environ={}))
    q = {"name": "team/app", "tag": "v1"}
    async with asgi_client(app) as alice:
        csrf = await _login(alice, "alice")
        r = await alice.post("/ui/api/delete", params=q, headers={"X-CSRF-Token": csrf, "Origin": "http://registry.test"})
        assert r.status_code == 403  # alice may push team/*, not delete
    async with asgi_client(app) as admin:
        csrf = await _login(admin, "admin")
        no_token = await admin.post("/ui/api/delete", params=q, headers={"Origin": "http://registry.test"})
        wrong = await admin.post("/ui/api/delete", params=q, headers={"X-CSRF-Token": "x" + csrf,
                                                                        "Origin": "http://registry.test"})
        cross = await admin.post("/ui/api/delete", params=q, headers={"X-CSRF-Token": csrf,
                                                                        "Origin": "http://evil.example"})
        assert (no_token.status_code, wrong.status_code, cross.status_code) == (403, 403, 403)
        assert (await admin.get("/ui/api/tags", params={"name": "team/app"})).json()["total"] == 2
        ok = await admin.post("/ui/api/delete", params=q, headers={"X-CSRF-Token": csrf, "Origin": "http://registry.test"})
        assert ok.status_code == 200, ok.text
        left = (await admin.get("/ui/api/tags", params={"name": "team/app"})).json()["items"]
        assert [t["tag"] for t in left] == ["latest"]
        # the registry API agrees: the tag is gone
        r = await admin.get("/v2/team/app/manifests/v1", auth=("admin", USERS["admin"]))
        assert r.status_code == 404


async def test_delete_sends_the_webhook_event(seeded: dict[str, Any],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete through the UI is announced to the notification endpoints as an API DELETE is."""
    from pyreg.registry import notifications
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    published: list[dict[str, Any]] = []
    monkeypatch.setattr(notifications.Notifier, "publish", lambda self, events: published.extend(events))
    config = {**seeded, "notifications": {"endpoints": [{"name": "ci", "url": "http://127.0.0.1:9/x"}]}}
    async with asgi_client(create_app(load_config(data=config, environ={}))) as admin:
        csrf = await _login(admin, "admin")
        ok = await admin.post("/ui/api/delete", params={"name": "team/app", "tag": "v1"},
                              headers={"X-CSRF-Token": csrf, "Origin": "http://registry.test"})
        assert ok.status_code == 200, ok.text
    deletes = [e for e in published if e["action"] == "delete"]
    assert [e["target"] for e in deletes] == [{"repository": "team/app", "tag": "v1"}]


async def test_delete_refused_when_deletes_are_disabled(make_registry_config: Callable[..., dict[str, Any]],
                                                        tmp_path: Path) -> None:
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    config = make_registry_config(_ui_config(tmp_path, None, storage={"delete": {"enabled": False}}))
    digest, _ = seed_image(_root(config))
    seed_tags(_root(config), "open/repo", digest, ["latest"])
    async with asgi_client(create_app(load_config(data=config, environ={}))) as c:
        session = (await c.get("/ui/api/session")).json()
        assert session["deletes"] is False and session["user"] is None
        r = await c.post("/ui/api/delete", params={"name": "open/repo", "tag": "latest"},
                         headers={"X-CSRF-Token": session["csrf"], "Origin": "http://registry.test"})
        assert r.status_code == 405
        assert (await c.get("/ui/api/tags", params={"name": "open/repo"})).json()["total"] == 1


# -- in a real browser ------------------------------------------------------------------------------


def _playwright() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright for Python is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture
def browser() -> Iterator[Any]:
    """Per test: sync Playwright keeps an event loop running while it is open, which the
    async API tests of this module must not find."""
    sync_playwright = _playwright()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and API requests, and takes screenshots."""

    def __init__(self, browser: Any, base: str, shots: Path, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.base = base
        self.shots = shots
        self.errors: list[str] = []
        self.api: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.api.append(r.url) if "/ui/api/" in r.url else None)

    def go(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.base}/ui/{fragment}")
        self.page.wait_for_load_state("networkidle")
        return self.page

    def shot(self, name: str) -> None:
        self.shots.mkdir(exist_ok=True)
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def login(self, user: str) -> None:
        page = self.go("#/login")
        page.fill("#username", user)
        page.fill("#password", USERS[user])
        page.press("#password", "Enter")
        page.get_by_text(f"Signed in as {user}").wait_for()
        page.wait_for_load_state("networkidle")


@pytest.fixture
def ui_server(browser: Any, make_registry_server: Callable[..., Any], htpasswd_users: Path, tmp_path: Path,
              index_image: Any, busybox_image: Any, skopeo: Any) -> Any:
    server = make_registry_server(_ui_config(tmp_path, htpasswd_users))
    creds = ("--dest-creds", f"admin:{USERS['admin']}")
    skopeo.copy(f"oci:{busybox_image.layout}:latest", f"docker://{server.host}/team/app:latest", *creds)
    skopeo.copy(f"oci:{index_image.layout}:multi", f"docker://{server.host}/team/app:multi", "--all", *creds)
    skopeo.copy(f"oci:{busybox_image.layout}:latest", f"docker://{server.host}/public/web:1.0", *creds)
    skopeo.copy(f"oci:{busybox_image.layout}:latest", f"docker://{server.host}/private/secret:1", *creds)
    return server


def test_browser_anonymous_sees_only_public(browser: Any, ui_server: Any, tmp_path: Path) -> None:
    p = Page(browser, ui_server.url, tmp_path / "shots")
    page = p.go()
    page.get_by_role("link", name="public/web").wait_for()
    assert page.get_by_role("link", name="team/app").count() == 0
    assert page.get_by_role("link", name="private/secret").count() == 0
    page.get_by_role("link", name="public/web").click()
    page.get_by_role("link", name="1.0").wait_for()
    p.shot("anonymous-repo")
    assert p.errors == []


def test_browser_login_browse_search_index_copy(browser: Any, ui_server: Any, tmp_path: Path) -> None:
    p = Page(browser, ui_server.url, tmp_path / "shots", permissions=["clipboard-read", "clipboard-write"])
    p.login("alice")
    page = p.page
    page.get_by_role("link", name="team/app").wait_for()
    assert page.get_by_role("link", name="private/secret").count() == 0  # alice may not pull it
    page.get_by_role("searchbox", name="Search repositories").fill("web")
    page.wait_for_function("() => !document.body.innerText.includes('team/app')")
    assert page.get_by_role("link", name="public/web").is_visible()
    p.shot("search")
    p.go("#/").get_by_role("link", name="team/app").click()
    page.get_by_role("link", name="multi").wait_for()
    p.shot("repository")
    page.get_by_role("link", name="multi").click()
    page.get_by_role("heading", name="Platforms").wait_for()
    assert page.get_by_role("link", name="linux/arm64").is_visible()
    assert page.get_by_role("link", name="linux/amd64").is_visible()
    p.shot("index")
    page.get_by_role("button", name="Copy docker pull command").click()
    clip = page.evaluate("navigator.clipboard.readText()")
    assert clip == f"docker pull {ui_server.host}/team/app:multi"
    page.get_by_role("button", name="Copy pyreg pull command").click()
    assert page.evaluate("navigator.clipboard.readText()") == f"pyreg pull {ui_server.host}/team/app:multi"
    # alice may not delete: no delete buttons, and the API refuses a forged call from the page itself
    assert page.get_by_role("button", name="Delete manifest").count() == 0
    assert p.errors == []  # (the forged call below logs its 403 in the console)
    status = page.evaluate("""async () => {
        const s = await (await fetch('api/session')).json();
        const r = await fetch('api/delete?name=team/app&tag=multi',
                              {method: 'POST', headers: {'X-CSRF-Token': s.csrf}});
        return r.status; }""")
    assert status == 403


def test_browser_delete_as_admin_and_csrf_from_another_origin(browser: Any, ui_server: Any,
                                                              tmp_path: Path) -> None:
    p = Page(browser, ui_server.url, tmp_path / "shots")
    p.login("admin")
    page = p.page
    # another origin (localhost is not 127.0.0.1) posts to the delete endpoint: refused, tag kept
    other = p.context.new_page()
    other.goto(f"http://localhost:{ui_server.port}/healthz")
    status = other.evaluate(f"""async () => {{
        const r = await fetch('{ui_server.url}/ui/api/delete?name=team/app&tag=latest',
            {{method: 'POST', credentials: 'include', mode: 'no-cors'}});
        return r.type; }}""")
    assert status == "opaque"
    assert httpx.get(f"{ui_server.url}/v2/team/app/manifests/latest", auth=("admin", USERS["admin"]),
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status_code == 200
    p.go("#/manifest?name=team/app&ref=latest")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete tag latest").click()
    page.get_by_role("link", name="multi").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("link", name="latest", exact=True).count() == 0
    p.shot("after-delete")
    r = httpx.get(f"{ui_server.url}/v2/team/app/manifests/latest", auth=("admin", USERS["admin"]))
    assert r.status_code == 404
    assert p.errors == []


def test_browser_phone_and_keyboard(browser: Any, ui_server: Any, tmp_path: Path) -> None:
    p = Page(browser, ui_server.url, tmp_path / "shots", viewport={"width": 390, "height": 844},
             is_mobile=True, has_touch=True)
    p.login("bob")
    page = p.page
    page.get_by_role("link", name="team/app").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    # keyboard only: tab to the repository link and open it, then to a tag
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "team/app":
            break
    else:
        pytest.fail("team/app is not reachable with Tab")
    page.keyboard.press("Enter")
    page.get_by_role("link", name="multi").wait_for()
    page.get_by_role("link", name="multi").focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Platforms").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    p.shot("phone-index")
    assert p.errors == []


def test_browser_big_registry_one_request_per_page(browser: Any, make_registry_server: Callable[..., Any],
                                                   tmp_path: Path) -> None:
    """10,000 repositories and 1,000 tags in one, written straight into the layout: each page's data
    comes from one paginated request."""
    server_config = _ui_config(tmp_path, None)
    server = make_registry_server(server_config)
    root = server.data_dir
    digest, _ = seed_image(root)
    start = time.monotonic()
    repos = root / V2 / "repositories"
    for i in range(10_000):  # just a current tag link each: all the list page reads
        tag = repos / f"org{i // 100:03d}/repo{i % 100:03d}/_manifests/tags/latest/current"
        tag.mkdir(parents=True)
        (tag / "link").write_text(digest)
    seed_tags(root, "big/tags", digest, [f"v{i:04d}" for i in range(1000)])
    print(f"seeded 10,001 repositories in {time.monotonic() - start:.1f}s")
    p = Page(browser, server.url, tmp_path / "shots")
    start = time.monotonic()
    page = p.go()
    page.get_by_text("10,001 you can pull").wait_for()
    print(f"repository list shown in {time.monotonic() - start:.2f}s")
    assert page.locator("tbody tr").count() == 50
    assert len([u for u in p.api if "/api/repositories" in u]) == 1, p.api
    p.shot("big-repositories")
    p.api.clear()
    p.go("#/repo?name=big/tags")
    page.get_by_text("1,000 total · page 1 of 20").wait_for()
    assert page.locator("tbody tr").count() == 50
    data_requests = [u for u in p.api if "/api/session" not in u]
    assert len(data_requests) == 1 and "/api/tags" in data_requests[0], data_requests
    page.get_by_role("button", name="Next →").click()
    page.get_by_role("link", name="v0050").wait_for()
    assert p.errors == []


async def test_referrers_listed_by_artifact_type(seeded: dict[str, Any]) -> None:
    """A signature and an SBOM pushed through /v2 with ``subject`` show on their image's page."""
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    root = _root(seeded)
    digest, manifest = seed_image(root)
    empty = b"{}"
    admin = ("admin", USERS["admin"])
    async with asgi_client(create_app(load_config(data=seeded, environ={}))) as c:
        r = await c.post(f"/v2/team/app/blobs/uploads/?digest=sha256:{hashlib.sha256(empty).hexdigest()}",
                         content=empty, auth=admin)
        assert r.status_code == 201, r.text
        for kind in ("application/vnd.dev.cosign.simplesigning.v1+json", "application/spdx+json"):
            doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
                              "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                         "digest": "sha256:" + hashlib.sha256(empty).hexdigest(), "size": 2},
                              "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": digest,
                                                        "size": len(manifest)}}).encode()
            r = await c.put(f"/v2/team/app/manifests/sha256:{hashlib.sha256(doc).hexdigest()}", content=doc,
                            headers={"Content-Type": OCI_MANIFEST}, auth=admin)
            assert r.status_code == 201, r.text
        await _login(c, "bob")
        m = (await c.get("/ui/api/manifest", params={"name": "team/app", "ref": "latest"})).json()
        assert [r["artifact_type"] for r in m["referrers"]] == ["application/spdx+json",
                                                                "application/vnd.dev.cosign.simplesigning.v1+json"]


async def test_session_works_across_processes_sharing_storage(seeded: dict[str, Any]) -> None:
    """Without http.secret the key lives in the storage: another worker or replica (another app
    on the same storage) accepts the cookie; a forged cookie is anonymous."""
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config
    from tests.fixtures.registry import asgi_client

    async with asgi_client(create_app(load_config(data=seeded, environ={}))) as first:
        await _login(first, "alice")
        cookies = dict(first.cookies)
    async with asgi_client(create_app(load_config(data=seeded, environ={}))) as second:
        second.cookies.update(cookies)
        assert (await second.get("/ui/api/session")).json()["user"] == "alice"
        second.cookies.clear()
        forged = cookies["pyreg_ui_session"].split(".")[0] + ".AAAA"
        second.cookies.set("pyreg_ui_session", forged)
        assert (await second.get("/ui/api/session")).json()["user"] is None
