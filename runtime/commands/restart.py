"""``pyreg restart``: stop (the stop signal, SIGKILL after -t) then start again."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=float, default=10,
                   help="seconds to wait for the stop before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime.commands import stop
    from pyreg.runtime.commands.start import start_one

    rc = 0
    for ref in args.containers:
        stopped = stop.run(argparse.Namespace(time=args.time, containers=[ref]), quiet=True)
        if stopped != 0 or not start_one(ref):
            rc = 1
            continue
        print(ref)
    return rc
