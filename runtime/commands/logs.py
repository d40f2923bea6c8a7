"""``pyreg logs``: what a detached container wrote to stdout and stderr."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep following until the container exits")
    p.add_argument("-n", "--tail", default="all", metavar="N", type=_tail,
                   help="only the last N lines (default all)")
    p.add_argument("container", help="container name or id")


def _seek_tail(fd: int, lines: int) -> None:
    """Position ``fd`` at the start of its last ``lines`` lines (reading backwards in blocks)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    pos, seen = end, 0
    if lines <= 0:
        return
    last = os.pread(fd, 1, end - 1) if end else b""
    want = lines + (1 if last == b"\n" else 0)  # a final newline ends the last line, starts none
    while pos > 0:
        step = min(1 << 16, pos)
        block = os.pread(fd, step, pos - step)
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                seen += 1
                if seen == want:
                    os.lseek(fd, pos - step + i + 1, os.SEEK_SET)
                    return
        pos -= step
    os.lseek(fd, 0, os.SEEK_SET)


def _tail(text: str) -> str:
    if text != "all" and not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
        raise argparse.ArgumentTypeError(f"invalid --tail {text!r}: a number of lines or 'all'")
    return text


def run(args: argparse.Namespace) -> int:
    from runtime import state
    from runtime.commands._common import find

    rec = find(args.container)
    if rec is None:
        return 1
    path = os.path.join(state.container_dir(rec.id), "log")
    out = sys.stdout.buffer
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if rec.detached:
            return 0
        print(f"pyreg: container {rec.name} ran in the foreground: no logs kept", file=sys.stderr)
        return 1
    try:
        if args.tail != "all" and int(args.tail) >= 0:  # docker: a negative count is all
            _seek_tail(fd, int(args.tail))
        while True:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not args.follow:
                break
            cur = state.load(rec.id)
            if cur is None or cur.status != "running":
                while chunk := os.read(fd, 1 << 16):  # what was written just before the end
                    out.write(chunk)
                break
            time.sleep(0.05)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)
        out.flush()
    return 0
