"""The build cache: what a step made, found again by what went into it.

A step's key is the SHA-256 of its parent's key (so a change re-runs every step after it) and of
everything that can change its result: the instruction as written, the values of the build
args and environment it sees, its flags, and for ``COPY``/``ADD`` a checksum of the selected
files' content and metadata (never their mtimes, which a checkout changes). The key of a
stage's first step is the base image's manifest digest (``scratch`` for none).

An entry is a small JSON file under ``<store>/buildcache/keys/`` naming the layer the step made
(its blobs stay in the local store). An entry whose blob has since been removed (``pyreg rmi``
or ``prune`` sweep unreferenced blobs) counts as a miss. ``pyreg prune`` removes the whole cache,
``RUN --mount=type=cache`` directories and the remembered context file digests included
(:func:`prune`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyreg.storage.private import make_private_dir

KEY_VERSION = "pyreg-build-cache-v1"


def cache_root(store_root: Path) -> Path:
    return store_root / "buildcache"


def key(parent: str, *parts: Any) -> str:
    """The key of a step: its parent's key and what it depends on, as canonical JSON."""
    text = json.dumps([KEY_VERSION, parent, *parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class BuildCache:
    """Entries by key; ``enabled=False`` (``--no-cache``) finds nothing but still records."""

    def __init__(self, store_root: Path, enabled: bool = True) -> None:
        self.root = cache_root(store_root)
        self.enabled = enabled

    def _path(self, k: str) -> Path:
        return self.root / "keys" / k[:2] / f"{k}.json"

    def get(self, k: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        try:
            data = json.loads(self._path(k).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, k: str, value: dict[str, Any]) -> None:
        path = self._path(k)
        for d in (self.root, path.parent.parent, path.parent):
            if not d.is_dir():
                make_private_dir(d)
        tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}")
        tmp.write_text(json.dumps(value))
        os.rename(tmp, path)

    def mount_dir(self, ident: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        """The persistent directory of ``RUN --mount=type=cache,id=…`` (made on first use with
        the mount's ``mode``, ``uid`` and ``gid``, BuildKit's defaults 0755 and 0:0)."""
        path = self.root / "mounts" / hashlib.sha256(ident.encode()).hexdigest()[:32]
        if not path.is_dir():
            if not path.parent.is_dir():
                if not self.root.is_dir():
                    make_private_dir(self.root)
                make_private_dir(path.parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
                os.chown(path, uid, gid)
                os.chmod(path, mode)
        return path


@contextlib.contextmanager
def _locked(root: Path, exclusive: bool) -> Iterator[None]:
    """Builds hold the cache shared while they run; prune takes it alone, so it waits for them
    (a running build's step dirs and cache mounts live here)."""
    import fcntl

    if not root.is_dir():
        make_private_dir(root)
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def in_use(store_root: Path) -> contextlib.AbstractContextManager[None]:
    """Hold for the length of a build."""
    return _locked(cache_root(store_root), exclusive=False)


def prune(store_root: Path) -> int:
    """Remove the whole build cache (after the builds running now); the number of entries and
    cache mounts removed."""
    root = cache_root(store_root)
    if not root.is_dir():
        return 0
    count = 0
    with _locked(root, exclusive=True):
        for sub in ("keys", "mounts", "steps"):
            d = root / sub
            if d.is_dir():
                count += sum(len(f) for _, _, f in os.walk(d)) if sub == "keys" else len(os.listdir(d))
                shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(root / "filehashes", ignore_errors=True)  # context file digests (hashcache.py)
    return count
