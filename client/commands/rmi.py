"""pyreg rmi IMAGE...: untag local images and remove what no other image uses."""

from __future__ import annotations

import argparse

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    store = common.store()
    out = []
    for text in args.images:
        record, removed = store.rmi(text)
        out.append({"untagged": record.name, "digest": str(record.digest), "removed": removed})
        if not args.json:
            print(f"Untagged: {record.name}")
            if removed["blobs"] or removed["layers"]:
                print(f"Deleted: {removed['blobs']} blobs, {removed['layers']} layers")
    if args.json:
        common.emit(args, out)
    return 0
