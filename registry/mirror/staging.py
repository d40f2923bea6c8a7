"""A fill's staging file on a local filesystem, written by the upstream thread itself, its page
cache let go of behind the write-back.

Why in the upstream thread: each chunk is then in the file before the loop hears of it, with no
hop to a thread and back per MiB; the loop only sends.

Why let pages go: a fill writes a whole blob once, sequentially, and reads it back at most for a
client that lags far behind. Kept in the page cache, every MiB takes fresh pages; on the VMs this
was measured on, pages the kernel has not used for a while cost ~20x a recycled one to fill (1.2-
1.5 s of system CPU per 256 MiB once the recycled ones run out, against 0.08 s), more than the
whole rest of the fill. So write-back of each 8 MiB is started as soon as it is written, and one
window later a thread of the staging file's own waits for that write-back and drops the pages
(``POSIX_FADV_DONTNEED``): the next windows reuse them. The writer never waits for the disk; when
the disk lags, pages are simply dropped later (or left to the kernel), as without this.
The last windows stay cached for the publish and the next pull.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Final

WINDOW: Final = 8 << 20  # bytes per write-back started, and per drop
_WRITE, _WAIT_BEFORE, _WAIT_AFTER = 2, 1, 4  # sync_file_range's flags (linux/fs.h)


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
        self._previous: int | None = None  # where the window before ``_started`` began
        self._drops: queue.SimpleQueue[tuple[int, int] | None] | None = None
        if _sync_range is not None and hasattr(os, "posix_fadvise"):
            self._drops = queue.SimpleQueue()
            threading.Thread(target=self._dropper, args=(os.dup(self._fd), self._drops),
                             name="pyreg-mirror-drop", daemon=True).start()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            raise StagingError(f"writing the staging file: {e.strerror}") from None
        self.written += len(data)
        if self._drops is not None and self.written - self._started >= WINDOW:
            assert _sync_range is not None
            _sync_range(self._fd, self._started, self.written - self._started, _WRITE)
            if self._previous is not None:  # the window before: its write-back began earlier
                self._drops.put((self._previous, self._started - self._previous))
            self._previous, self._started = self._started, self.written

    def close(self) -> None:
        """Close the file; the drop thread finishes the drops asked for on its own copy of it
        (never waited for: the client's last byte does not wait for the disk)."""
        if self._drops is not None:
            self._drops.put(None)
        os.close(self._fd)

    @staticmethod
    def _dropper(fd: int, drops: queue.SimpleQueue[tuple[int, int] | None]) -> None:
        assert _sync_range is not None
        try:
            while (item := drops.get()) is not None:
                offset, length = item
                if _sync_range(fd, offset, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER) == 0:
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
