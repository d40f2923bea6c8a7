"""A fill's staging file on a local filesystem, written by the upstream thread itself.

Why in the upstream thread: each chunk is then in the file before the loop hears of it, with no
hop to a thread and back per MiB; the loop only sends (with sendfile: registry/mirror/answer.py).

Write-back of each 8 MiB is started as soon as it is written, so the fsync before the publish
finds little left to do. The pages stay in the page cache: the next pull of the blob is sent
from there (dropping them once sent made a first pull ~5% faster on the VM this was measured on
and every later pull 20-30% slower, read from the disk).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Final

from pyreg.storage.storefiles import write_all

WINDOW: Final = 8 << 20  # bytes per write-back started
_WRITE: Final = 2  # sync_file_range's SYNC_FILE_RANGE_WRITE (linux/fs.h): start, don't wait


class StagingError(Exception):
    """Writing the staging file failed (the disk, not upstream); one line."""


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(fd, offset, nbytes, flags), or None elsewhere."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_range = _sync_file_range()


class LocalStaging:
    """Appends to a staging file the driver has created (``path`` on the local disk). Used by one
    thread; ``close`` once. The fsync stays the driver writer's (same file): this only writes."""

    def __init__(self, path: str) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise StagingError(f"cannot open the staging file: {e.strerror}") from None
        self.written = 0
        self._started = 0  # write-back started for bytes before this

    def write(self, data: bytes | memoryview) -> None:
        try:
            write_all(self._fd, data)  # small folios: see storefiles.WRITE_PIECE
        except OSError as e:
            raise StagingError(f"writing the staging file: {e.strerror}") from None
        self.written += len(data)
        if _sync_range is not None and self.written - self._started >= WINDOW:
            _sync_range(self._fd, self._started, self.written - self._started, _WRITE)
            self._started = self.written

    def close(self) -> None:
        os.close(self._fd)
