"""The storage-driver interface: a small async key/blob store with resumable writers.

Modelled on Distribution's StorageDriver: paths are absolute, '/'-separated, and a driver knows
nothing of registries. The registry's layout, upload sessions and garbage collection are built
on top of these calls only, so any driver that passes ``tests/driver_suite.py`` can carry it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from pyreg.storage.errors import InvalidPathError

# Same rule as Distribution: absolute, no empty or dot components, a conservative alphabet.
_PATH = re.compile(r"^(/[A-Za-z0-9._:=+-]+)+$")


def check_path(path: str) -> str:
    """Return ``path`` if it is a valid driver path, else raise InvalidPathError."""
    if path == "/":
        return path
    if not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise InvalidPathError(path)
    return path


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``stat`` (and ``walk``) know of a path.

    ``version`` is a cheap token of the stored object as it is now, from the stat alone: any
    write to it or replacement of it gives another token (filesystem: device, inode, size,
    mtime and ctime in nanoseconds; S3: ETag, VersionId, size, LastModified). None for
    directories, from ``walk``, and whenever the driver cannot yet tell this version from a
    later one (a file changed within the filesystem's timestamp granularity). The registry
    trusts a blob it verified while its token is unchanged (registry/layout.py).

    ``unsettled`` is, while ``version`` is withheld for that reason, the token the file has now:
    good for comparing with a token that was established with no writer possible until any
    later change would give another one (``Snapshot.version``), never to be remembered as the
    version whose bytes a read saw (a write in the same tick would leave it unchanged).
    """

    path: str
    size: int
    modtime: datetime
    is_dir: bool
    version: str | None = None
    unsettled: str | None = None


@runtime_checkable
class FileWriter(Protocol):
    """An append-only writer to one path. Nothing is final until ``commit``.

    ``size`` counts every byte the path holds, including what earlier writers appended, so
    an upload can be resumed by a new writer (another process, another replica) with
    ``append=True``.
    """

    @property
    def size(self) -> int: ...

    async def write(self, data: bytes) -> int: ...

    async def close(self) -> None:
        """Flush and release; what was written stays and can be appended to later."""

    async def cancel(self) -> None:
        """Drop everything this path holds."""

    async def commit(self) -> None:
        """Make the written content durable and readable."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What ``Driver.snapshot`` froze: its size and, when the driver computed it while moving
    the bytes (S3's server-side checksum of the copy), their hex digest; else None.

    ``version`` (asked for with ``settle=True``) is ``dest``'s FileInfo.version token as frozen,
    taken while no writer could change it and held so until any later change gives another
    token, so it names exactly the bytes frozen even when a stat now would call it unsettled;
    None when the driver cannot say (the caller then stats ``dest``).
    """

    size: int
    hexdigest: str | None = None
    version: str | None = None


@runtime_checkable
class Lock(Protocol):
    """An exclusive lock on one path, held across processes and replicas sharing the storage."""

    async def check(self) -> None:
        """Raise LockLostError unless this lock is still held (and, for a lease, renew it now)."""

    async def release(self) -> None:
        """Give the lock up; idempotent, and never removes a lock that another holder took over."""


@runtime_checkable
class Driver(Protocol):
    name: str

    async def get_content(self, path: str) -> bytes:
        """The whole content of a small file (links, manifests); raises PathNotFoundError."""

    async def put_content(self, path: str, data: bytes) -> None:
        """Replace a small file atomically: readers see the old or the new bytes, never a mix."""

    def reader(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (all when None) from ``offset`` in large chunks."""

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        """A writer positioned at the end of ``path`` (append) or truncating it."""

    async def stat(self, path: str) -> FileInfo:
        """Size, kind and version token (see FileInfo) of a path; raises PathNotFoundError."""

    async def list(self, path: str) -> list[str]:
        """Full paths of the direct children of a directory; raises PathNotFoundError."""

    async def move(self, source: str, dest: str) -> None:
        """Atomically put ``source`` at ``dest``, replacing what was there."""

    async def delete(self, path: str) -> None:
        """Remove a file or a whole tree; raises PathNotFoundError when nothing is there."""

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL the client can fetch the content from directly, or None."""

    def walk(self, path: str) -> AsyncIterator[FileInfo]:
        """Every file and directory below ``path`` (depth first, order unspecified)."""

    async def try_lock(self, path: str) -> Lock | None:
        """Take the exclusive lock named ``path`` at once, or None when someone else holds it.

        Held across every process and replica on this storage; a holder that dies (SIGKILL)
        must not keep it forever. ``path`` is a lock name, not content: it is not listed or
        walked as a file by callers, and ``release`` removes it.
        """

    async def snapshot(self, source: str, dest: str, algorithm: str, settle: bool = False) -> Snapshot:
        """Move the committed content of ``source`` to the new private path ``dest`` so that no
        writer of ``source`` (one racing this call, or one still open) can change ``dest``
        afterwards, and return its size (and digest when the move computed it; and with
        ``settle`` its version token, see Snapshot).

        Upload commits verify exactly the bytes at ``dest``, then publish ``dest``: what was
        verified is what is published. Raises PathNotFoundError when ``source`` is missing.
        """

    async def stored_digest(self, path: str, algorithm: str) -> str | None:
        """The hex digest of ``path`` that the store itself computed and keeps with the object
        (S3's full-object SHA-256 checksum), or None: never computed here by reading it."""
