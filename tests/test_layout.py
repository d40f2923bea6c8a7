"""registry.layout and registry.uploads on disk: Distribution 2.8's exact paths and link format,
serving a directory laid out as Distribution writes it, cache invalidation, upload state, purging."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from pyreg.registry import layout as L
from pyreg.registry.app import create_app
from pyreg.registry.config import load_config
from pyreg.registry.layout import Layout
from pyreg.registry.uploads import Uploads, format_startedat, parse_startedat
from pyreg.storage.digest import Digest
from pyreg.storage.filesystem import FilesystemDriver
from pyreg.storage.registrystore import INGEST
from tests.fixtures.registry import asgi_client, image_manifest, push_blob, sha256

V2 = "docker/registry/v2"


def test_paths_match_distribution() -> None:
    d = Digest.parse("sha256:" + "ab" * 32)
    hexd = "ab" * 32
    assert L.blob_data_path(d) == f"/{V2}/blobs/sha256/ab/{hexd}/data"
    assert L.layer_link_path("a/b", d) == f"/{V2}/repositories/a/b/_layers/sha256/{hexd}/link"
    assert L.revision_link_path("a/b", d) == f"/{V2}/repositories/a/b/_manifests/revisions/sha256/{hexd}/link"
    assert L.tag_current_path("a/b", "v1") == f"/{V2}/repositories/a/b/_manifests/tags/v1/current/link"
    assert L.tag_index_link_path("a/b", "v1", d) == \
        f"/{V2}/repositories/a/b/_manifests/tags/v1/index/sha256/{hexd}/link"
    assert L.upload_data_path("a/b", "u-1") == f"/{V2}/repositories/a/b/_uploads/u-1/data"
    assert L.upload_startedat_path("a/b", "u-1") == f"/{V2}/repositories/a/b/_uploads/u-1/startedat"


def app_for(root: Path, **extra: object) -> httpx.AsyncClient:
    data = {"storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}}, **extra}
    return asgi_client(create_app(load_config(data=data, environ={})))


async def test_what_pyreg_writes(tmp_path: Path) -> None:
    config, layer = b'{"os":"linux"}', b"layer bytes"
    manifest = image_manifest(config, [layer])
    async with app_for(tmp_path) as client:
        for blob in (config, layer):
            await push_blob(client, "lib/img", blob)
        r = await client.put("/v2/lib/img/manifests/v1", content=manifest,
                             headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201
    repo = tmp_path / V2 / "repositories/lib/img"
    for blob in (config, layer, manifest):
        hexd = sha256(blob)[7:]
        assert (tmp_path / V2 / "blobs/sha256" / hexd[:2] / hexd / "data").read_bytes() == blob
    for blob in (config, layer):
        assert (repo / "_layers/sha256" / sha256(blob)[7:] / "link").read_bytes() == sha256(blob).encode()
    mdigest = sha256(manifest)
    assert (repo / "_manifests/revisions/sha256" / mdigest[7:] / "link").read_bytes() == mdigest.encode()
    assert (repo / "_manifests/tags/v1/current/link").read_bytes() == mdigest.encode()
    assert (repo / "_manifests/tags/v1/index/sha256" / mdigest[7:] / "link").read_bytes() == mdigest.encode()
    # the manifest is not linked as a layer, and nothing is left in _uploads
    assert not (repo / "_layers/sha256" / mdigest[7:]).exists()
    assert list((repo / "_uploads").iterdir()) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def test_serves_a_directory_written_by_distribution(tmp_path: Path) -> None:
    """Files exactly as Distribution 2.8 lays them out (no pyreg involved in writing them)."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = b"\x1f\x8b" + b"gzip-ish layer" * 100
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": sha256(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(layer),
                    "digest": sha256(layer)}]}, indent=3).encode()
    root = tmp_path / V2
    for blob in (config, layer, manifest):
        hexd = sha256(blob)[7:]
        write(root / "blobs/sha256" / hexd[:2] / hexd / "data", blob)
    repo = root / "repositories/library/busybox"
    for blob in (config, layer):
        write(repo / "_layers/sha256" / sha256(blob)[7:] / "link", sha256(blob).encode())
    md = sha256(manifest)
    write(repo / "_manifests/revisions/sha256" / md[7:] / "link", md.encode())
    write(repo / "_manifests/tags/latest/current/link", md.encode())
    write(repo / "_manifests/tags/latest/index/sha256" / md[7:] / "link", md.encode())
    (repo / "_uploads").mkdir()
    async with app_for(tmp_path) as client:
        r = await client.get("/v2/library/busybox/manifests/latest")
        assert r.status_code == 200 and r.content == manifest
        assert r.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert r.headers["Docker-Content-Digest"] == md
        assert (await client.get(f"/v2/library/busybox/blobs/{sha256(layer)}")).content == layer
        assert (await client.get("/v2/library/busybox/tags/list")).json()["tags"] == ["latest"]
        assert (await client.get("/v2/_catalog")).json()["repositories"] == ["library/busybox"]
        # not linked in another repository
        assert (await client.get(f"/v2/library/other/blobs/{sha256(layer)}")).status_code == 404


