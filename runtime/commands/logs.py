"""``pyreg logs``: what a detached container wrote to stdout and stderr.

As docker: ``--tail N`` (of what ``--since``/``--until`` leave), ``--since``/``--until`` (RFC 3339
times, Unix timestamps or durations before now: ``10m``), ``-t/--timestamps`` (each line's arrival,
RFC 3339 in UTC), ``-f`` (until the container exits, or with ``--until`` until that time). Line
times come from ``log.times`` (runtime/logfile.py); lines logged before pyreg kept times have none."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import BinaryIO

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.logfile import Times


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep following until the container exits (or until --until's time)")
    p.add_argument("-n", "--tail", default="all", metavar="N", type=_tail,
                   help="only the last N lines (default all)")
    p.add_argument("--since", metavar="TIME", type=_time,
                   help="only lines since TIME: 2024-05-01T10:00:00Z, a Unix timestamp, or 10m (ago)")
    p.add_argument("--until", metavar="TIME", type=_time,
                   help="only lines until TIME (same forms as --since)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="prefix each line with when it was written (RFC 3339, UTC)")
    p.add_argument("container", help="container name or id")


def _tail(text: str) -> str:
    if text != "all" and not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
        raise argparse.ArgumentTypeError(f"invalid --tail {text!r}: a number of lines or 'all'")
    return text


def _time(text: str) -> int:
    from pyreg.storage.units import parse_time

    try:
        return parse_time(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _tail_start(fd: int, lo: int, hi: int, lines: int) -> int:
    """The offset where the last ``lines`` lines of ``[lo, hi)`` begin (reading backwards)."""
    if lines <= 0:
        return hi
    last = os.pread(fd, 1, hi - 1) if hi > lo else b""
    want = lines + (1 if last == b"\n" else 0)  # a final newline ends the last line, starts none
    pos, seen = hi, 0
    while pos > lo:
        step = min(1 << 16, pos - lo)
        block = os.pread(fd, step, pos - step)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                seen += 1
                if seen == want:
                    return pos - step + i + 1
        pos -= step
    return lo


class _Writer:
    """Copies log bytes to stdout, with each line's time in front when asked."""

    def __init__(self, out: BinaryIO, times: Times | None, start: int, fd: int) -> None:
        self.out = out
        self.times = times
        self.pos = start
        self.at_start = True
        self.fd = fd
        self.known = 0  # every line starting below this offset has its record read, if it has one

    def _time(self, offset: int) -> int | None:
        assert self.times is not None
        ns = self.times.at(offset)
        if ns is None and offset >= self.known:  # written since the last look: its record came first
            self.known = os.fstat(self.fd).st_size
            self.times.refresh()
            ns = self.times.at(offset)
        return ns

    def write(self, chunk: bytes) -> None:
        write = self.out.write
        if self.times is None:
            write(chunk)
            self.pos += len(chunk)
            return
        from pyreg.storage.units import format_time_ns

        i = 0
        while i < len(chunk):
            if self.at_start:
                ns = self._time(self.pos + i)
                if ns is not None:
                    write(format_time_ns(ns).encode() + b" ")
            nl = chunk.find(b"\n", i)
            end = len(chunk) if nl == -1 else nl + 1
            write(chunk[i:end])
            self.at_start = nl != -1
            i = end
        self.pos += len(chunk)


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import state
    from pyreg.runtime.commands._common import find
    from pyreg.runtime.logfile import LOG, Times

    rec = find(args.container)
    if rec is None:
        return 1
    cdir = state.container_dir(rec.id)
    out = sys.stdout.buffer
    try:
        fd = os.open(os.path.join(cdir, LOG), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if rec.detached:
            return 0
        print(f"pyreg: container {rec.name} ran in the foreground: no logs kept", file=sys.stderr)
        return 1
    times = Times(cdir) if (args.timestamps or args.since is not None or args.until is not None) else None
    try:
        size = os.fstat(fd).st_size
        lo, hi = 0, size
        if times is not None and args.since is not None:
            found = times.first_after(args.since, inclusive=True)
            lo = min(found, size) if found is not None else size
        if times is not None and args.until is not None:
            found = times.first_after(args.until, inclusive=False)
            hi = max(lo, min(found, size)) if found is not None else size
        if args.tail != "all" and int(args.tail) >= 0:  # docker: a negative count is all
            lo = _tail_start(fd, lo, hi, int(args.tail))
        writer = _Writer(out, times if args.timestamps else None, lo, fd)
        pos = lo
        while pos < hi:
            chunk = os.pread(fd, min(1 << 16, hi - pos), pos)
            if not chunk:
                break
            writer.write(chunk)
            pos += len(chunk)
        out.flush()
        if args.follow and (args.until is None or args.until > time.time_ns()):
            _follow(fd, pos, writer, rec.id, args.until, times)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)
        with contextlib.suppress(BrokenPipeError):
            out.flush()
    return 0


def _follow(fd: int, pos: int, writer: _Writer, cid: str, until: int | None = None,
            times: Times | None = None) -> None:
    """What comes after ``pos`` until the container is no longer running, or (``until``, docker's
    ``-f --until``) until that time: then the lines that came after it are cut off and it stops.
    A line's time record is written before the line, so a chunk read is cut exactly."""
    from pyreg.runtime import state

    def emit(chunk: bytes) -> bool:
        """Write ``chunk`` (read at ``pos``) up to ``until``; False once past it."""
        nonlocal pos
        if until is not None and times is not None:
            times.refresh()
            cut = times.first_after(until, inclusive=False)
            if cut is not None and cut < pos + len(chunk):
                writer.write(chunk[:max(0, cut - pos)])
                return False
        writer.write(chunk)
        pos += len(chunk)
        return True

    while True:
        chunk = os.pread(fd, 1 << 16, pos)
        if chunk:
            if not emit(chunk):
                return
            continue
        writer.out.flush()
        cur = state.load(cid)
        if cur is None or cur.status != "running":
            while chunk := os.pread(fd, 1 << 16, pos):  # what was written just before the end
                if not emit(chunk):
                    return
            return
        if until is not None:
            left = until - time.time_ns()
            if left <= 0:
                while chunk := os.pread(fd, 1 << 16, pos):  # what came just before the time
                    if not emit(chunk):
                        return
                return
            time.sleep(min(0.05, left / 1e9))
        else:
            time.sleep(0.05)
