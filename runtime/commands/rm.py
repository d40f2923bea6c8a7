"""``pyreg rm``: remove stopped containers (running ones too with -f, after SIGKILL)."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="container", help="container names or ids")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import container
    from pyreg.runtime.commands import _pslist
    from pyreg.runtime.commands._common import each, kill_and_wait

    def remove(ref: str, rec: Container) -> bool:
        if _pslist.is_build(rec):  # a running build's step: not the user's to remove
            print(f"pyreg: no such container: {ref}", file=sys.stderr)
            return False
        if rec.status == "running":
            if not args.force:
                print(f"pyreg: cannot remove running container {ref}: stop it first or use -f",
                      file=sys.stderr)
                return False
            kill_and_wait(rec)
        container.cleanup(rec, remove=True)
        print(ref)
        return True

    return each(args.containers, remove)
