"""``pyreg rm``: remove stopped containers (running ones too with -f, after SIGKILL)."""

from __future__ import annotations

import argparse
import signal
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="container")


def run(args: argparse.Namespace) -> int:
    from runtime import container
    from runtime.commands._common import find, wait_exit
    from runtime.commands.kill import send

    rc = 0
    for ref in args.containers:
        rec = find(ref)
        if rec is None:
            rc = 1
            continue
        if rec.get("status") == "running":
            if not args.force:
                print(f"pyreg: cannot remove running container {ref}: stop it first or use -f",
                      file=sys.stderr)
                rc = 1
                continue
            send(rec, signal.SIGKILL)
            wait_exit(rec, None)
        container.cleanup(rec, remove=True)
        print(ref)
    return rc
