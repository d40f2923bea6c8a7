"""A regular file's version from its stat: the one rule for "has this file changed since?".

Used wherever a file's content is trusted again without reading it: the registry's verified blobs
(storage/filesystem.py's ``FileInfo.version``, registry/zerocopy.py) and the build's remembered
context digests (runtime/build/hashcache.py). It imports only ``os`` and ``time``: the build's
cached path loads it without the filesystem driver (asyncio, ctypes, hashlib).

A file's ctime is the kernel's coarse clock (one tick, at most 10 ms) on the usual Linux file
systems, and whole seconds on some (ext3's small inodes, FAT, some NFS servers): a write within the
same tick as a stat leaves every time unchanged (git's "racy" case). A version is given only for
files whose last change is older than this, so any later write changes the token.
"""

from __future__ import annotations

import os
import time

RACY_NS = 50_000_000
RACY_COARSE_NS = 2_000_000_000


def version_token(st: os.stat_result, now_ns: int | None = None, racy_ns: int | None = None) -> str | None:
    """The version of a regular file from its stat; None while it is "racy" (changed so recently
    that a write in the same clock tick would leave the same times; see RACY_NS). ``racy_ns``
    replaces both windows (tests: 0).

    ctime cannot be set by anyone (utime sets only atime and mtime), and any write, truncation,
    chmod or rename of the inode moves it; a replacement is another inode (or, when an inode
    number is reused, another ctime).
    """
    now = time.time_ns() if now_ns is None else now_ns
    if racy_ns is None:
        racy_ns = RACY_COARSE_NS if st.st_ctime_ns % 1_000_000_000 == 0 else RACY_NS
    if now - st.st_ctime_ns < racy_ns:
        return None
    return file_token(st)


def file_token(st: os.stat_result) -> str:
    """The token of the file as this stat saw it, settled or not (``version_token`` says when
    it may stand for the bytes a read saw; FileInfo.unsettled when it may only be compared)."""
    return f"{st.st_dev:x}.{st.st_ino:x}.{st.st_size:x}.{st.st_mtime_ns:x}.{st.st_ctime_ns:x}"
