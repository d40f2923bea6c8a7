"""``pyreg logs``: what a detached container wrote to stdout and stderr."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--follow", action="store_true", help="keep following until the container exits")
    p.add_argument("container")


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
