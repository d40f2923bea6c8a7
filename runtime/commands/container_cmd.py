"""``pyreg container prune``: remove every stopped container (docker's ``container prune``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    prune = sub.add_parser("prune", help="remove all stopped containers",
                           description="remove all stopped containers")
    prune.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    prune.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                       help="only containers matching (as ps --filter: name=, id=, ancestor=, label=)")


def _size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import container, state
    from pyreg.runtime.commands import _pslist
    from pyreg.runtime.usage import human

    filters = _pslist.filters_or_complain(args.filter)
    if filters is None:
        return 1
    if not args.force:
        print("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ",
              end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    print("Deleted Containers:")
    reclaimed = 0
    for rec in state.all_containers():
        if rec.status == "running" or _pslist.is_build(rec) or not _pslist.matches(rec, filters):
            continue
        reclaimed += _size(os.path.join(state.container_dir(rec.id), "upper"))
        container.cleanup(rec, remove=True)
        print(rec.id)
    print(f"\nTotal reclaimed space: {human(reclaimed, binary=False)}")
    return 0
