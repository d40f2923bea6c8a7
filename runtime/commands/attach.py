"""``pyreg attach``: follow a running detached container's output from now until it exits, then
exit with its exit code (docker's attach without stdin: the detached container's stdin is
/dev/null)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", help="container name or id")


def attach(ref: str, offset: int | None = None) -> int:
    """Copy the log from ``offset`` (default: its current end) until the container exits."""
    from pyreg.runtime import state
    from pyreg.runtime.commands._common import find

    rec = find(ref)
    if rec is None:
        return 1
    if rec.status != "running" and offset is None:  # start -a: it may have ended already
        print("pyreg: you cannot attach to a stopped container, start it first", file=sys.stderr)
        return 1
    try:
        fd = os.open(os.path.join(state.container_dir(rec.id), "log"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        print(f"pyreg: container {rec.name} keeps no log to attach to", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    try:
        os.lseek(fd, offset or 0, os.SEEK_SET if offset is not None else os.SEEK_END)
        while True:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            cur = state.load(rec.id)
            if cur is None or cur.status != "running" or cur.pid != rec.pid:
                while chunk := os.read(fd, 1 << 16):
                    out.write(chunk)
                out.flush()
                return int(cur.exit_code or 0) if cur is not None else 0
            time.sleep(0.05)
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    return attach(args.container)
