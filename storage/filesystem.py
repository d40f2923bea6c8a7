"""The filesystem driver: the embedded default, byte-for-byte the layout of Distribution's.

Blocking calls run in worker threads so the event loop never waits on the disk. Small files are
replaced by write-aside-and-rename; large ones stream through an append writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar

from storage.driver import FileInfo, check_path
from storage.errors import InvalidOffsetError, PathNotFoundError

_WRITE_ATTEMPTS = 5
T = TypeVar("T")


def _despite_deletes(create: Callable[[], T]) -> T:
    """Run ``create`` (makedirs, then create a file) again when a concurrent delete interferes.

    A delete of a parent directory (untag, unlink, cancel) can take it away between makedirs and
    the file's creation: makedirs then says FileExistsError, open or replace FileNotFoundError.
    The write comes after that delete, so it starts over.
    """
    for attempt in range(_WRITE_ATTEMPTS):
        try:
            return create()
        except (FileNotFoundError, FileExistsError):
            if attempt == _WRITE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")

READ_CHUNK = 1 << 20
WRITE_BUFFER = 1 << 20


class FilesystemWriter:
    """Append writer that batches small writes into large ones before touching the disk."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("writer is closed")
        self._pending.append(data)
        self._pending_size += len(data)
        self._size += len(data)
        if self._pending_size >= WRITE_BUFFER:
            await self._flush()
        return len(data)

    async def _flush(self) -> None:
        if not self._pending:
            return
        chunk = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        await asyncio.to_thread(self._file.write, chunk)

    async def close(self) -> None:
        if self._closed:
            return
        await self._flush()
        self._closed = True
        await asyncio.to_thread(self._file.close)

    async def cancel(self) -> None:
        self._pending.clear()
        self._closed = True
        name = self._file.name
        await asyncio.to_thread(self._file.close)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.remove, name)

    async def commit(self) -> None:
        await self._flush()

        def sync() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())

        await asyncio.to_thread(sync)


class FilesystemDriver:
    """Stores everything under one root directory on local disk."""

    name = "filesystem"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        os.makedirs(self.root, exist_ok=True)

    def local_path(self, path: str) -> str:
        """The on-disk path for a driver path (used to hand files to nginx or sendfile)."""
        check_path(path)
        return self.root + path if path != "/" else self.root

    async def get_content(self, path: str) -> bytes:
        local = self.local_path(path)

        def read() -> bytes:
            try:
                with open(local, "rb") as f:
                    return f.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise PathNotFoundError(path) from None

        return await asyncio.to_thread(read)

    async def put_content(self, path: str, data: bytes) -> None:
        local = self.local_path(path)

        def write_once() -> None:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            aside = f"{local}.{uuid.uuid4().hex}.tmp"
            try:
                with open(aside, "wb") as f:
                    f.write(data)
                os.replace(aside, local)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(aside)
                raise

        await asyncio.to_thread(_despite_deletes, write_once)

    async def reader(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        local = self.local_path(path)

        def open_at() -> BinaryIO:
            try:
                f = open(local, "rb")  # noqa: SIM115 - closed below
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise PathNotFoundError(path) from None
            if offset > os.fstat(f.fileno()).st_size:
                f.close()
                raise InvalidOffsetError(f"offset {offset} is past the end of {path}")
            f.seek(offset)
            return f

        f = await asyncio.to_thread(open_at)
        try:
            remaining = length
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = await asyncio.to_thread(f.read, want)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def writer(self, path: str, append: bool = False) -> FilesystemWriter:
        local = self.local_path(path)

        def open_for_write() -> tuple[BinaryIO, int]:
            os.makedirs(os.path.dirname(local), exist_ok=True)
            f = open(local, "ab" if append else "wb")  # noqa: SIM115 - owned by the writer
            return f, f.seek(0, os.SEEK_END)

        f, size = await asyncio.to_thread(_despite_deletes, open_for_write)
        return FilesystemWriter(f, size)

    async def stat(self, path: str) -> FileInfo:
        local = self.local_path(path)
        try:
            st = await asyncio.to_thread(os.stat, local)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        is_dir = os.path.isdir(local)
        return FileInfo(path, 0 if is_dir else st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), is_dir)

    async def list(self, path: str) -> list[str]:
        local = self.local_path(path)
        try:
            names = await asyncio.to_thread(os.listdir, local)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        prefix = "" if path == "/" else path
        return [f"{prefix}/{name}" for name in names if not name.endswith(".tmp")]

    async def move(self, source: str, dest: str) -> None:
        src_local, dest_local = self.local_path(source), self.local_path(dest)

        def rename() -> None:
            if not os.path.exists(src_local):
                raise PathNotFoundError(source)
            os.makedirs(os.path.dirname(dest_local), exist_ok=True)
            os.replace(src_local, dest_local)

        await asyncio.to_thread(_despite_deletes, rename)

    async def delete(self, path: str) -> None:
        local = self.local_path(path)

        def remove() -> None:
            # A tree is renamed aside first (atomic, and hidden from list/walk as .tmp), so two
            # deletes racing on it cannot trip over each other's half-removed entries.
            try:
                os.remove(local)  # a file or a symlink
                return
            except IsADirectoryError:
                pass
            except FileNotFoundError:
                raise PathNotFoundError(path) from None
            aside = f"{local}.{uuid.uuid4().hex}.deleting.tmp"
            try:
                os.rename(local, aside)
            except FileNotFoundError:
                raise PathNotFoundError(path) from None
            shutil.rmtree(aside, ignore_errors=True)

        await asyncio.to_thread(remove)

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        return None

    async def walk(self, path: str) -> AsyncIterator[FileInfo]:
        local = self.local_path(path)
        if not await asyncio.to_thread(os.path.isdir, local):
            raise PathNotFoundError(path)

        def collect() -> list[FileInfo]:
            found: list[FileInfo] = []
            for dirpath, dirnames, filenames in os.walk(local):
                rel = dirpath[len(self.root):] or "/"
                base = "" if rel == "/" else rel
                for name in dirnames:
                    found.append(FileInfo(f"{base}/{name}", 0, _mtime(os.path.join(dirpath, name)), True))
                for name in filenames:
                    if name.endswith(".tmp"):
                        continue
                    full = os.path.join(dirpath, name)
                    with contextlib.suppress(FileNotFoundError):
                        st = os.stat(full)
                        found.append(FileInfo(f"{base}/{name}", st.st_size,
                                              datetime.fromtimestamp(st.st_mtime, UTC), False))
            return found

        for info in await asyncio.to_thread(collect):
            yield info


def _mtime(path: str) -> datetime:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    except FileNotFoundError:
        return datetime.now(UTC)
