"""pyreg tag SRC NEW: give a local image another name."""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="local image")
    parser.add_argument("new", help="new reference")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.storage.reference import parse

    store = common.store()
    record = store.lookup(args.src)
    new = parse(args.new)
    tagged = store.tag(str(new), record.digest, record.media_type, record.size, record.platform)
    common.emit(args, {"name": tagged.name, "digest": str(tagged.digest)}, None)
    return 0
