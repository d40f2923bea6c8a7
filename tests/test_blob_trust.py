"""Layout.checked_stream serving a blob it trusts (registry/layout.py: VerifiedBlobs), in process.

The HTTP side (a trusted GET is not hashed, a blob changed in place is caught, a re-upload is not
read back) is in tests/test_integrity.py; here the one race it cannot reach: a trusted blob
written to while it is being streamed unhashed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pyreg.registry.layout import CorruptBlobError, Layout, blob_data_path
from pyreg.storage.digest import Digest
from pyreg.storage.filesystem import FilesystemDriver
from tests.driver_suite import blob, settled_version

MiB = 1 << 20


async def stored(tmp_path: Path) -> tuple[Layout, Digest, bytes, str]:
    layout = Layout(FilesystemDriver(tmp_path))
    data = blob(3 * MiB, seed=31)
    digest = Digest.of(data)
    await layout.driver.put_content(blob_data_path(digest), data)
    version = await settled_version(layout.driver, blob_data_path(digest))
    assert await layout.blob_is_valid(digest, len(data))  # read and hashed: now trusted
    return layout, digest, data, version


async def test_trusted_blob_streams_unhashed_and_whole(tmp_path: Path) -> None:
    layout, digest, data, version = await stored(tmp_path)
    assert layout.verified.trusted(digest, version)
    reader = layout.driver.reader(blob_data_path(digest))
    body = layout.checked_stream(digest, reader, len(data), True, version)
    assert b"".join([c async for c in body]) == data


@pytest.mark.parametrize("same_bytes", [False, True])
async def test_trusted_blob_written_while_streamed_is_cut_short(tmp_path: Path, same_bytes: bool) -> None:
    """The write lands after the first chunk went out: the bytes are not hashed, but the version
    read again before the last chunk differs, so the answer never completes. The blob is then
    checked: quarantined when wrong, kept (and trusted again) when the write changed nothing."""
    layout, digest, data, version = await stored(tmp_path)
    local = Path(tmp_path, blob_data_path(digest).lstrip("/"))

    async def chunks() -> AsyncIterator[bytes]:
        first = True
        async for chunk in layout.driver.reader(blob_data_path(digest)):
            yield chunk
            if first:
                first = False
                with open(local, "r+b") as f:
                    f.seek(len(data) - 10)
                    f.write(data[-10:] if same_bytes else b"X" * 10)

    got = bytearray()
    with pytest.raises(CorruptBlobError):
        async for chunk in layout.checked_stream(digest, chunks(), len(data), True, version):
            got += chunk
    assert len(got) < len(data)
    assert not layout.verified.trusted(digest, version)
    assert os.path.exists(local) == same_bytes  # a wrong blob is moved out of the store
