"""Garbage collection (registry/gc.py, ``pyreg gc``) on both drivers, beside live pushes, and on a
directory Distribution wrote."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.config import load_config
from pyreg.registry.drivers import make_driver
from pyreg.registry.gc import GCOptions, GCReport, collect_garbage
from tests.fixtures.registry import REPO_ROOT, image_manifest, push_blob, push_image, sha256

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
NOW_GC = GCOptions(grace=0, settle=0)  # everything already written counts as old

NO_CACHE = {"storage": {"cache": {"ttl": 0}}}


async def run_gc(config: dict[str, Any], options: GCOptions = NOW_GC,
                 now: datetime | None = None) -> GCReport:
    return await collect_garbage(make_driver(load_config(data=config, environ={})), options, now)


async def blob_status(client: httpx.AsyncClient, name: str, digest: str) -> int:
    return (await client.head(f"/v2/{name}/blobs/{digest}")).status_code


async def pull_all(client: httpx.AsyncClient, name: str, reference: str) -> None:
    """GET the manifest and every blob it names (children of an index too); all must be intact."""
    r = await client.get(f"/v2/{name}/manifests/{reference}",
                         headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert r.status_code == 200, (reference, r.text)
    body = r.json()
    for child in body.get("manifests", []):
        await pull_all(client, name, child["digest"])
    for desc in [body["config"], *body["layers"]] if "config" in body else []:
        blob = await client.get(f"/v2/{name}/blobs/{desc['digest']}")
        assert blob.status_code == 200, (desc, blob.text)
        assert sha256(blob.content) == desc["digest"]


@pytest.fixture
def gc_config(make_registry_config: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return make_registry_config(NO_CACHE)


@pytest.fixture
async def client(make_registry_client: Callable[..., Any]) -> httpx.AsyncClient:
    return await make_registry_client(NO_CACHE)  # type: ignore[no-any-return]


# -- the basic sweep, both drivers -----------------------------------------------------------------


async def test_sweeps_unreferenced_and_keeps_referenced(client: httpx.AsyncClient,
                                                        gc_config: dict[str, Any]) -> None:
    shared = b"shared layer " * 100
    kept_digest, _ = await push_image(client, "team/app", "v1", config=b'{"a":1}', layers=(shared, b"only a"))
    gone_digest, gone_manifest = await push_image(client, "team/app", "v2", config=b'{"b":2}',
                                                  layers=(shared, b"only b" * 50))
    stray = await push_blob(client, "other/repo", b"uploaded, never referenced")
    r = await client.delete(f"/v2/team/app/manifests/{gone_digest}")
    assert r.status_code == 202

    report = await run_gc(gc_config)

    freed = {sha256(b'{"b":2}'), sha256(b"only b" * 50), gone_digest, stray}
    assert set(report.blobs_deleted) == freed
    assert report.bytes_freed == len(b'{"b":2}') + len(b"only b" * 50) + len(gone_manifest) + len(
        b"uploaded, never referenced")
    assert report.manifests == 1 and report.repositories == 1
    assert report.blobs_marked == 4  # manifest, config, two layers of v1
    assert report.layer_links_deleted == 3  # team/app: config b, only b; other/repo: stray
    await pull_all(client, "team/app", "v1")
    assert (await client.get(f"/v2/team/app/manifests/{kept_digest}")).status_code == 200
    for digest in (sha256(b"only b" * 50), sha256(b'{"b":2}')):
        assert await blob_status(client, "team/app", digest) == 404
    assert await blob_status(client, "other/repo", stray) == 404

    again = await run_gc(gc_config)  # nothing left to do
    assert again.blobs_deleted == [] and again.layer_links_deleted == 0
    await pull_all(client, "team/app", "v1")


async def test_verification_records_go_with_their_blobs(client: httpx.AsyncClient,
                                                       gc_config: dict[str, Any]) -> None:
    """A swept blob's record (registry/verified.py) goes with it, and so does an old record of a blob
    no longer stored (deleted by another GC); a young one and a kept blob's stay."""
    from pyreg.registry.verified import verified_path
    from pyreg.storage.digest import Digest
    from pyreg.storage.errors import PathNotFoundError

    stray = Digest.parse(await push_blob(client, "other/repo", b"uploaded, never referenced"))
    await push_image(client, "team/app", "v1", config=b'{"k":1}', layers=(b"kept layer",))
    kept, orphan = Digest.of(b"kept layer"), Digest.of(b"not stored anywhere")
    driver = make_driver(load_config(data=gc_config, environ={}))
    for d in (stray, kept, orphan):
        await driver.put_content(verified_path(d), b"some version token")

    async def present(d: Digest) -> bool:
        try:
            await driver.stat(verified_path(d))
        except PathNotFoundError:
            return False
        return True

    await run_gc(gc_config, GCOptions(settle=0))  # the default grace: everything is young
    assert [await present(d) for d in (stray, kept, orphan)] == [True, True, True]
    report = await run_gc(gc_config)
    assert str(stray) in report.blobs_deleted
    assert [await present(d) for d in (stray, kept, orphan)] == [False, True, False]


