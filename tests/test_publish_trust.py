"""A blob is trusted from its publish (registry/layout.py: publish_blob): the upload hashed exactly
the bytes it froze, so the first GET right after a push, on any server process on the storage, is
served unhashed; and a blob changed on disk right after its publish is still caught.

On a filesystem a blob renamed into place a few ms ago has no settled version token yet (stat
calls it "racy"), so before this the first reader always hashed it. The publish now settles the
token under a read lease (storage/filesystem.py: snapshot(settle=True)) and records it; a reader
finding the file racy trusts it only if its current token is exactly that one. What each server
did is read from its ``/metrics`` and the record in storage, never from timing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.layout import Layout
from pyreg.storage import filesystem, fileversion
from pyreg.storage.digest import Digest
from pyreg.storage.distlayout import blob_data_path
from pyreg.storage.filesystem import FilesystemDriver, file_token
from tests.fixtures.registry import REPO_ROOT, RegistryServer, sha256
from tests.test_integrity import MiB, Storage, delta, payload, push, verifications, wait_for
from tests.test_mirror import medium_image, mirror_config, push_upstream, upstream  # noqa: F401
from tests.test_shared_trust import record_path, records


@pytest.fixture
def store(storage_config: dict[str, Any], request: pytest.FixtureRequest) -> Storage:
    return Storage(storage_config, request)


@pytest.fixture
def two(make_registry_server: Callable[..., RegistryServer]) -> tuple[RegistryServer, RegistryServer]:
    return make_registry_server(), make_registry_server()


def get_whole(base: str, name: str, digest: str, data: bytes) -> None:
    r = httpx.get(f"{base}/v2/{name}/blobs/{digest}", timeout=60)
    assert r.status_code == 200, r.text
    assert r.content == data


def test_a_pushed_blob_is_served_unhashed_at_once_by_every_server(
        two: tuple[RegistryServer, RegistryServer], store: Storage) -> None:
    """The push records the blob's version as it is published; the pull right after it, on the
    server that took the push and on another one that never saw the blob, sends it unhashed."""
    a, b = two
    data = payload(3 * MiB + 7, seed=61)
    digest = sha256(data)
    push(a.url, "fresh/one", data)
    assert store.exists(record_path(digest)), "the publish recorded no verification"

    before = verifications(a.url)
    get_whole(a.url, "fresh/one", digest, data)
    assert delta(before, verifications(a.url)) == {"trusted_get": 1}

    before, seen = verifications(b.url), records(b.url)
    get_whole(b.url, "fresh/one", digest, data)
    assert delta(before, verifications(b.url)) == {"trusted_get": 1}
    assert delta(seen, records(b.url)) == {"hit": 1}


def _damage(store: Storage, digest: str, data: bytes, how: str) -> None:
    """Change the stored blob under the same name and size: rewritten, or in place (same inode)
    with its content alone changed, or also with its mtime set back."""
    damaged = bytearray(data)
    damaged[MiB + 11] ^= 0x01
    if how == "rewrite":
        store.write(Storage.blob(digest), bytes(damaged))
        return
    assert store.root is not None
    local = store.root / Storage.blob(digest)
    st = os.stat(local)
    with open(local, "r+b") as f:
        f.seek(MiB + 11)
        f.write(bytes([damaged[MiB + 11]]))
    if how == "in_place_mtime_restored":
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = os.stat(local)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("reader", ["publisher", "other"])
@pytest.mark.parametrize("how", ["rewrite", "in_place", "in_place_mtime_restored"])
def test_a_blob_changed_right_after_its_push_is_caught(
        two: tuple[RegistryServer, RegistryServer], store: Storage, how: str, reader: str) -> None:
    """Changed at once after the push (no wait: the file is still "racy"), the blob's token is
    no longer the one its publish recorded: the next GET hashes it, is cut short, and the blob is
    quarantined with its record; an honest push then stores it again."""
    if how != "rewrite" and store.root is None:
        pytest.skip("an S3 object cannot be changed in place")
    a, b = two
    server = a if reader == "publisher" else b
    data = payload(2 * MiB + 5, seed=62)
    digest = sha256(data)
    push(a.url, "fresh/changed", data)
    _damage(store, digest, data, how)

    before = verifications(server.url)
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{server.url}/v2/fresh/changed/blobs/{digest}", timeout=60)
        assert sha256(r.content) == digest, "a changed blob was served whole"
    assert "trusted_get" not in delta(before, verifications(server.url))
    assert wait_for(lambda: httpx.head(f"{server.url}/v2/fresh/changed/blobs/{digest}").status_code == 404)
    assert not store.exists(record_path(digest))
    push(server.url, "fresh/changed", data)
    get_whole(a.url, "fresh/changed", digest, data)


def test_a_mirrored_blob_is_trusted_from_its_fill(
        upstream: Any, make_registry_server: Callable[..., RegistryServer], skopeo: Any,  # noqa: F811
        medium_image: Any, store: Storage) -> None:  # noqa: F811 - the fixtures imported above
    """The pull-through cache publishes a fetched blob through the same publish: its record is
    written by the fill itself, and the next GET of the blob is sent unhashed."""
    push_upstream(skopeo, upstream, medium_image, "big")
    mirror = make_registry_server(mirror_config(upstream))
    r = httpx.get(f"{mirror.url}/v2/up/big/manifests/v1", timeout=60,
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    layer = max(r.json()["layers"], key=lambda d: d["size"])
    assert layer["size"] >= 2 * MiB
    digest = layer["digest"]
    first = httpx.get(f"{mirror.url}/v2/up/big/blobs/{digest}", timeout=120)  # fetched and filled
    assert first.status_code == 200 and sha256(first.content) == digest
    assert wait_for(lambda: store.exists(record_path(digest))), "the fill recorded no verification"
    before = verifications(mirror.url)
    r = httpx.get(f"{mirror.url}/v2/up/big/blobs/{digest}", timeout=60)
    assert r.status_code == 200 and sha256(r.content) == digest
    assert delta(before, verifications(mirror.url)) == {"trusted_get": 1}


# -- the rule itself, in process, with every file kept "racy" ---------------------------------------


async def _publish(driver: FilesystemDriver, layout: Layout, data: bytes) -> Digest:
    digest = Digest.of(data, "sha256")
    staged = "/docker/registry/v2/pyreg-ingest/staged"
    await driver.put_content(staged, data)
    await layout.publish_blob(staged, digest, len(data))
    return digest


def test_a_racy_blob_is_trusted_only_at_its_published_token(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With the racy window made a minute long, no stat gives a settled version: the publisher
    and another worker (a fresh Layout on the same storage) trust the blob from the token its
    publish settled, and neither trusts it once it changed in place with its mtime set back."""
    monkeypatch.setattr(fileversion, "RACY_NS", 60_000_000_000)  # what version_token reads
    monkeypatch.setattr(filesystem, "RACY_NS", 60_000_000_000)  # the settle's own deadline
    driver = FilesystemDriver(tmp_path)
    publisher, other = Layout(driver), Layout(driver)
    data = payload(MiB + 3, seed=63)

    async def run() -> None:
        digest = await _publish(driver, publisher, data)
        info = await driver.stat(blob_data_path(digest))
        assert info.version is None and info.unsettled is not None  # racy: no settled version
        assert await publisher.served_version(digest) == info.unsettled
        assert await other.served_version(digest) == info.unsettled  # from the record
        assert await other.blob_is_valid(digest, len(data))  # a re-push keeps it unread

        local = driver.local_path(blob_data_path(digest))
        st = os.stat(local)
        with open(local, "r+b") as f:
            f.seek(5)
            f.write(bytes([data[5] ^ 1]))
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert await publisher.served_version(digest) is None
        assert await Layout(driver).served_version(digest) is None
        assert not await publisher.trusts(digest, await publisher.blob_token(digest))

    asyncio.run(run())


