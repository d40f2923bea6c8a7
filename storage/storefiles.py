"""File primitives the local store's parts share (storage/blobstore.py, imageindex.py,
layerstore.py, composed by localstore.py): one error type, private file creation, flock,
atomic replace, and an rmtree that copes with an image's read-only directories.

Why one module: the three stores live in one directory tree with one permission rule (every
directory 0700, every file at most 0644, never opened through a symlink; storage/private.py
says why), so the rule is written once here rather than in each of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator

from pyreg.storage.private import make_private_dir

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any

    # what the store's parts take for a file name: pathlib costs a pull's start-up ~4 ms of CPU
    # (with urllib.parse and ipaddress), so the pull path passes str and the API takes both
    StrPath = str | os.PathLike[str]

_OPEN_FILE = os.O_CLOEXEC | os.O_NOFOLLOW

# The most one write() call hands the kernel, for a blob's bytes (the registry's filesystem
# driver, its mirror staging and the local store): 32 KiB, as Distribution writes. Linux (6.x, ext4
# and other filesystems with large folios) sizes the page-cache folios a write allocates by the
# length of the call, and a folio of order k can only come from a free block of order >= k. In a
# virtual machine with free page reporting (virtio_balloon, Firecracker), free blocks of order >= 9
# (2 MiB) are handed back to the host, and the first touch of each of their 4 KiB pages costs a
# host fault (~15-20 us here); the smaller free blocks are never reported. Small folios draw on
# that pool of small blocks, which every workload keeps refilling; 256 KiB folios (order 6) draw
# only on blocks of order 6-8, which a few big writes use up, and then split reported ones: a
# 256 MiB push then cost 1.1-1.5 s of CPU instead of 0.09 s (bench/push_cold_bench.py; see
# bench/README.md "Blob push in the cold condition"). Below 32 KiB the syscalls start to cost.
WRITE_PIECE = 32 << 10


def pieces(data: bytes | memoryview) -> Iterator[bytes | memoryview]:
    """``data`` in slices of at most WRITE_PIECE bytes, for a file object's ``write``."""
    if len(data) <= WRITE_PIECE:
        yield data
        return
    view = memoryview(data)
    for off in range(0, len(view), WRITE_PIECE):
        yield view[off:off + WRITE_PIECE]


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``, at most WRITE_PIECE bytes per call."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]):]


class StoreError(Exception):
    """A local-store failure with a message fit for one line on stderr."""


def create(path: StrPath, mode: int, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
    """Open a new file of at most ``mode`` (never through a symlink someone put there)."""
    return os.open(path, flags | os.O_CREAT | _OPEN_FILE, mode)


def atomic_write(path: StrPath, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` so that readers see the old or the new bytes, never a mix; with
    ``sync`` the bytes are on disk before the name points at them (a crash cannot leave the
    name on an empty file). ``sync=False`` is for files whose loss costs nothing and whose
    reader rewrites them when it finds them empty (a new store's ``oci-layout``)."""
    head, name = os.path.split(os.fspath(path))
    tmp = os.path.join(head, f".{name}.{os.urandom(16).hex()}")
    with os.fdopen(create(tmp, 0o644, os.O_WRONLY | os.O_EXCL), "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)


def filled(path: StrPath) -> bool:
    """``path`` is there and not empty (what a crash may leave of a file written unsynced)."""
    try:
        return os.stat(path).st_size > 0
    except (FileNotFoundError, NotADirectoryError):
        return False


@contextlib.contextmanager
def flock(path: StrPath, exclusive: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (made 0600 in a private directory) across processes."""
    parent = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(parent):
        make_private_dir(parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FILE, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def rmtree(path: StrPath) -> None:
    """rmtree that also removes read-only directories an image may contain."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
        func(p)

    if os.path.islink(path) or os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    elif os.path.exists(path):
        import shutil  # not on `pyreg run`'s start-up path

        shutil.rmtree(path, onerror=onerror)
