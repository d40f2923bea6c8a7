"""The filesystem driver: the embedded default, byte-for-byte the layout of Distribution's.

Blocking calls run in worker threads so the event loop never waits on the disk. Small files are
replaced by write-aside-and-rename; large ones stream through an append writer.

Other processes (workers, replicas on the same disk, ``pyreg gc``) change the tree at the same
time, so every call treats a directory vanishing or appearing under it as normal: a delete that
finds part of the tree already gone finishes the rest, a write whose directory was removed
re-creates it. None of these races is a 500.

Locks (``try_lock``) are ``flock`` locks on a lock file: the kernel releases them when the holder
dies, however it dies, so a SIGKILLed worker never wedges one. ``flock`` is per open file
description, so two requests of one process exclude each other as two processes do. The holder
removes the file on release; a locker that wins the flock on a file that was removed meanwhile
sees that the path no longer names its inode and reports the lock busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import signal
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar

from pyreg.storage.driver import FileInfo, Snapshot, check_path
from pyreg.storage.errors import InvalidOffsetError, LockLostError, PathNotFoundError
from pyreg.storage.fileversion import (  # noqa: F401  (re-exported: moved there)
    RACY_COARSE_NS,
    RACY_NS,
    file_token,
    version_token,
)
from pyreg.storage.storefiles import WRITE_PIECE, write_all  # the write size rule (local store too)

T = TypeVar("T")

READ_CHUNK = 1 << 20
WRITE_BUFFER = 1 << 20
RETRIES = 8  # a directory removed (or filled) under us this many times in a row is a real error


# The kernel stamps inode times from its coarse realtime clock (one tick: 1-10 ms); with
# multigrain timestamps (Linux 6.13+) a stamp is finer but never earlier than that clock.
_CLOCK_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)
_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)


def _settled_token(fd: int) -> str | None:
    """The token of the file open at ``fd`` once every later change must give another one.

    The caller holds writers off (``_hold_writers``); this waits, still holding them off, until
    the kernel's clock has ticked past the file's ctime, so a change made after the hold ends
    gets a later ctime. None where that cannot be told: times in whole seconds or milliseconds
    (a granularity coarser than the tick), or a ctime ahead of the clock (a clock stepped back).
    """
    st = os.fstat(fd)
    if st.st_ctime_ns % 1_000_000 == 0:
        return None
    deadline = time.monotonic_ns() + RACY_NS
    while time.clock_gettime_ns(_CLOCK_COARSE) <= st.st_ctime_ns:
        if time.monotonic_ns() > deadline:
            return None
        time.sleep(0.0005)
    token = file_token(st)
    return token if file_token(os.fstat(fd)) == token else None


def _write_all(file: BinaryIO, buffers: list[bytes]) -> None:
    """Write ``buffers`` in order with as few ``writev`` calls as the kernel takes, never joining
    them into one copy first (what a request body arrives as: many socket-sized pieces)."""
    file.flush()  # anything a small write left in the file object's buffer goes first
    fd = file.fileno()
    views = [memoryview(b) for b in buffers if b]
    while views:
        count = total = 0  # at most WRITE_PIECE bytes per call (see WRITE_PIECE)
        while (count < len(views) and count < _IOV_MAX
               and (not total or total + len(views[count]) <= WRITE_PIECE)):
            total += len(views[count])
            count += 1
        written = os.writev(fd, views[:count]) if count > 1 else os.write(fd, views[0][:WRITE_PIECE])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

# Written bytes whose write-back to the disk is started (not waited for) as a big file grows,
# so that the fsync of ``commit`` finds little left to write: the upload's last byte waits less.
WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback() -> Callable[[int, int, int], object] | None:
    """Linux's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), or None elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd, offset, nbytes: fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


_writeback = _start_writeback()


