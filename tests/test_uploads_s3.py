"""Chunked uploads on S3 keep one multipart upload open between chunks, as Distribution does:
no chunk completes the upload, so no chunk re-copies what earlier ones stored. S3 is a real
moto_server process; the bucket is inspected with boto3."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from pyreg.storage.s3 import MIN_PART, PENDING, S3Driver, s3_config_from_dict
from tests.driver_suite import blob
from tests.fixtures.s3 import MotoServer

ROOT = "pyreg/docker/registry/v2/repositories"


def make_client(s3_section: dict[str, Any]) -> httpx.AsyncClient:
    from pyreg.registry.app import create_app
    from pyreg.registry.config import load_config

    config = {"storage": {"s3": s3_section, "maintenance": {"uploadpurging": {"enabled": False}}},
              "log": {"accesslog": {"disabled": True}}}
    app = create_app(load_config(data=config, environ={}))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry.test")


def objects(moto_server: MotoServer, bucket: str) -> dict[str, int]:
    resp = moto_server.client().list_objects_v2(Bucket=bucket)
    return {o["Key"]: int(o["Size"]) for o in resp.get("Contents", [])}


def open_uploads(moto_server: MotoServer, bucket: str) -> list[dict[str, Any]]:
    return list(moto_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


async def test_chunks_stay_in_one_open_multipart_upload(s3_section: dict[str, Any], moto_server: MotoServer,
                                                        s3_bucket: str) -> None:
    chunks = [blob(MIN_PART + 1000, seed=i) for i in range(3)]
    data = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with make_client(s3_section) as first, make_client(s3_section) as second:
        r = await first.post("/v2/big/blobs/uploads/")
        assert r.status_code == 202, r.text
        location, upload_id = r.headers["Location"], r.headers["Docker-Upload-UUID"]
        key = f"{ROOT}/big/_uploads/{upload_id}/data"
        offset = 0
        for i, chunk in enumerate(chunks):
            client = (first, second)[i % 2]  # any replica takes the next chunk
            r = await client.patch(location, content=chunk, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
            assert r.status_code == 202, r.text
            offset += len(chunk)
            assert r.headers["Range"] == f"0-{offset - 1}"
            # The status, from either replica, sees the uncommitted bytes.
            for c in (first, second):
                r = await c.get(location)
                assert r.status_code == 204 and r.headers["Range"] == f"0-{offset - 1}"

        # Still one open upload holding one part per chunk, written once (never copied); the
        # data key holds nothing committed beyond the empty object a session starts with.
        [upload] = [u for u in open_uploads(moto_server, s3_bucket) if u["Key"] == key]
        parts = moto_server.client().list_parts(Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"])
        assert [p["Size"] for p in parts["Parts"]] == [MIN_PART] * 3
        stored = objects(moto_server, s3_bucket)
        assert stored.get(key, 0) == 0
        assert stored[key + PENDING] == 3 * 1000  # the journal: the tail shorter than a part

        r = await second.put(location, params={"digest": digest})
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        r = await first.get(f"/v2/big/blobs/{digest}")
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == digest[7:]
    assert open_uploads(moto_server, s3_bucket) == []
    assert not [k for k in objects(moto_server, s3_bucket) if "/_uploads/" in k or k.endswith(PENDING)]


async def test_final_put_with_a_body_and_no_cached_hash(s3_section: dict[str, Any], moto_server: MotoServer,
                                                        s3_bucket: str) -> None:
    """The last chunk comes with the PUT to a replica that never saw the session: the digest is
    recomputed from the committed data."""
    head, tail = blob(MIN_PART + 7, seed=20), blob(100, seed=21)
    digest = "sha256:" + hashlib.sha256(head + tail).hexdigest()
    async with make_client(s3_section) as first, make_client(s3_section) as second:
        location = (await first.post("/v2/p/blobs/uploads/")).headers["Location"]
        assert (await first.patch(location, content=head)).status_code == 202
        r = await second.put(location, params={"digest": "sha256:" + "0" * 64}, content=tail,
                             headers={"Content-Range": f"{len(head) + 1}-{len(head) + 100}"})
        assert r.status_code == 416 and r.headers["Range"] == f"0-{len(head) - 1}"
        r = await second.put(location, params={"digest": digest}, content=tail)
        assert r.status_code == 201, r.text
        assert (await first.get(f"/v2/p/blobs/{digest}")).content == head + tail
    assert open_uploads(moto_server, s3_bucket) == []


async def test_status_writes_nothing(s3_section: dict[str, Any], moto_server: MotoServer,
                                     s3_bucket: str) -> None:
    """Opening a writer to read the size and closing it unwritten changes nothing in S3."""
    driver = S3Driver(s3_config_from_dict(s3_section))
    try:
        w = await driver.writer("/s/data")
        await w.write(blob(MIN_PART + 5, seed=3))
        await w.close()
        before = moto_server.client().head_object(Bucket=s3_bucket, Key="pyreg/s/data" + PENDING)
        calls: list[str] = []
        real_call = driver._call

        async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(getattr(fn, "__name__", str(fn)))
            return await real_call(fn, *args, **kwargs)

        driver._call = spy  # type: ignore[method-assign]
        w = await driver.writer("/s/data", append=True)
        assert w.size == MIN_PART + 5
        await w.close()
        assert not {"put_object", "upload_part", "upload_part_copy", "create_multipart_upload",
                    "complete_multipart_upload"} & set(calls), calls
        after = moto_server.client().head_object(Bucket=s3_bucket, Key="pyreg/s/data" + PENDING)
        assert after["ETag"] == before["ETag"] and after["LastModified"] == before["LastModified"]
    finally:
        driver.close()
