"""Where each blob of the local store came from, so a push can mount instead of upload.

A registry that already holds a blob in another repository takes it by a cross-repository mount
(``POST …/blobs/uploads/?mount=<digest>&from=<repository>``) with no bytes sent. To know which
repository to name, every pull and push records, per blob, the registry repositories it was seen
in: a sidecar file ``<store>/origins/<algorithm>/<hex>``, one ``registry/repository`` per line,
newest first, at most ``KEEP`` lines. It lives beside ``blobs/`` rather than in ``index.json``
because it is about blobs, not images (an image tagged locally under a new name keeps its blobs'
origins), and a lost or stale record costs nothing but a refused mount and an upload.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

from pyreg.storage.digest import Digest
from pyreg.storage.manifest import Descriptor
from pyreg.storage.mediatypes import MANIFESTS
from pyreg.storage.private import make_private_dir

TYPE_CHECKING = False  # (a pull's start-up imports neither typing nor pathlib)
if TYPE_CHECKING:
    from pyreg.storage.storefiles import StrPath

KEEP = 8
DIRNAME = "origins"


def _path(root: StrPath, digest: Digest) -> str:
    return os.path.join(root, DIRNAME, digest.algorithm, digest.hex)


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(64 << 10)
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError, PermissionError):
        return []
    return [line for line in text.splitlines() if line and "/" in line]


def lookup(root: StrPath, digest: Digest, registry: str) -> list[str]:
    """The repositories of ``registry`` that ``digest`` was seen in, newest first."""
    prefix = f"{registry}/"
    return [line[len(prefix):] for line in _read(_path(root, digest)) if line.startswith(prefix)]


def record(root: StrPath, descriptors: Iterable[Descriptor], registry: str, repository: str) -> None:
    """Note that ``registry/repository`` holds these blobs. Best effort: a store that cannot be
    written here (read-only, full) only loses the mount hint."""
    entry = f"{registry}/{repository}"
    for desc in descriptors:
        if desc.media_type in MANIFESTS:
            continue  # a registry mounts blobs only
        path = _path(root, desc.digest)
        lines = _read(path)
        if lines[:1] == [entry]:
            continue
        lines = [entry, *(line for line in lines if line != entry)][:KEEP]
        with contextlib.suppress(OSError):
            head, name = os.path.split(path)
            if not os.path.isdir(head):
                make_private_dir(head)
            tmp = os.path.join(head, f".{name}.{os.getpid()}.{os.urandom(4).hex()}")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in lines))
            os.replace(tmp, path)


def sweep(root: StrPath, has_blob: Callable[[Digest], bool]) -> int:
    """Forget the origins of blobs the store no longer holds (after ``rmi`` / ``prune``); returns
    how many records went. A record left behind would only cost a refused mount, but the
    directory would grow with every image ever pulled."""
    from pathlib import Path

    removed = 0
    base = Path(root, DIRNAME)
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for algorithm_dir in base.iterdir():
            for path in algorithm_dir.iterdir():
                try:
                    digest = Digest.parse(f"{algorithm_dir.name}:{path.name}")
                except ValueError:
                    digest = None  # a temporary file of a record being written, or junk
                if digest is None or not has_blob(digest):
                    if digest is None and path.name.startswith("."):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed += 1
    return removed
