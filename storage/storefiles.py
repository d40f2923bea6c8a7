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
