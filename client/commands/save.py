"""pyreg save IMAGE... -o FILE: write local images to an OCI archive."""

from __future__ import annotations

import argparse
from pathlib import Path

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="local image names")
    parser.add_argument("-o", "--output", required=True, help="archive file to write")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from client.archive import save

    store = common.store()
    records = [store.lookup(text) for text in args.images]
    count = save(records, store, Path(args.output))
    common.emit(args, {"output": args.output, "images": [r.name for r in records], "blobs": count}, None)
    return 0