def test_a_settled_snapshot_token_changes_with_the_next_write(tmp_path: Path) -> None:
    """``snapshot(settle=True)`` returns the token the file has at ``dest``, held until the clock
    ticked past its ctime: a write made at once after it (no wait) gives another token."""
    driver = FilesystemDriver(tmp_path)

    async def run() -> None:
        for i in range(20):
            await driver.put_content("/src", b"x" * 4096)
            snap = await driver.snapshot("/src", f"/dest{i}", "sha256", settle=True)
            local = driver.local_path(f"/dest{i}")
            assert snap.version == file_token(os.stat(local))
            with open(local, "r+b") as f:
                f.write(b"y")
            assert file_token(os.stat(local)) != snap.version

    asyncio.run(run())


_HOLD = """
import os, sys, time, subprocess
from pyreg.storage.filesystem import _hold_writers, _let_writers
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
assert _hold_writers(fd) is True
ino = os.fstat(fd).st_ino
child = subprocess.Popen([sys.executable, "-c", "open(%r, 'r+b').close()" % path])
deadline = time.monotonic() + 30
while not any("BREAKING" in line and line.split()[5].endswith(":%d" % ino)
              for line in open("/proc/locks")):  # the child's open for writing breaks the lease:
    assert time.monotonic() < deadline, "the writer never broke the lease"  # it waits, and the
    time.sleep(0.01)  # kernel signals the lease's holder
time.sleep(0.1)
assert child.poll() is None, "a writer opened the file while writers were held off"
_let_writers(fd)
assert child.wait(30) == 0
print("alive")
"""


def test_holding_writers_off_survives_a_writer_breaking_the_lease(tmp_path: Path) -> None:
    """A process opening a file for writing while the snapshot holds its read lease waits until
    it is let go, and the lease break's signal (SIGIO by default) does not end the server."""
    target = tmp_path / "f"
    target.write_bytes(b"x")
    out = subprocess.run([sys.executable, "-c", _HOLD, str(target)], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, (out.returncode, out.stderr)
    assert out.stdout.strip() == "alive"
