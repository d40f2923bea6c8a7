"""Content digests of context files, remembered by their stat, so a rebuild does not re-read files
that did not change (BuildKit keeps such a cache of its context too; git's index does the same).

A digest is found again only by the file's device, inode, size, mtime and ctime, all in
nanoseconds. Any write to a file changes its ctime, and nobody can set a ctime back (``touch -d``
and ``utime`` set mtime and atime only), so a file with the same five values has not been written
since — except for git's "racy" case: a write within the same clock tick as the hashing can keep
every value. So a digest is remembered only when the file had been left alone for
``RACY_NS`` before it was hashed, and only when the stat after reading equals the stat before
(nothing wrote while it was read). The file lives in the store's build cache (root-only), one per
context directory; ``pyreg prune`` removes it with the rest of the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

RACY_NS = 2_000_000_000  # coarser than any local filesystem's timestamp tick
LIMIT = 100_000          # entries kept; past it only this build's are


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class FileHashes:
    """sha256 digests of open regular files; with a ``path``, remembered across builds."""

    def __init__(self, path: Path | None = None, trust: bool = True, racy_ns: int = RACY_NS) -> None:
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
        before = os.fstat(fd)
        key = _key(before)
        hit = self.known.get(key) or self.seen.get(key)
        if hit is not None:
            return bytes.fromhex(hit)
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(fd, [view], offset):
            h.update(view[:n])
            offset += n
        after = os.fstat(fd)
        if (self.path is not None and _key(after) == key
                and time.time_ns() - max(after.st_mtime_ns, after.st_ctime_ns) > self.racy_ns):
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
