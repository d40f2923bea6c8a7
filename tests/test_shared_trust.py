"""Blob verifications shared through the storage (registry/verified.py): a blob one server process
verified is served unhashed by another on the same storage (and by itself after a restart), a
record of a version that is no longer stored means nothing, and records leave with their blob.

Two ``pyreg serve`` processes on one storage (the directory, or one S3 bucket on moto_server);
what each did is read from its own ``/metrics``, never from timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.verified import LOOKUPS, VerificationRecords, verified_path
from pyreg.storage.digest import Digest
from pyreg.storage.filesystem import RACY_NS, FilesystemDriver
from tests.fixtures.registry import RegistryServer, sha256
from tests.test_integrity import (
    V2,
    MiB,
    Storage,
    assert_blob,
    delta,
    payload,
    push,
    until_trusted,
    verifications,
    wait_for,
)


@pytest.fixture
def store(storage_config: dict[str, Any], request: pytest.FixtureRequest) -> Storage:
    return Storage(storage_config, request)


@pytest.fixture
def two(make_registry_server: Callable[..., RegistryServer]) -> tuple[RegistryServer, RegistryServer]:
    return make_registry_server(), make_registry_server()


def records(base: str) -> dict[str, float]:
    """pyreg_blob_trust_records_total by ``result``, from the server's /metrics."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("pyreg_blob_trust_records_total{"):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            found[result] = float(line.rsplit(" ", 1)[1])
    return found


def record_path(digest: str) -> str:
    return f"{V2}/pyreg-verified/sha256/{digest[7:]}"


def test_a_blob_verified_by_one_server_is_served_unhashed_by_the_other(
        two: tuple[RegistryServer, RegistryServer], store: Storage) -> None:
    """Server a verifies the blob (a hashed GET, or on S3 the publish); server b, which never saw
    it, reads a's record once and serves it unhashed, and keeps a re-push of it unread; a restarted
    a still trusts it."""
    a, b = two
    data = payload(3 * MiB + 1, seed=41)
    digest = sha256(data)
    push(a.url, "shared/one", data)
    until_trusted(a.url, "shared/one", digest, data)
    assert store.exists(record_path(digest))

    before, seen = verifications(b.url), records(b.url)
    assert_blob(b.url, "shared/one", digest, data)
    assert delta(before, verifications(b.url)) == {"trusted_get": 1}
    assert delta(seen, records(b.url)) == {"hit": 1}
    before, seen = verifications(b.url), records(b.url)
    assert_blob(b.url, "shared/one", digest, data)  # now from b's own map: no second read
    assert delta(before, verifications(b.url)) == {"trusted_get": 1}
    assert delta(seen, records(b.url)) == {}

    before = verifications(b.url)
    push(b.url, "shared/two", data)
    assert delta(before, verifications(b.url)) == {"trusted_check": 1}

    a.restart()
    before = verifications(a.url)
    assert_blob(a.url, "shared/one", digest, data)
    assert delta(before, verifications(a.url)) == {"trusted_get": 1}


@pytest.mark.parametrize("how", ["rewrite", "in_place_mtime_restored"])
def test_a_blob_changed_after_its_record_is_caught_by_the_other_server(
        two: tuple[RegistryServer, RegistryServer], store: Storage, how: str) -> None:
    """a verified the blob and recorded it; then it changes under the same name and size (on disk
    also in place, same inode, mtime set back). b reads the record, finds it names another version,
    hashes, cuts the answer short and quarantines the blob; the record goes with it."""
    if how == "in_place_mtime_restored" and store.root is None:
        pytest.skip("an S3 object cannot be changed in place")
    a, b = two
    data = payload(2 * MiB + 3, seed=42)
    digest = sha256(data)
    push(a.url, "shared/changed", data)
    until_trusted(a.url, "shared/changed", digest, data)
    assert store.exists(record_path(digest))
    damaged = bytearray(data)
    damaged[MiB + 5] ^= 0x01
    if how == "rewrite":
        store.write(Storage.blob(digest), bytes(damaged))
    else:
        assert store.root is not None
        local = store.root / Storage.blob(digest)
        st = os.stat(local)
        with open(local, "r+b") as f:
            f.seek(MiB + 5)
            f.write(bytes([damaged[MiB + 5]]))
        os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = os.stat(local)
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    if store.root is not None:  # past the window where a just-changed file has no token at all
        time.sleep(4 * RACY_NS / 1e9)

    before, seen = verifications(b.url), records(b.url)
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(f"{b.url}/v2/shared/changed/blobs/{digest}", timeout=60)
        assert sha256(r.content) == digest, "a changed blob was served whole"
    assert "trusted_get" not in delta(before, verifications(b.url))
    assert delta(seen, records(b.url)).get("stale") == 1
    assert wait_for(lambda: httpx.head(f"{b.url}/v2/shared/changed/blobs/{digest}").status_code == 404)
    assert not store.exists(record_path(digest))
    push(b.url, "shared/changed", data)
    assert_blob(a.url, "shared/changed", digest, data)


async def test_a_missing_record_is_read_once_a_second(tmp_path: Path) -> None:
    """A blob nobody verified yet: its (missing) record is looked up once, not on every request."""
    records_ = VerificationRecords(FilesystemDriver(tmp_path))
    digest = Digest.of(b"never verified")
    missing = LOOKUPS.labels("missing")
    start = missing._value.get()
    for _ in range(5):
        assert not await records_.says(digest, "v1")
    assert missing._value.get() - start == 1
    await records_.write(digest, "v1")
    assert await records_.says(digest, "v1")
    assert not await records_.says(digest, "v2")  # another version of the blob: not trusted
    await records_.remove(digest)
    assert not (tmp_path / verified_path(digest).lstrip("/")).exists()


@pytest.mark.peers
def test_distribution_garbage_collect_ignores_the_records(distribution_registry: Any, skopeo: Any,
                                                         busybox_image: Any, tmp_path: Path) -> None:
    """Distribution's own garbage-collect runs over a store holding pyreg's records, and serves it."""
    import asyncio

    from tests.fixtures.peers import tagged

    host = distribution_registry.host
    skopeo.copy(busybox_image.oci_ref, tagged(host, "dist/bb", "keep"))
    distribution_registry.stop()
    driver = FilesystemDriver(distribution_registry.root)
    layer = Digest.parse(busybox_image.layer_digests[0])
    orphan = Digest.of(b"gone")
    for d in (layer, orphan):
        asyncio.run(VerificationRecords(driver).write(d, "token"))
    distribution_registry.garbage_collect()
    distribution_registry.garbage_collect("--delete-untagged")
    distribution_registry.start()
    skopeo.copy(tagged(host, "dist/bb", "keep"), f"oci:{tmp_path / 'bb'}:k")
    assert skopeo.inspect(tagged(host, "dist/bb", "keep"))["Layers"] == busybox_image.layer_digests