async def test_cache_sees_own_writes_and_other_processes_after_ttl(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    mine, other = Layout(driver, cache_ttl=3600), Layout(driver, cache_ttl=0)
    a, b = Digest.of(b"a"), Digest.of(b"b")
    await mine.tag("r", "t", a)
    assert await mine.resolve_tag("r", "t") == a
    await mine.tag("r", "t", b)  # own writes are seen at once
    assert await mine.resolve_tag("r", "t") == b
    await other.tag("r", "t", a)  # another process: a long-ttl cache may still answer b
    assert await other.resolve_tag("r", "t") == a
    assert await mine.untag("r", "t")
    assert await mine.resolve_tag("r", "t") is None
    fresh = Layout(driver, cache_ttl=0)
    await fresh.link_blob("r", a)
    assert await fresh.repo_blob_size("r", a) is None  # linked but no data: not served
    await driver.put_content(L.blob_data_path(a), b"a")
    assert await fresh.repo_blob_size("r", a) == 1
    assert await fresh.unlink_blob("r", a)
    assert await fresh.repo_blob_size("r", a) is None


async def test_garbage_links_are_ignored(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    layout = Layout(driver, cache_ttl=0)
    d = Digest.of(b"x")
    await driver.put_content(L.blob_data_path(d), b"x")
    await driver.put_content(L.layer_link_path("r", d), b"not a digest")
    assert await layout.repo_blob_size("r", d) is None
    await driver.put_content(L.layer_link_path("r", d), str(Digest.of(b"y")).encode())  # wrong target
    assert await layout.repo_blob_size("r", d) is None
    await driver.put_content(L.layer_link_path("r", d), str(d).encode() + b"\n")  # trailing newline is fine
    assert await layout.repo_blob_size("r", d) == 1


async def test_upload_state_lives_on_disk(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    first = Uploads(Layout(driver, cache_ttl=0))
    upload_id = await first.start("up")
    started = (tmp_path / V2 / "repositories/up/_uploads" / upload_id / "startedat").read_bytes()
    when = parse_startedat(started)
    assert when is not None and abs((datetime.now(UTC) - when).total_seconds()) < 60

    async def body(data: bytes) -> AsyncIterator[bytes]:
        yield data

    await first.append("up", upload_id, body(b"hello "), start=0)
    # a second instance (another process, another replica) with no hasher in memory continues
    second = Uploads(Layout(driver, cache_ttl=0))
    assert await second.size("up", upload_id) == 6
    await second.append("up", upload_id, body(b"world"), start=6)
    await second.finish("up", upload_id, Digest.of(b"hello world"))
    assert await second.layout.repo_blob_size("up", Digest.of(b"hello world")) == 11


def test_startedat_format() -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert format_startedat(when) == b"2024-05-06T07:08:09Z"
    assert parse_startedat(b"2024-05-06T07:08:09Z") == when
    assert parse_startedat(b"2024-05-06T07:08:09.123456789Z") is not None  # Go's nanoseconds
    assert parse_startedat(b"garbage") is None


async def test_purge_stale_uploads(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    uploads = Uploads(Layout(driver, cache_ttl=0))
    old = await uploads.start("deep/repo")
    new = await uploads.start("deep/repo")
    await driver.put_content(L.upload_startedat_path("deep/repo", old),
                             format_startedat(datetime.now(UTC) - timedelta(days=8)))
    assert len(await uploads.purge(7 * 86400, dryrun=True)) == 1
    assert await uploads.size("deep/repo", old) == 0  # a dry run deletes nothing
    purged = await uploads.purge(7 * 86400)
    assert [p.rsplit("/", 1)[-1] for p in purged] == [old]
    assert await uploads.size("deep/repo", new) == 0
    assert not (tmp_path / V2 / "repositories/deep/repo/_uploads" / old).exists()


async def test_purge_removes_blobs_a_dead_writer_left_aside(tmp_path: Path) -> None:
    """A registry-store writer (graph copy, mirror fill) killed before commit or abort leaves its
    staged file under pyreg-ingest/: purging removes it once stale, and never a fresh one."""
    driver = FilesystemDriver(tmp_path)
    uploads = Uploads(Layout(driver, cache_ttl=0))
    await driver.put_content(f"{INGEST}/sha256-dead", b"half a blob")
    await driver.put_content(f"{INGEST}/sha256-live", b"being written")
    old = (datetime.now(UTC) - timedelta(days=8)).timestamp()
    os.utime(tmp_path / INGEST.lstrip("/") / "sha256-dead", (old, old))
    assert [p.rsplit("/", 1)[-1] for p in await uploads.purge(7 * 86400, dryrun=True)] == ["sha256-dead"]
    assert (tmp_path / INGEST.lstrip("/") / "sha256-dead").exists()
    await uploads.purge(7 * 86400)
    assert sorted(p.name for p in (tmp_path / INGEST.lstrip("/")).iterdir()) == ["sha256-live"]


async def test_purging_runs_in_the_background(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    uploads = Uploads(Layout(driver, cache_ttl=0))
    stale = await uploads.start("bg")
    await driver.put_content(L.upload_startedat_path("bg", stale),
                             format_startedat(datetime.now(UTC) - timedelta(hours=2)))
    data = {"storage": {"filesystem": {"rootdirectory": str(tmp_path)},
                        "maintenance": {"uploadpurging": {"enabled": True, "age": "1h", "interval": "1s"}}}}
    app = create_app(load_config(data=data, environ={}))
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if not (tmp_path / V2 / "repositories/bg/_uploads" / stale).exists():
                break
            await asyncio.sleep(0.05)
    assert not (tmp_path / V2 / "repositories/bg/_uploads" / stale).exists()


async def test_session_started_by_distribution_continues(tmp_path: Path) -> None:
    """Distribution writes only startedat when a session starts; pyreg takes it from there."""
    session = tmp_path / V2 / "repositories/dist/_uploads/0d7ba2f5-60c4-4a3c-9d4b-3b8e6a1b8f20"
    write(session / "startedat", b"2024-05-06T07:08:09Z")
    location = "/v2/dist/blobs/uploads/0d7ba2f5-60c4-4a3c-9d4b-3b8e6a1b8f20"
    async with app_for(tmp_path) as client:
        r = await client.get(location)
        assert r.status_code == 204 and r.headers["Range"] == "0-0"
        assert (await client.patch(location, content=b"from pyreg")).status_code == 202
        r = await client.put(location, params={"digest": sha256(b"from pyreg")})
        assert r.status_code == 201
        assert (await client.get(f"/v2/dist/blobs/{sha256(b'from pyreg')}")).content == b"from pyreg"
