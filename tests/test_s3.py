"""S3-specific behaviour beyond the shared driver suite: key layout, where writer state lives,
multipart copy, redirect switch, config parsing. S3 is a real moto_server process."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pyreg.storage.s3 import MIN_PART, PENDING, S3Config, S3Driver, parse_duration, s3_config_from_dict
from tests.driver_suite import blob, read_all
from tests.fixtures.s3 import MotoServer

MiB = 1 << 20


@pytest.fixture
def make(s3_section: dict[str, Any]) -> Iterator[Any]:
    made: list[S3Driver] = []

    def factory(**overrides: Any) -> S3Driver:
        driver = S3Driver(s3_config_from_dict({**s3_section, **overrides}))
        made.append(driver)
        return driver

    yield factory
    for d in made:
        d.close()


def keys(moto_server: MotoServer, bucket: str) -> list[str]:
    resp = moto_server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def uploads(moto_server: MotoServer, bucket: str) -> list[dict[str, Any]]:
    return list(moto_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


async def test_registry_layout_under_root(make: Any, moto_server: MotoServer, s3_bucket: str) -> None:
    d = make()
    path = "/docker/registry/v2/blobs/sha256/ab/abcd/data"
    await d.put_content(path, b"x")
    assert keys(moto_server, s3_bucket) == ["pyreg/docker/registry/v2/blobs/sha256/ab/abcd/data"]
    bare = make(rootdirectory="/")
    assert await bare.get_content("/pyreg" + path) == b"x"


async def test_writer_state_lives_in_s3(make: Any, moto_server: MotoServer, s3_bucket: str) -> None:
    w = await make().writer("/u/data")
    await w.write(b"a" * 1000)
    await w.close()
    # A short tail: one upload (no parts yet) and the journal holding the tail, nothing in memory.
    assert [u["Key"] for u in uploads(moto_server, s3_bucket)] == ["pyreg/u/data"]
    assert keys(moto_server, s3_bucket) == ["pyreg/u/data" + PENDING]
    # Listings never show the journal.
    assert await make().list("/u") == []
    w = await make().writer("/u/data", append=True)
    assert w.size == 1000
    await w.write(b"b" * (MIN_PART - 1000))
    await w.close()
    journal = moto_server.client().get_object(Bucket=s3_bucket, Key="pyreg/u/data" + PENDING)
    assert journal["Metadata"]["parts"] == "1" and journal["Body"].read() == b""
    w = await make().writer("/u/data", append=True)
    await w.commit()
    assert uploads(moto_server, s3_bucket) == []
    assert keys(moto_server, s3_bucket) == ["pyreg/u/data"]
    assert (await make().stat("/u/data")).size == MIN_PART


async def test_parts_of_a_writer_that_died_are_ignored(make: Any) -> None:
    """Only a close acknowledges parts: a writer that died before it counts for nothing."""
    w = await make().writer("/crash/data")
    await w.write(b"t" * 100)
    await w.close()
    dead = await make().writer("/crash/data", append=True)
    await dead.write(b"p" * (2 * MIN_PART))  # parts went up...
    await dead._drain()  # ...all of them, and then the process died: no close
    w = await make().writer("/crash/data", append=True)
    assert w.size == 100
    await w.write(b"x" * (MIN_PART + 1))
    await w.commit()
    assert await make().get_content("/crash/data") == b"t" * 100 + b"x" * (MIN_PART + 1)


async def test_commit_per_chunk_survives_a_dead_writer(make: Any) -> None:
    """The registry commits after every chunk: a writer dying mid-chunk leaves the object as is."""
    d = make()
    base = blob(MIN_PART + 10, seed=6)
    await d.put_content("/reg/data", base)
    dead = await make().writer("/reg/data", append=True)
    await dead.write(blob(2 * MIN_PART, seed=7))
    await dead._drain()
    w = await make().writer("/reg/data", append=True)
    assert w.size == len(base) == (await d.stat("/reg/data")).size
    await w.write(b"end")
    await w.commit()
    assert await d.get_content("/reg/data") == base + b"end"


async def test_append_to_large_committed_object_copies_server_side(make: Any) -> None:
    d = make()
    data = blob(MIN_PART + 10, seed=5)
    await d.put_content("/big/data", data)
    w = await make().writer("/big/data", append=True)
    assert w.size == len(data)
    await w.write(b"tail")
    await w.close()
    w = await make().writer("/big/data", append=True)
    assert w.size == len(data) + 4
    await w.commit()
    assert await d.get_content("/big/data") == data + b"tail"


async def test_append_copies_a_large_base_in_ranges(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyreg.storage.s3

    monkeypatch.setattr(pyreg.storage.s3, "COPY_RANGE", MIN_PART)  # 11 MiB -> two ranged copies at once
    d = make()
    data = blob(11 * MiB, seed=12)
    await d.put_content("/pc/data", data)
    w = await make().writer("/pc/data", append=True)
    await w.write(b"more")
    await w.close()
    w = await make().writer("/pc/data", append=True)
    assert w.size == len(data) + 4
    await w.commit()
    assert await d.get_content("/pc/data") == data + b"more"


async def test_multipart_copy_on_move(make: Any) -> None:
    d = make(multipart_copy_threshold=6 * MiB, multipart_copy_chunksize=5 * MiB)
    data = blob(13 * MiB + 7, seed=9)
    w = await d.writer("/mv/src")
    for i in range(0, len(data), MiB):
        await w.write(data[i:i + MiB])
    await w.commit()
    await d.move("/mv/src", "/mv/dst")
    got = await read_all(d, "/mv/dst")
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


async def test_delete_aborts_uploads(make: Any, moto_server: MotoServer, s3_bucket: str) -> None:
    d = make()
    w = await d.writer("/_uploads/x/data")
    await w.write(b"z" * (MIN_PART + 1))
    await w.close()
    await d.put_content("/_uploads/x/startedat", b"now")
    await d.delete("/_uploads/x")
    assert uploads(moto_server, s3_bucket) == []
    assert keys(moto_server, s3_bucket) == []


async def test_redirect_switch(make: Any) -> None:
    plain = make()
    await plain.put_content("/r/blob", b"content")
    assert await plain.redirect_url("/r/blob") is None
    redirecting = make(redirect={"enabled": True, "expiry": "1m"})
    url = await redirecting.redirect_url("/r/blob")
    assert url is not None and "X-Amz-Expires=60" in url
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == b"content"


async def test_walk_pages(make: Any) -> None:
    d = make()
    d.page_size = 3
    files = {f"/wp/{i % 3}/f{i}" for i in range(10)}
    for f in files:
        await d.put_content(f, b"x")
    found = [i async for i in d.walk("/wp")]
    assert {i.path for i in found if not i.is_dir} == files
    assert sorted(i.path for i in found if i.is_dir) == ["/wp/0", "/wp/1", "/wp/2"]


async def test_blocking_calls_run_in_a_bounded_pool(s3_section: dict[str, Any]) -> None:
    import asyncio
    import threading

    d = S3Driver(dataclasses.replace(s3_config_from_dict(s3_section), max_workers=3))
    try:
        main = threading.get_ident()
        seen: set[int] = set()
        original = d.client.get_object

        def spy(**kwargs: Any) -> Any:
            seen.add(threading.get_ident())
            return original(**kwargs)

        d.client.get_object = spy
        await d.put_content("/pool/x", b"x")
        assert await asyncio.gather(*(d.get_content("/pool/x") for _ in range(40))) == [b"x"] * 40
        assert main not in seen and 1 <= len(seen) <= 3
    finally:
        d.close()


def test_config() -> None:
    c = s3_config_from_dict({"bucket": "b", "redirect": {"enabled": True, "expiry": "20m"},
                             "rootdirectory": "/x/y/", "chunksize": "6291456"})
    got = (c.bucket, c.region, c.redirect.enabled, c.redirect_expiry, c.chunksize)
    assert got == ("b", "us-east-1", True, 1200, 6 << 20)
    assert S3Driver(c).key("/docker/a") == "x/y/docker/a"
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90 and parse_duration("15") == 15
    with pytest.raises(ValueError):
        parse_duration("ten minutes")
    with pytest.raises(ValueError):
        S3Driver(S3Config(bucket="b", chunksize=MiB))


def test_from_registry_config(s3_section: dict[str, Any]) -> None:
    """registry/drivers.py builds the driver from the registry's own config dataclass."""
    from pyreg.registry.config import load_config
    from pyreg.registry.drivers import make_driver

    section = {**s3_section, "redirect": {"enabled": True, "expiry": "20m"}}
    driver = make_driver(load_config(data={"storage": {"s3": section}}))
    assert isinstance(driver, S3Driver)
    assert driver.config.redirect.enabled and driver.config.redirect_expiry == 1200
    assert driver.config.bucket == s3_section["bucket"] and driver.config.chunksize == 5 << 20
    driver.close()


