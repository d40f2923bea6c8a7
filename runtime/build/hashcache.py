"""Content digests of context files, remembered by their stat, so a rebuild does not re-read files
that did not change (BuildKit keeps such a cache of its context too; git's index does the same).

A digest is found again only by the file's version (storage/fileversion.py, the rule the
registry's verified blobs use too): device, inode, size, mtime and ctime, all in nanoseconds. Any
write to a file changes its ctime, and nobody can set a ctime back (``touch -d`` and ``utime`` set
mtime and atime only), so a file with the same five values has not been written since — except for
git's "racy" case: a write within the same clock tick as the hashing can keep every value. So a
file changed within that window (``RACY_NS``, or ``RACY_COARSE_NS`` on a file system with whole-
second times) has no version and its digest is not remembered, and a digest is remembered only
when the version after reading equals the one before (nothing wrote while it was read). The file
lives in the store's build cache (root-only), one per context directory; ``pyreg prune`` removes it
with the rest of the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from pyreg.storage.fileversion import version_token

LIMIT = 100_000          # entries kept; past it only this build's are


class FileHashes:
    """sha256 digests of open regular files; with a ``path``, remembered across builds.
    ``racy_ns`` replaces the racy windows of ``version_token`` (tests: 0)."""

    def __init__(self, path: Path | None = None, trust: bool = True, racy_ns: int | None = None) -> None:
        self.path = path
        self.racy_ns = racy_ns
        self.known: dict[str, str] = {}
        self.seen: dict[str, str] = {}
        if path is not None and trust:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if isinstance(data, dict):
                    self.known = {k: v for k, v in data.items() if isinstance(v, str) and len(v) == 64}

    def digest(self, fd: int) -> bytes:
        """The sha256 digest of the regular file open on ``fd`` (read from its start)."""
        key = version_token(os.fstat(fd), racy_ns=self.racy_ns)
        hit = None if key is None else self.known.get(key) or self.seen.get(key)
        if hit is not None:
            return bytes.fromhex(hit)
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(fd, [view], offset):
            h.update(view[:n])
            offset += n
        if (self.path is not None and key is not None
                and version_token(os.fstat(fd), racy_ns=self.racy_ns) == key):
            self.seen[key] = h.hexdigest()
        return h.digest()

    def save(self) -> None:
        """Write what this build learnt (nothing to do when every file was known)."""
        if self.path is None or not self.seen.keys() - self.known.keys():
            return
        entries = {**self.known, **self.seen}
        if len(entries) > LIMIT:
            entries = self.seen
        tmp = self.path.with_name(f".{self.path.name}.{os.urandom(8).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, separators=(",", ":"))
            os.rename(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def for_context(cache_root: Path, context_root: Path, trust: bool = True) -> FileHashes:
    """The remembered digests of the context directory ``context_root`` (by its real path)."""
    from pyreg.storage.private import make_private_dir

    d = cache_root / "filehashes"
    if not d.is_dir():
        make_private_dir(d)
    name = hashlib.sha256(os.path.realpath(context_root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return FileHashes(d / f"{name}.json", trust)
