"""``pyreg start``: run stopped containers again, in the background, with their filesystem as
they left it; ``-a`` stays attached to the output and ends with the container's exit code."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--attach", action="store_true",
                   help="follow the container's output and exit with its exit code")
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def start_one(ref: str) -> bool:
    """Start ``ref`` unless it is running; False (after saying why) when that failed."""
    from pyreg.runtime import container, state
    from pyreg.runtime.commands._common import find
    from pyreg.runtime.errors import ContainerError

    rec = find(ref)
    if rec is None:
        return False
    if rec.status == "running" and state.is_alive(rec):
        return True
    try:
        container.start(rec)
    except (ContainerError, OSError) as e:
        print(f"pyreg: {ref}: {e}", file=sys.stderr)
        return False
    return True


def _log_size(ref: str) -> int:
    import os

    from pyreg.runtime import state

    rec = state.lookup(ref)
    try:
        return os.stat(os.path.join(state.container_dir(rec.id), "log")).st_size if rec else 0
    except OSError:
        return 0


def run(args: argparse.Namespace) -> int:
    offset = _log_size(args.containers[0])
    rc = 0
    for ref in args.containers:
        if not start_one(ref):
            rc = 1
        elif not args.attach:
            print(ref)
    if args.attach and rc == 0 and len(args.containers) == 1:
        from pyreg.runtime.commands.attach import attach

        return attach(args.containers[0], offset)
    return rc
