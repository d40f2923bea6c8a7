"""A detached container's log: its output as written (``log``) and when each line came (``log.times``).

``log`` stays the raw byte stream (attach, ``start -a`` and inspect's LogPath read it by offset,
as before). Beside it, ``log.times`` holds one 16-byte record per line start: the line's byte
offset in ``log`` and the time it arrived (nanoseconds since the epoch, little-endian u64 each).
The container's stdout/stderr go through a pipe to a small relay process forked by the supervisor
(``Relay``; a process, not a thread: after ``unshare(CLONE_NEWPID)`` the supervisor can start no
thread), which writes both; a record is written before its bytes, so a reader never sees a line
without its time. The supervisor waits for the relay before it records the container as exited. A
container logged before this file existed has lines before the first record: they have no time
(``--timestamps`` prints them bare, ``--since`` leaves them out, ``--until`` keeps them).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import time

LOG = "log"
TIMES = "log.times"
_RECORD = struct.Struct("<QQ")


class Relay:
    """Copies a pipe into the log, recording each line's arrival, in a child process."""

    def __init__(self, cdir: str, log_fd: int) -> None:
        self.log_fd = log_fd
        self.times_fd = os.open(os.path.join(cdir, TIMES), os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                | os.O_CLOEXEC, 0o640)
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        self.pid = 0

    def start(self) -> None:
        """Fork the relay; it keeps only its three fds (a kept ``ready`` pipe would hold up
        ``pyreg run -d``), and ends at the end of the container's output."""
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                keep = {0, 1, 2, self.read_fd, self.log_fd, self.times_fd}
                for name in os.listdir("/proc/self/fd"):
                    if int(name) not in keep:
                        with contextlib.suppress(OSError):
                            os.close(int(name))
                self._run()
                code = 0
            finally:
                os._exit(code)
        for fd in (self.read_fd, self.times_fd, self.log_fd):
            os.close(fd)

    def join(self) -> None:
        """Wait for the end of the container's output (every writer closed)."""
        while self.pid:
            try:
                os.waitpid(self.pid, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                pass
            self.pid = 0

    def _run(self) -> None:
        end = os.lseek(self.log_fd, 0, os.SEEK_END)
        at_start = end == 0 or _last_byte(self.log_fd, end) == b"\n"
        while True:
            try:
                data = os.read(self.read_fd, 1 << 16)
            except InterruptedError:
                continue
            if not data:
                return
            now = time.time_ns()
            offset = os.lseek(self.log_fd, 0, os.SEEK_END)
            starts = [offset] if at_start else []
            i = data.find(b"\n")
            while i != -1 and i + 1 < len(data):
                starts.append(offset + i + 1)
                i = data.find(b"\n", i + 1)
            at_start = data.endswith(b"\n")
            if starts:
                _write_all(self.times_fd, b"".join(_RECORD.pack(s, now) for s in starts))
            _write_all(self.log_fd, data)


def _last_byte(log_fd: int, end: int) -> bytes:
    """The log's last byte (the write-only fd cannot read it: open the file again)."""
    try:
        with open(f"/proc/self/fd/{log_fd}", "rb") as f:
            f.seek(end - 1)
            return f.read(1)
    except OSError:
        return b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Times:
    """``log.times`` as read: line-start offsets and their times, re-read as it grows."""

    def __init__(self, cdir: str) -> None:
        self.path = os.path.join(cdir, TIMES)
        self.offsets: list[int] = []
        self.stamps: list[int] = []
        self._read = 0
        self.refresh()

    def refresh(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return
        whole = len(data) - len(data) % _RECORD.size
        for off, ns in _RECORD.iter_unpack(data[:whole]):
            self.offsets.append(off)
            self.stamps.append(ns)
        self._read += whole

    def at(self, offset: int) -> int | None:
        """The time of the line starting at ``offset``; None for a line logged before times were."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.stamps[i] if i >= 0 and self.offsets[i] == offset else None

    def first_after(self, ns: int, inclusive: bool) -> int | None:
        """The offset of the first line that came at ``ns`` or later (after, if not ``inclusive``);
        None when every timed line came before."""
        for off, t in zip(self.offsets, self.stamps, strict=True):  # times only grow: scan is fine
            if t > ns or (inclusive and t == ns):
                return off
        return None
