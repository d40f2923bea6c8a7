"""Blob bytes reach the page cache in write calls of at most 32 KiB (storage/storefiles.py
WRITE_PIECE), on every path that writes a pushed or fetched blob, and a commit still fsyncs.

Why it matters: Linux sizes a write's page-cache folios by the call's length, and large folios can
only come from large free blocks, which a VM with free page reporting has handed back to its host
(each first touch then costs a host fault: 1.1-1.5 s of CPU for a 256 MiB push instead of 0.09 s,
bench/README.md "Blob push in the cold condition"). The last test looks at the folios a real
``pyreg serve`` leaves in the page cache, through /proc/kpageflags (root only)."""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import io
import mmap
import os
import struct
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from pyreg.registry.mirror.staging import LocalStaging
from pyreg.runtime.extract import extract_layer
from pyreg.storage.blobstore import BlobStore
from pyreg.storage.content import LayoutStore
from pyreg.storage.digest import Digest
from pyreg.storage.filesystem import FilesystemDriver
from tests.fixtures.registry import RegistryServer

MiB = 1 << 20
LIMIT = 32 << 10  # order 3: the largest folio the page allocator treats as cheap


class Calls:
    """Every write / writev / fsync on one file descriptor, in order (the real calls still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fd = -1
        self.log: list[tuple[str, int]] = []
        real_write, real_writev, real_fsync = os.write, os.writev, os.fsync

        def write(fd: int, data: Any) -> int:
            if fd == self.fd:
                self.log.append(("write", len(data)))
            return real_write(fd, data)

        def writev(fd: int, buffers: Any) -> int:
            if fd == self.fd:
                self.log.append(("write", sum(len(b) for b in buffers)))
            return real_writev(fd, buffers)

        def fsync(fd: int) -> None:
            if fd == self.fd:
                self.log.append(("fsync", 0))
            real_fsync(fd)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "writev", writev)
        monkeypatch.setattr(os, "fsync", fsync)

    @property
    def sizes(self) -> list[int]:
        return [n for kind, n in self.log if kind == "write"]


def test_the_direct_writer_writes_small_pieces_and_commit_fsyncs(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    data = os.urandom(3 * MiB + 12345)

    async def go() -> None:
        writer = await FilesystemDriver(tmp_path).writer("/upload/data")
        calls.fd = writer._file.fileno()
        write = await writer.direct()
        for off in range(0, len(data), MiB):  # what directbody's pump hands over: 1 MiB buffers
            write(memoryview(data)[off:off + MiB])
        await writer.commit()
        await writer.close()

    asyncio.run(go())
    assert (tmp_path / "upload/data").read_bytes() == data
    assert calls.sizes and max(calls.sizes) <= LIMIT
    assert sum(calls.sizes) == len(data)
    assert calls.log[-1] == ("fsync", 0)  # after the last byte


def test_the_stream_writer_writes_small_pieces_and_commit_fsyncs(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    pieces = [os.urandom(n) for n in (256 << 10, 100, 256 << 10, 65536 + 7, 1 << 20, 256 << 10, 3)]

    async def go() -> None:
        writer = await FilesystemDriver(tmp_path).writer("/upload/data")
        calls.fd = writer._file.fileno()
        for piece in pieces:  # what the ASGI stream hands over: uvloop's socket reads
            await writer.write(piece)
        await writer.commit()
        await writer.close()

    asyncio.run(go())
    assert (tmp_path / "upload/data").read_bytes() == b"".join(pieces)
    assert calls.sizes and max(calls.sizes) <= LIMIT
    assert calls.log[-1] == ("fsync", 0)


def test_the_mirror_staging_file_gets_small_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    path = tmp_path / "staging"
    path.touch()
    data = os.urandom(2 * MiB + 1)
    staging = LocalStaging(str(path))
    calls.fd = staging._fd
    staging.write(memoryview(data))
    staging.close()
    assert path.read_bytes() == data
    assert max(calls.sizes) <= LIMIT


def _largest_folio_pages(path: Path) -> int:
    """The largest page-cache folio of ``path``, in pages (each page mapped and looked up in
    /proc/self/pagemap, then its flags in /proc/kpageflags: COMPOUND_HEAD 15, COMPOUND_TAIL 16)."""
    size = path.stat().st_size
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        for off in range(0, size, 4096):
            m[off]  # read-only touch: maps the cached page itself (a private copy only on a write)
        view = ctypes.c_char.from_buffer(m)
        start = ctypes.addressof(view)
        del view  # an exported buffer would keep the mapping from closing
        pages = size // 4096
        with open("/proc/self/pagemap", "rb") as pm:
            pm.seek((start // 4096) * 8)
            entries = struct.unpack(f"{pages}Q", pm.read(pages * 8))
    pfns = [e & ((1 << 55) - 1) for e in entries if e >> 63]
    assert pfns, "no page of the file is mapped"
    largest = run = 0
    with open("/proc/kpageflags", "rb") as kf:
        for pfn in pfns:
            kf.seek(pfn * 8)
            flags = struct.unpack("Q", kf.read(8))[0]
            if flags >> 16 & 1:  # a tail of the folio counted so far
                run += 1
            else:
                run = 1
            largest = max(largest, run)
    return largest


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK),
                    reason="page frame numbers and their flags are root's to read")
def test_a_pushed_blob_sits_in_small_folios(tmp_path: Path) -> None:
    data = os.urandom(16 * MiB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}}
    server = RegistryServer(config, tmp_path / "server")
    server.start()
    try:
        _push_and_pull(server, data, digest)
    finally:
        server.stop()
    blob = tmp_path / "data/docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    assert blob.read_bytes() == data
    assert _largest_folio_pages(blob) * 4096 <= LIMIT


def _push_and_pull(server: RegistryServer, data: bytes, digest: str) -> None:
    """A monolithic push (POST, then one PUT ?digest= with a Content-Length: the direct path)."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        post = client.post("/v2/small/folios/blobs/uploads/")
        assert post.status_code == 202, post.text
        put = client.put(post.headers["location"], params={"digest": digest}, content=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        assert client.get(f"/v2/small/folios/blobs/{digest}").content == data


def test_an_extracted_file_is_written_in_small_pieces(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer's files, as ``pyreg pull`` / ``run`` extract them, reach the page cache in small
    write calls too (the extractor reads the tar 1 MiB at a time)."""
    data = os.urandom(3 * MiB + 5)
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    sizes: list[int] = []
    real_write = os.write

    def write(fd: int, chunk: Any) -> int:
        sizes.append(len(chunk))
        return real_write(fd, chunk)

    monkeypatch.setattr(os, "write", write)
    extract_layer(layer, tmp_path / "rootfs", "application/vnd.oci.image.layer.v1.tar")
    monkeypatch.undo()
    assert (tmp_path / "rootfs/big.bin").read_bytes() == data
    assert sum(sizes) >= len(data) and max(sizes) <= LIMIT


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK),
                    reason="page frame numbers and their flags are root's to read")
@pytest.mark.parametrize("store", ["local", "layout"])
def test_a_pulled_blob_sits_in_small_folios(tmp_path: Path, store: str) -> None:
    """The client's stores (``pyreg pull``'s local store, an OCI layout as a copy's destination)
    are handed 1 MiB pieces by the transfer; their files still get small folios."""
    data = os.urandom(16 * MiB)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    target = BlobStore(tmp_path / "store") if store == "local" else LayoutStore(tmp_path / "layout")
    with target.writer(digest, len(data)) as w:
        for off in range(0, len(data), MiB):
            w.write(data[off:off + MiB])
        final = Path(w.commit())
    assert final.read_bytes() == data
    assert _largest_folio_pages(final) * 4096 <= LIMIT
