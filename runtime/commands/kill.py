"""``pyreg kill``: send a signal (default SIGKILL) to a container's PID 1."""

from __future__ import annotations

import argparse
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container


def parse_signal(text: str) -> int:
    t = text.upper()
    if t.isdigit():
        return int(t)
    if not t.startswith("SIG"):
        t = "SIG" + t
    try:
        return int(signal.Signals[t])
    except KeyError:
        raise ValueError(f"invalid signal: {text}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def send(rec: Container, sig: int) -> bool:
    import os

    from pyreg.runtime import state

    if rec.status != "running" or not state.is_alive(rec):
        return False
    from pyreg.runtime.container import STOP_MARK

    with open(os.path.join(state.container_dir(rec.id), STOP_MARK), "w"):  # ends a --restart policy
        pass
    try:
        os.kill(int(rec.pid or 0), sig)
    except ProcessLookupError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime.commands._common import each

    try:
        sig = parse_signal(args.signal)
    except ValueError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return 1

    def kill(ref: str, rec: Container) -> bool:
        if not send(rec, sig):
            print(f"pyreg: container {ref} is not running", file=sys.stderr)
            return False
        print(ref)
        return True

    return each(args.containers, kill)