async def test_registry_blob_get_redirects_head_does_not(s3_section: dict[str, Any]) -> None:
    """With storage.s3.redirect on, a blob GET answers 307 to a presigned URL; HEAD answers itself."""
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config

    config = load_config(data={"storage": {"s3": {**s3_section, "redirect": {"enabled": True}}}}, environ={})
    app = create_app(config)
    data = blob(300_000, seed=11)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as c:
        r = await c.post("/v2/red/irect/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        r = await c.get(f"/v2/red/irect/blobs/{digest}")
        assert r.status_code == 307
        assert r.headers["Location"].startswith(s3_section["regionendpoint"])
        assert r.headers["Docker-Content-Digest"] == digest
        head = await c.head(f"/v2/red/irect/blobs/{digest}")
        assert head.status_code == 200
        assert head.headers["Content-Length"] == str(len(data)) and "Location" not in head.headers
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(r.headers["Location"])).content == data


def test_one_s3_section_for_config_and_driver_without_boto3_at_load() -> None:
    """The config's ``storage.s3`` and the driver's settings are one dataclass (storage/s3config.py),
    read once by the config loader and handed to the driver as it is; loading it imports no boto3."""
    import subprocess
    import sys

    from tests.fixtures.registry import REPO_ROOT

    code = (
        "import sys\n"
        "from pyreg.registry.config import load_config\n"
        "s3 = load_config(data={'storage': {'s3': {'bucket': 'b', 'chunksize': '6M',\n"
        "    'redirect': {'enabled': True, 'expiry': '20m'}}}}, environ={}).storage.s3\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 at config load'\n"
        "from pyreg.storage.s3 import S3Config, S3Driver\n"
        "assert type(s3) is S3Config and S3Driver.from_config(s3).config is s3\n"
        "print(s3.chunksize, s3.redirect_expiry)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(6 << 20), "1200"]
