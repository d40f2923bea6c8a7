"""``pyreg stop``: the stop signal (SIGTERM unless the image says otherwise), SIGKILL after -t."""

from __future__ import annotations

import argparse
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--time", type=float, default=10, help="seconds to wait before SIGKILL (default 10)")
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def run(args: argparse.Namespace, quiet: bool = False) -> int:
    from pyreg.runtime.commands._common import each, kill_and_wait, wait_exit
    from pyreg.runtime.commands.kill import parse_signal, send

    def stop(ref: str, rec: Container) -> bool:
        if rec.status == "running":
            try:
                sig = parse_signal(rec.config.stop_signal or "SIGTERM")
            except ValueError:
                sig = signal.SIGTERM
            if send(rec, sig) and not wait_exit(rec, args.time):
                kill_and_wait(rec)
        if not quiet:
            print(ref)
        return True

    return each(args.containers, stop)
