"""``pyreg wait``: block until containers stop, then print each one's exit code (as docker)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import state
    from pyreg.runtime.commands._common import each, wait_exit
    from pyreg.runtime.record import Container

    def wait(ref: str, rec: Container) -> bool:
        if rec.status == "running":
            wait_exit(rec, None)
        cur = state.load(rec.id)
        print(cur.exit_code if cur is not None and cur.exit_code is not None else 0, flush=True)
        return True

    return each(args.containers, wait)