class FilesystemWriter:
    """Append writer that batches small writes into large ones before touching the disk."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._written = size  # bytes in the file (flushed)
        self._synced = size  # start of what no write-back was started for yet
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
        pending, size = self._pending, self._pending_size
        self._pending = []
        self._pending_size = 0
        self._written += size
        start = None
        if _writeback is not None and self._written - self._synced >= WRITEBACK_STEP:
            start, self._synced = self._synced, self._written
        await asyncio.to_thread(self._write, pending, start)

    async def direct(self) -> Callable[[memoryview], None]:
        """A blocking write for one thread to call instead of ``write`` until it returns (a
        request body received by a thread, registry/directbody.py): no copy into a pending list,
        no hop to a thread per batch; write-back starts every ``WRITEBACK_STEP`` as before."""
        await self._flush()
        self._file.flush()
        return self._write_now

    def _write_now(self, data: memoryview) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        fd = self._file.fileno()
        write_all(fd, data)  # in small pieces: see storefiles.WRITE_PIECE
        self._size += len(data)
        self._written += len(data)
        if _writeback is not None and self._written - self._synced >= WRITEBACK_STEP:
            _writeback(fd, self._synced, self._written - self._synced)
            self._synced = self._written

    def _write(self, pending: list[bytes], writeback_from: int | None) -> None:
        _write_all(self._file, pending)
        if writeback_from is not None and _writeback is not None:
            _writeback(self._file.fileno(), writeback_from, self._written - writeback_from)

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


class FilesystemLock:
    """A held ``flock`` on a lock file; see the module docstring."""

    def __init__(self, path: str, local: str, fd: int) -> None:
        self._path = path
        self._local = local
        self._fd: int | None = fd

    def _same_file(self) -> bool:
        if self._fd is None:
            return False
        try:
            st = os.stat(self._local)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    async def check(self) -> None:
        if not await asyncio.to_thread(self._same_file):
            raise LockLostError(self._path)

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return

        def unlock() -> None:
            try:  # still holding the flock: nobody can have put another file at the path
                st, mine = os.stat(self._local), os.fstat(fd)
                if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    os.unlink(self._local)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)

        await asyncio.to_thread(unlock)


def _makedirs(path: str) -> None:
    """makedirs that survives a racing delete: ``os.makedirs(exist_ok=True)`` raises
    FileExistsError when a directory on the way is removed between its mkdir and its check."""
    for _ in range(RETRIES):
        try:
            os.makedirs(path, exist_ok=True)
            return
        except FileExistsError:
            if os.path.lexists(path) and not os.path.isdir(path):
                raise  # a file where the directory should be: a real error
    os.makedirs(path, exist_ok=True)


def _retry_missing_dir(fn: Callable[[], T], directory: str) -> T:
    """Run ``fn``, re-creating ``directory`` when another process removed it (or a file of
    ours in it) under us; ``fn`` must be safe to run again."""
    for _ in range(RETRIES):
        try:
            _makedirs(directory)
            return fn()
        except FileNotFoundError:
            continue
    _makedirs(directory)
    return fn()


class _ReplacedDuringRemoval(Exception):
    """A directory was swapped for another (removed and made again) while rmtree walked it."""


def _rmtree(local: str) -> None:
    """Remove a tree that other processes may be removing, or writing into, at the same time."""

    def gone(fn: object, _path: str, exc: object) -> None:
        err = exc[1] if isinstance(exc, tuple) else exc
        if isinstance(err, FileNotFoundError):
            return  # removed by someone else first: what we wanted
        if fn is os.path.islink:
            # rmtree's "Cannot call rmtree on a symbolic link": the directory it stat'ed is not
            # the one it opened. The driver makes no links, so another request removed the
            # directory and a writer made it again in between: walk the new one.
            raise _ReplacedDuringRemoval(_path)
        raise err  # type: ignore[misc]

    for _ in range(RETRIES):
        try:
            shutil.rmtree(local, onerror=gone)  # onexc needs Python 3.12
            return
        except _ReplacedDuringRemoval:
            continue
        except OSError as e:  # a file appeared in a directory being removed: go round again
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    try:
        shutil.rmtree(local, onerror=gone)
    except _ReplacedDuringRemoval:
        raise OSError(errno.EBUSY, "directory kept being replaced while removing it", local) from None


def _hold_writers(fd: int) -> bool | None:
    """Take a read lease on the file open at ``fd``: True when taken, so no file description
    anywhere has it open for writing and, until ``_let_writers`` (or the close of ``fd``), an
    open for writing or a truncation waits; False when a writer has it open; None when this
    filesystem or process cannot take leases (NFS, another owner without CAP_LEASE).

    A lease breaker signals the holder (SIGIO by default, which ends a process): the notice is
    made SIGURG, which is ignored unless handled, and then sent to nobody; the hold is short.
    """
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EBUSY):
            return False
        return None
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETOWN, 0)
    return True


def _let_writers(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def _no_writers(fd: int) -> bool | None:
    """True when no file description anywhere has this file open for writing (the kernel's
    word: a read lease is refused while one exists), False when one does, None when this
    filesystem or process cannot take leases."""
    held = _hold_writers(fd)
    if held:
        _let_writers(fd)
    return held


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

        def write() -> None:
            aside = f"{local}.{uuid.uuid4().hex}.tmp"
            try:
                with open(aside, "wb") as f:
                    f.write(data)
                os.replace(aside, local)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(aside)
                raise

        await asyncio.to_thread(_retry_missing_dir, write, os.path.dirname(local))

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
            f = open(local, "ab" if append else "wb")  # noqa: SIM115 - owned by the writer
            return f, f.seek(0, os.SEEK_END)

        f, size = await asyncio.to_thread(_retry_missing_dir, open_for_write, os.path.dirname(local))
        return FilesystemWriter(f, size)

    async def stat(self, path: str) -> FileInfo:
        local = self.local_path(path)
        try:
            st = await asyncio.to_thread(os.stat, local)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        if stat.S_ISDIR(st.st_mode):
            return FileInfo(path, 0, datetime.fromtimestamp(st.st_mtime, UTC), True)
        version = version_token(st)
        return FileInfo(path, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), False, version,
                        file_token(st) if version is None else None)

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
            os.replace(src_local, dest_local)

        def move() -> None:
            try:
                _retry_missing_dir(rename, os.path.dirname(dest_local))
            except FileNotFoundError:
                raise PathNotFoundError(source) from None

        await asyncio.to_thread(move)

    async def delete(self, path: str) -> None:
        local = self.local_path(path)

        def remove() -> None:
            for _ in range(RETRIES):
                try:
                    if os.path.isdir(local) and not os.path.islink(local):
                        _rmtree(local)  # parts already removed by someone else are no error
                    else:
                        os.remove(local)
                    return
                except FileNotFoundError:
                    raise PathNotFoundError(path) from None
                except IsADirectoryError:
                    continue  # a file replaced by a directory since the check: look again
            raise PathNotFoundError(path)

        await asyncio.to_thread(remove)

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        return None

    async def try_lock(self, path: str) -> FilesystemLock | None:
        local = self.local_path(path)

        def take() -> int | None:
            for _ in range(RETRIES):
                fd = _retry_missing_dir(
                    lambda: os.open(local, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600),
                    os.path.dirname(local))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
                try:
                    st = os.stat(local)
                except FileNotFoundError:
                    st = None
                mine = os.fstat(fd)
                if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                    return fd
                os.close(fd)  # its holder removed that file as we locked it: try the new one
            return None

        fd = await asyncio.to_thread(take)
        return None if fd is None else FilesystemLock(path, local, fd)

    async def stored_digest(self, path: str, algorithm: str) -> str | None:
        return None  # a file keeps no checksum

    async def snapshot(self, source: str, dest: str, algorithm: str, settle: bool = False) -> Snapshot:
        """Rename, proving with a read lease that no writer still has the file open.

        The name ``dest`` is private, so once no open writer remains nothing can change the
        file. Were a writer still open (a lock was broken), the bytes are copied into a new
        file while they are hashed, and the copy is what ``dest`` holds: its digest is returned.
        Where leases are unavailable the callers' lock is the proof (every writer of an upload
        holds it while its file is open).

        The lease is taken before the rename and, with ``settle``, held after it until the
        clock has ticked past the file's ctime (``_settled_token``, about one tick): from the
        lease on, no write can happen before a write would change the returned version token.
        """
        src_local, dest_local = self.local_path(source), self.local_path(dest)

        def rename() -> None:
            try:
                _retry_missing_dir(lambda: os.rename(src_local, dest_local), os.path.dirname(dest_local))
            except FileNotFoundError:
                raise PathNotFoundError(source) from None

        def freeze() -> Snapshot:
            try:
                fd = os.open(src_local, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise PathNotFoundError(source) from None
            try:
                held = _hold_writers(fd)
                try:
                    rename()
                    mine = os.fstat(fd)
                    there = os.stat(dest_local)
                    same = (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)
                    if held is not False and same:
                        version = _settled_token(fd) if settle and held else None
                        return Snapshot(mine.st_size, None, version)
                finally:
                    if held:
                        _let_writers(fd)
                if not same:  # ``source`` was replaced between the open and the rename
                    os.close(fd)
                    fd = -1
                    fd = os.open(dest_local, os.O_RDONLY | os.O_CLOEXEC)
                    if _no_writers(fd) is not False:
                        return Snapshot(os.fstat(fd).st_size)
                hasher = hashlib.new(algorithm)
                aside = f"{dest_local}.{uuid.uuid4().hex}.tmp"
                size = 0
                with open(aside, "xb") as out:
                    while chunk := os.read(fd, READ_CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                os.replace(aside, dest_local)
                return Snapshot(size, hasher.hexdigest())
            finally:
                if fd >= 0:
                    os.close(fd)

        return await asyncio.to_thread(freeze)

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
