"""pyreg load [-i FILE]: import the images of an archive (stdin by default) into the local store.

Reads OCI archives, ``docker save`` / ``podman save`` tarballs and docker 25+'s (both in one), one
or many images, plain or compressed. Prints ``Loaded image: NAME`` per name, as docker does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", help="archive file to read (default: stdin)")
    parser.add_argument("--tag", help="name the image this instead of the archive's names "
                                      "(refused when the archive holds several images)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client.archive import load
    from pyreg.storage.reference import parse

    tag = str(parse(args.tag)) if args.tag else None
    if args.input is None or args.input == "-":
        if sys.stdin.isatty():
            raise ValueError("requested load from stdin, but stdin is a terminal: use -i FILE or "
                             "redirect an archive into pyreg load")
        records = load(None, common.store(), tag, stream=sys.stdin.buffer)
    else:
        records = load(Path(args.input), common.store(), tag)
    store = common.store()
    lines = [f"Loaded image ID: {store.image_id(r)}" if r.name.startswith("sha256:")  # unnamed, as docker
             else f"Loaded image: {r.name}" for r in records]
    common.emit(args, [{"name": r.name, "digest": str(r.digest)} for r in records],
                None if args.quiet else "\n".join(lines))
    return 0
