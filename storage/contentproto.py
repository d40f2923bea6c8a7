"""The protocols of ``storage/content.py`` and ``storage/digest.py``: what a content store, its
writer, a copy's progress and a hasher offer. Apart from those two because ``typing``'s Protocol
costs milliseconds of every pull's start-up, where only their functions and classes run; both
modules name these lazily (a module ``__getattr__``), so imports from them keep working.
"""

from __future__ import annotations

import contextlib
from typing import IO, TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pyreg.storage.content import Info
    from pyreg.storage.digest import Digest
    from pyreg.storage.manifest import Descriptor


class Writer(Protocol):
    """An open write of one blob; nothing is visible under the digest until ``commit``."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> object:
        """Verify the expected size and digest, then make the blob visible (raise and keep
        nothing on a mismatch)."""
        ...

    def abort(self) -> None: ...


class ContentStore(Protocol):
    def info(self, digest: Digest) -> Info | None:
        """The blob's size, or None when the store lacks it."""
        ...

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        """The blob's bytes from ``offset`` (a range read); ContentNotFound when absent."""
        ...

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractContextManager[Writer]:
        """A writer expecting exactly ``size`` bytes hashing to ``digest``; leaving the context
        without ``commit`` aborts."""
        ...

    def walk(self) -> Iterator[Info]:
        """Every blob the store holds."""
        ...

    def delete(self, digest: Digest) -> bool:
        """Remove a blob; False when it was not there."""
        ...


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> Hasher: ...


@runtime_checkable
class ManifestStore(Protocol):
    """A store that keeps manifests apart from blobs and names them by tag (a registry: its
    manifests are not blobs, and ``GET /blobs/<manifest digest>`` need not work). Stores without
    these calls keep manifests as blobs, and tags (an image index) elsewhere."""

    def fetch_manifest(self, desc: Descriptor) -> bytes | None:
        """The manifest's bytes, verified against ``desc``; None when the store lacks it."""
        ...

    def has_manifest(self, desc: Descriptor) -> bool: ...

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None = None) -> None:
        """Store a manifest under its digest, or under ``tag`` (which names it too)."""
        ...


@runtime_checkable
class Mounter(Protocol):
    """A store that can take a blob it already holds elsewhere without its bytes (a registry's
    cross-repository mount)."""

    def mount(self, desc: Descriptor, source: str) -> bool:
        """Link the blob from ``source`` (a repository); False when the store would not."""
        ...


class Progress(Protocol):
    """What a copy reports: ``task(label, total)`` starts a bar and returns its advance callback,
    ``finish(label, status)`` ends it with a word (client/progress.py implements it)."""

    def task(self, label: str, total: int | None) -> Callable[[int], None]: ...

    def finish(self, label: str, status: str) -> None: ...