async def test_grace_period_keeps_recent_blobs(client: httpx.AsyncClient, gc_config: dict[str, Any]) -> None:
    """A blob just uploaded (its manifest not pushed yet) survives the default grace period."""
    pending = await push_blob(client, "team/app", b"pushed a moment ago")
    report = await run_gc(gc_config, GCOptions(settle=0))
    assert report.blobs_deleted == []
    assert report.blobs_kept_recent == 1
    assert await blob_status(client, "team/app", pending) == 200
    # the same store two hours later: now it is old garbage
    later = datetime.now(UTC) + timedelta(hours=2)
    report = await run_gc(gc_config, GCOptions(settle=0), now=later)
    assert report.blobs_deleted == [pending]
    assert await blob_status(client, "team/app", pending) == 404


@pytest.mark.filesystem_only
async def test_recent_link_keeps_an_old_blob(client: httpx.AsyncClient, gc_config: dict[str, Any]) -> None:
    """Old data, freshly linked (a mount, or an upload of bytes the store already had): kept."""
    data = b"old bytes, newly linked"
    digest = await push_blob(client, "a/src", data)
    assert (await client.delete(f"/v2/a/src/blobs/{digest}")).status_code == 202
    root = Path(gc_config["storage"]["filesystem"]["rootdirectory"])
    blob_file = root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    two_hours_ago = time.time() - 7200
    os.utime(blob_file, (two_hours_ago, two_hours_ago))
    assert (await run_gc(gc_config, GCOptions(settle=0))).blobs_deleted == [digest]  # old, unlinked

    digest = await push_blob(client, "a/src", data)
    assert (await client.delete(f"/v2/a/src/blobs/{digest}")).status_code == 202
    os.utime(blob_file, (two_hours_ago, two_hours_ago))
    # the upload of bytes the store has keeps the old file and writes a fresh link
    r = await client.post("/v2/b/dst/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert blob_file.stat().st_mtime == two_hours_ago
    report = await run_gc(gc_config, GCOptions(settle=0))
    assert report.blobs_deleted == [] and report.blobs_kept_recent == 1
    assert await blob_status(client, "b/dst", digest) == 200


async def test_dry_run_changes_nothing(client: httpx.AsyncClient, gc_config: dict[str, Any]) -> None:
    stray = await push_blob(client, "team/app", b"garbage")
    await push_image(client, "team/app", "v1")
    report = await run_gc(gc_config, GCOptions(grace=0, settle=0, dry_run=True))
    assert report.dry_run and report.blobs_deleted == [stray] and report.bytes_freed == len(b"garbage")
    assert report.layer_links_deleted == 1
    assert await blob_status(client, "team/app", stray) == 200
    assert (await run_gc(gc_config)).blobs_deleted == [stray]


async def test_delete_untagged(client: httpx.AsyncClient, gc_config: dict[str, Any]) -> None:
    """Untagged manifests go, with their blobs, referrers and tag history; what a tag reaches stays."""
    name = "team/app"
    old_digest, _ = await push_image(client, name, "v1", config=b'{"old":1}', layers=(b"old layer",))
    new_digest, _ = await push_image(client, name, "v1", config=b'{"new":1}', layers=(b"new layer",))
    # an index whose children are pushed by digest only
    child_digests = []
    for arch in ("amd64", "arm64"):
        child_digests.append((await push_image(client, name, f"tmp-{arch}", config=arch.encode(),
                                               layers=(arch.encode() * 10,)))[0])
        assert (await client.delete(f"/v2/{name}/manifests/tmp-{arch}")).status_code == 202
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d, "size": len((await client.get(
            f"/v2/{name}/manifests/{d}")).content), "platform": {"architecture": a, "os": "linux"}}
        for d, a in zip(child_digests, ("amd64", "arm64"), strict=True)]}).encode()
    r = await client.put(f"/v2/{name}/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 201
    # referrers (untagged by nature): one on the tagged manifest, one on the old untagged one
    async def referrer(subject: str, payload: bytes) -> str:
        await push_blob(client, name, payload)
        await push_blob(client, name, b"{}")
        size = len((await client.get(f"/v2/{name}/manifests/{subject}")).content)
        body = image_manifest(b"{}", [payload], config_type="application/vnd.oci.empty.v1+json",
                              artifactType="application/x-signature",
                              subject={"mediaType": OCI_MANIFEST, "digest": subject, "size": size})
        r = await client.put(f"/v2/{name}/manifests/{sha256(body)}", content=body,
                             headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        return sha256(body)

    sig_new = await referrer(new_digest, b"signature of new")
    sig_old = await referrer(old_digest, b"signature of old")

    report = await run_gc(gc_config, GCOptions(grace=0, settle=0, delete_untagged=True))

    deleted = {m["digest"] for m in report.manifests_deleted}
    assert deleted == {old_digest, sig_old}
    assert set(report.blobs_deleted) == {old_digest, sig_old, sha256(b'{"old":1}'), sha256(b"old layer"),
                                         sha256(b"signature of old")}
    assert report.tag_history_deleted == 1  # v1 pointed at the old manifest once
    assert report.referrer_links_deleted == 1
    for gone in (old_digest, sig_old):
        assert (await client.get(f"/v2/{name}/manifests/{gone}")).status_code == 404
    await pull_all(client, name, "v1")
    await pull_all(client, name, "multi")
    await pull_all(client, name, sig_new)
    listed = (await client.get(f"/v2/{name}/referrers/{new_digest}")).json()["manifests"]
    assert [m["digest"] for m in listed] == [sig_new]
    assert (await client.get(f"/v2/{name}/referrers/{old_digest}")).json()["manifests"] == []

    # without --delete-untagged nothing of that kind is touched
    plain = await run_gc(gc_config)
    assert plain.blobs_deleted == [] and plain.manifests_deleted == []


async def test_delete_untagged_drops_repositories_left_empty(client: httpx.AsyncClient,
                                                             gc_config: dict[str, Any]) -> None:
    """A repository whose manifests were all untagged garbage leaves ``_catalog``; one with a tag,
    and a nested repository under the emptied one, stay."""
    for name in ("team/gone", "team/gone/nested", "team/kept"):
        await push_image(client, name, "v1", config=name.encode(), layers=(name.encode() * 3,))
    # the layer is shared with a kept repository: its link alone does not keep team/gone
    await push_blob(client, "team/gone", b"team/kept" * 3)
    assert (await client.delete("/v2/team/gone/manifests/v1")).status_code == 202
    before = (await client.get("/v2/_catalog")).json()["repositories"]
    assert before == ["team/gone", "team/gone/nested", "team/kept"]
    report = await run_gc(gc_config, GCOptions(grace=0, settle=0, delete_untagged=True))
    assert report.repositories_deleted == ["team/gone"]
    assert (await client.get("/v2/_catalog")).json()["repositories"] == ["team/gone/nested", "team/kept"]
    assert (await client.get("/v2/team/gone/tags/list")).status_code == 404
    await pull_all(client, "team/gone/nested", "v1")
    await pull_all(client, "team/kept", "v1")
    # the name can be pushed again
    await push_image(client, "team/gone", "v2", config=b"again")
    await pull_all(client, "team/gone", "v2")
    # without --delete-untagged an empty repository stays listed
    assert (await client.delete("/v2/team/gone/manifests/v2")).status_code == 202
    assert (await run_gc(gc_config, NOW_GC)).repositories_deleted == []
    assert "team/gone" in (await client.get("/v2/_catalog")).json()["repositories"]


async def test_untagged_but_recent_manifest_is_kept(client: httpx.AsyncClient,
                                                    gc_config: dict[str, Any]) -> None:
    """An index's children are pushed untagged first: within the grace period they are not garbage."""
    digest, _ = await push_image(client, "team/app", "tmp")
    assert (await client.delete("/v2/team/app/manifests/tmp")).status_code == 202
    report = await run_gc(gc_config, GCOptions(settle=0, delete_untagged=True))
    assert report.manifests_deleted == [] and report.blobs_deleted == []
    await pull_all(client, "team/app", digest)



async def test_an_interrupted_run_is_undone(client: httpx.AsyncClient, gc_config: dict[str, Any]) -> None:
    """A run that died after setting data aside: the next run puts it back before it marks, so a
    blob that is in use again is served, and real garbage is collected as usual."""
    from pyreg.registry.gc import quarantine_path
    from pyreg.registry.layout import blob_data_path
    from pyreg.storage.digest import Digest

    digest, _ = await push_image(client, "team/app", "v1", layers=(b"in use",))
    stray = await push_blob(client, "team/app", b"garbage")
    driver = make_driver(load_config(data=gc_config, environ={}))
    for d in (sha256(b"in use"), stray):  # what the dead run had moved aside
        await driver.move(blob_data_path(Digest.parse(d)), quarantine_path(Digest.parse(d)))
    assert (await client.get(f"/v2/team/app/blobs/{sha256(b'in use')}")).status_code == 404

    report = await run_gc(gc_config)
    assert report.blobs_deleted == [stray]
    await pull_all(client, "team/app", "v1")
    assert (await client.get(f"/v2/team/app/manifests/{digest}")).status_code == 200
    assert (await run_gc(gc_config)).blobs_deleted == []

async def test_empty_store(gc_config: dict[str, Any]) -> None:
    report = await run_gc(gc_config)
    assert report.blobs == 0 and report.blobs_deleted == [] and report.repositories == 0


# -- the command -----------------------------------------------------------------------------------


def pyreg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    full_env.pop("PYREG_CONFIG_FILE", None)
    return subprocess.run([sys.executable, "-m", "pyreg", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.mark.filesystem_only
async def test_command(client: httpx.AsyncClient, gc_config: dict[str, Any], tmp_path: Path) -> None:
    data_dir = gc_config["storage"]["filesystem"]["rootdirectory"]
    await push_image(client, "team/app", "v1")
    stray = await push_blob(client, "team/app", b"stray bytes")

    dry = pyreg("gc", "--data-dir", data_dir, "--dry-run", "--grace", "0")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete blob {stray}" in dry.stdout
    assert "would free 1 blobs (11 B)" in dry.stdout

    config_file = tmp_path / "gc.yml"
    config_file.write_text(json.dumps(gc_config))
    done = pyreg("gc", "--config", str(config_file), "--grace", "0s", "--settle", "0", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["blobs_deleted"] == 1 and out["bytes_freed"] == 11 and out["deleted_digests"] == [stray]
    assert out["dry_run"] is False and out["blobs_marked"] == 3
    await pull_all(client, "team/app", "v1")

    bad = pyreg("gc", "--data-dir", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no storage" in bad.stderr
    bad = pyreg("gc", "--data-dir", data_dir, "--grace", "soon")
    assert bad.returncode == 2 and "--grace" in bad.stderr



async def test_command_reads_the_server_config(client: httpx.AsyncClient, gc_config: dict[str, Any],
                                               tmp_path: Path) -> None:
    """``pyreg gc --config`` collects whatever storage the server's config names (S3 too)."""
    await push_image(client, "team/app", "v1")
    stray = await push_blob(client, "team/app", b"stray")
    config_file = tmp_path / "registry.yml"
    config_file.write_text(json.dumps(gc_config))
    done = pyreg("gc", "--config", str(config_file), "--grace", "0", "--settle", "0", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted_digests"] == [stray]
    await pull_all(client, "team/app", "v1")

# -- beside a live registry ------------------------------------------------------------------------


def _age(*files: Path, seconds: float = 7200) -> None:
    """Make files look written ``seconds`` ago (as if the registry had been running a while)."""
    when = time.time() - seconds
    for f in files:
        if f.exists():
            os.utime(f, (when, when))


@pytest.mark.filesystem_only
def test_gc_beside_live_pushes(make_registry_server: Callable[..., Any]) -> None:
    """`pyreg gc` (default 1 h grace) runs again and again while pushes go on against a real server:

    * fresh images, whose blobs wait a moment for their manifest, never lose a blob;
    * an old deleted image is pushed again the way clients do (HEAD, upload what is missing, PUT)
      and deleted again, racing the sweep of its own blobs: every accepted push ends up complete,
      a refused one (MANIFEST_BLOB_UNKNOWN) succeeds on retry;
    * old garbage nobody touches is swept meanwhile; the tagged image is intact.
    """
    server = make_registry_server()  # the server's lookup cache on (ttl 1 s), as deployed
    data = Path(server.data_dir) / "docker/registry/v2"
    http = httpx.Client(base_url=server.url, timeout=60)

    def blob_file(digest: str) -> Path:
        return data / "blobs/sha256" / digest[7:9] / digest[7:] / "data"

    def upload(name: str, blob: bytes) -> None:
        r = http.post(f"/v2/{name}/blobs/uploads/", params={"digest": sha256(blob)}, content=blob)
        assert r.status_code == 201, r.text

    def put(name: str, ref: str, manifest: bytes) -> httpx.Response:
        return http.put(f"/v2/{name}/manifests/{ref}", content=manifest,
                        headers={"Content-Type": OCI_MANIFEST})

    def complete(name: str, ref: str) -> bool:
        r = http.get(f"/v2/{name}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        if r.status_code != 200:
            return False
        body = r.json()
        for desc in [body["config"], *body["layers"]]:
            got = http.get(f"/v2/{name}/blobs/{desc['digest']}")
            if got.status_code != 200 or sha256(got.content) != desc["digest"]:
                return False
        return True

    def push(name: str, ref: str, config: bytes, layers: list[bytes]) -> bytes:
        for blob in (config, *layers):
            upload(name, blob)
        manifest = image_manifest(config, layers)
        assert put(name, ref, manifest).status_code == 201
        return manifest

    keep = push("race/keep", "k", b'{"keep":1}', [os.urandom(3000), os.urandom(5000)])
    old_garbage = []
    for i in range(3):
        m = push("race/old", f"o{i}", f'{{"old":{i}}}'.encode(), [os.urandom(2000 + i)])
        assert http.delete(f"/v2/race/old/manifests/{sha256(m)}").status_code == 202
        old_garbage += [sha256(m), json.loads(m)["config"]["digest"], json.loads(m)["layers"][0]["digest"]]
    g_config, g_layers = b'{"again":1}', [os.urandom(4000), os.urandom(6000)]
    g_manifest = push("race/again", "g", g_config, g_layers)
    g_digests = [sha256(b) for b in (g_config, *g_layers)]
    assert http.delete(f"/v2/race/again/manifests/{sha256(g_manifest)}").status_code == 202
    _age(*(p for p in data.rglob("*") if p.is_file()))

    stop = threading.Event()
    problems: list[str] = []
    fresh_tags: list[str] = []
    refused = [0]

    def pusher() -> None:
        try:
            for i in range(1000):
                if stop.is_set():
                    return
                # a fresh image: blobs now, the manifest a moment later
                config, layer = f'{{"fresh":{i}}}'.encode(), os.urandom(1500)
                upload("race/fresh", config)
                upload("race/fresh", layer)
                time.sleep(0.05)
                if put("race/fresh", f"f{i}", image_manifest(config, [layer])).status_code != 201:
                    problems.append(f"fresh push f{i} refused")
                fresh_tags.append(f"f{i}")
                # the old deleted image, pushed again as clients do
                for _attempt in range(20):
                    for blob, digest in zip((g_config, *g_layers), g_digests, strict=True):
                        if http.head(f"/v2/race/again/blobs/{digest}").status_code != 200:
                            upload("race/again", blob)
                    r = put("race/again", "g", g_manifest)
                    if r.status_code == 201:
                        break
                    if "MANIFEST_BLOB_UNKNOWN" not in r.text:
                        problems.append(f"re-push answered {r.status_code} {r.text[:200]}")
                    refused[0] += 1
                else:
                    problems.append("re-push never accepted")
                # an accepted push is complete (a blob GC set aside a moment ago comes back)
                deadline = time.monotonic() + 60
                while not complete("race/again", "g"):
                    if time.monotonic() > deadline:
                        problems.append(f"accepted re-push {i} stayed incomplete")
                        return
                    time.sleep(0.2)
                # ... and deleted again; time passes
                assert http.delete(f"/v2/race/again/manifests/{sha256(g_manifest)}").status_code == 202
                links = [data / "repositories/race/again/_layers/sha256" / d[7:] / "link" for d in g_digests]
                _age(*(blob_file(d) for d in [*g_digests, sha256(g_manifest)]), *links)
        except Exception as e:  # reported below, with the thread's story
            problems.append(f"pusher failed: {e!r}")

    thread = threading.Thread(target=pusher)
    thread.start()
    reports = []
    try:
        while len(reports) < 4 and thread.is_alive():
            done = pyreg("gc", "--data-dir", str(server.data_dir), "--settle", "2s", "--json")
            assert done.returncode == 0, done.stderr
            reports.append(json.loads(done.stdout))
    finally:
        stop.set()
        thread.join(timeout=300)
    http.close()

    assert problems == [], problems
    assert len(reports) == 4 and len(fresh_tags) >= 4
    swept = {d for r in reports for d in r["deleted_digests"]}
    assert set(old_garbage) <= swept
    keep_body = json.loads(keep)
    keep_digests = {sha256(keep), *(d["digest"] for d in [keep_body["config"], *keep_body["layers"]])}
    assert not swept & keep_digests
    http = httpx.Client(base_url=server.url, timeout=60)
    assert complete("race/keep", "k")
    for tag in fresh_tags:
        assert complete("race/fresh", tag), tag
    http.close()


# -- marking: the typed graph walker over the registry-layout store ---------------------------------


async def test_marking_walks_index_children_referrers_config_and_layers(gc_config: dict[str, Any]) -> None:
    """GC marks through storage/graph.py's walker over the registry-layout ContentStore: an index's
    children (also one whose descriptor names no manifest type, found through the revisions), their
    config and layers, a referrer chain hanging off a kept subject, and every digest named by a
    document it cannot parse (kept rather than lost); only the orphan and a stray blob go."""
    from pyreg.registry.layout import tag_current_path
    from pyreg.storage.digest import Digest
    from pyreg.storage.distlayout import revision_link_path
    from pyreg.storage.registrystore import RegistryStore

    driver = make_driver(load_config(data=gc_config, environ={}))
    name = "team/app"
    repo, shared = RegistryStore(driver, name), RegistryStore(driver)

    async def blob(data: bytes) -> dict[str, Any]:
        digest = Digest.of(data)
        async with repo.writer(digest, len(data)) as w:
            await w.write(data)
            await w.commit()
        return {"mediaType": "application/octet-stream", "digest": str(digest), "size": len(data)}

    async def manifest(doc: dict[str, Any] | bytes, media_type: str = OCI_MANIFEST,
                       tag: str | None = None) -> dict[str, Any]:
        data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        digest = Digest.of(data)
        async with shared.writer(digest, len(data)) as w:
            await w.write(data)
            await w.commit()
        await driver.put_content(revision_link_path(name, digest), str(digest).encode())
        if tag:
            await driver.put_content(tag_current_path(name, tag), str(digest).encode())
        return {"mediaType": media_type, "digest": str(digest), "size": len(data)}

    async def image(tag: str, subject: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": await blob(f"config {tag}".encode()),
                               "layers": [await blob(f"layer {tag}".encode())]}
        if subject is not None:
            doc["subject"] = subject
        return await manifest(doc, **kw)

    amd, arm = await image("amd"), await image("arm")
    arm_odd = {**arm, "mediaType": "application/vnd.example.thing+json"}  # still a revision: followed
    top = await manifest({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd, arm_odd]},
                         OCI_INDEX, tag="multi")
    sig = await image("sig", subject=top)
    await image("sig2", subject=sig)  # a referrer of the referrer
    only_named = await blob(b"named by a document GC cannot parse")
    await manifest(json.dumps({"schemaVersion": 1, "name": name, "fsLayers": [
        {"blobSum": only_named["digest"]}]}).encode(), tag="legacy")
    orphan = await image("orphan")
    stray = await blob(b"uploaded, never referenced")

    report = await collect_garbage(driver, GCOptions(grace=0, settle=0, dry_run=True, delete_untagged=True))

    assert [m["digest"] for m in report.manifests_deleted] == [orphan["digest"]]
    assert set(report.blobs_deleted) == {orphan["digest"], sha256(b"config orphan"), sha256(b"layer orphan"),
                                         stray["digest"]}
    # every other blob is marked: 3 per image (amd, arm, sig, sig2), the index, the legacy doc, its blob
    assert report.blobs_marked == report.blobs - 4 == 4 * 3 + 3
    plain = await collect_garbage(driver, GCOptions(grace=0, settle=0, dry_run=True))
    assert set(plain.blobs_deleted) == {stray["digest"]}  # every revision is a root without delete_untagged


# -- on a directory Distribution wrote --------------------------------------------------------------


@pytest.mark.peers
def test_gc_on_distribution_data(distribution_registry: Any, skopeo: Any, five_layer_image: Any,
                                 busybox_image: Any, index_image: Any, tmp_path: Path) -> None:
    """Debian's docker-registry (Distribution 2.8) writes the store; our GC agrees with its own
    garbage-collect on what is garbage, keeps everything referenced, and Distribution serves the rest."""
    from tests.fixtures.peers import tagged
    from tests.images import build_random_image, read_layout

    host = distribution_registry.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "dist/five", "keep"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "dist/bb", "keep"), "--format", "v2s2")
    skopeo.copy(index_image.oci_ref, tagged(host, "dist/multi", "keep"), "--all")
    doomed = build_random_image(tmp_path / "doomed", 32 * 1024, with_busybox=False, seed=7, name="doomed")
    skopeo.copy(doomed.oci_ref, tagged(host, "dist/gone", "x"))
    skopeo.delete(tagged(host, "dist/gone", "x"))
    distribution_registry.stop()
    root = distribution_registry.root

    theirs = distribution_registry.garbage_collect("--dry-run")
    eligible = set(re.findall(r"blob eligible for deletion: (sha256:[0-9a-f]{64})", theirs))
    assert eligible == {doomed.manifest_digest, *doomed.blob_digests}

    dry = pyreg("gc", "--data-dir", str(root), "--dry-run", "--grace", "0", "--json")
    assert dry.returncode == 0, dry.stderr
    assert set(json.loads(dry.stdout)["deleted_digests"]) == eligible
    done = pyreg("gc", "--data-dir", str(root), "--grace", "0", "--settle", "0", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["deleted_digests"]) == eligible
    assert report["bytes_freed"] == len(doomed.manifest) + len(doomed.config) + sum(
        len(doomed.blob(d)) for d in doomed.layer_digests)
    assert "blob eligible for deletion" not in distribution_registry.garbage_collect("--dry-run")

    distribution_registry.start()
    skopeo.copy(tagged(host, "dist/five", "keep"), f"oci:{tmp_path / 'five'}:k")
    pulled = read_layout(tmp_path / "five", "k")
    assert pulled.manifest == five_layer_image.manifest
    assert all(pulled.blob(d) == five_layer_image.blob(d) for d in five_layer_image.blob_digests)
    skopeo.copy(tagged(host, "dist/multi", "keep"), f"oci:{tmp_path / 'multi'}:k", "--all")
    assert skopeo.inspect_raw(tagged(host, "dist/multi", "keep")) == index_image.index
    assert skopeo.inspect(tagged(host, "dist/bb", "keep"))["Layers"] == busybox_image.layer_digests


@pytest.mark.peers
def test_delete_untagged_on_distribution_data(distribution_registry: Any, skopeo: Any, five_layer_image: Any,
                                              busybox_image: Any, index_image: Any, tmp_path: Path) -> None:
    """``--delete-untagged`` on Distribution's data: an overwritten tag's old image goes, as with
    Distribution's own ``-m``; a tagged index keeps its (untagged) children, which Distribution 2.8's
    ``-m`` counts as garbage."""
    from tests.fixtures.peers import tagged

    host = distribution_registry.host
    skopeo.copy(five_layer_image.oci_ref, tagged(host, "dist/app", "keep"))
    skopeo.copy(busybox_image.oci_ref, tagged(host, "dist/app", "keep"))  # five is untagged now
    skopeo.copy(index_image.oci_ref, tagged(host, "dist/multi", "keep"), "--all")
    distribution_registry.stop()
    root = distribution_registry.root

    theirs = set(re.findall(r"blob eligible for deletion: (sha256:[0-9a-f]{64})",
                            distribution_registry.garbage_collect("--dry-run", "--delete-untagged")))
    expected = {five_layer_image.manifest_digest,
                *(set(five_layer_image.blob_digests) - set(busybox_image.blob_digests))}
    dry = pyreg("gc", "--data-dir", str(root), "--dry-run", "--delete-untagged", "--grace", "0", "--json")
    assert dry.returncode == 0, dry.stderr
    ours = set(json.loads(dry.stdout)["deleted_digests"])
    assert ours == expected and ours <= theirs
    children = {d for child in index_image.children for d in (child.manifest_digest, *child.blob_digests)}
    assert theirs - ours and theirs - ours <= children

    done = pyreg("gc", "--data-dir", str(root), "--delete-untagged", "--grace", "0", "--settle", "0",
                 "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["deleted_digests"]) == expected
    assert report["manifests_deleted"] == [{"repository": "dist/app",
                                            "digest": five_layer_image.manifest_digest}]
    distribution_registry.start()
    skopeo.copy(tagged(host, "dist/multi", "keep"), f"oci:{tmp_path / 'multi'}:k", "--all")
    assert skopeo.inspect(tagged(host, "dist/app", "keep"))["Layers"] == busybox_image.layer_digests
    gone = httpx.get(f"{distribution_registry.url}/v2/dist/app/manifests/{five_layer_image.manifest_digest}",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert gone.status_code == 404
