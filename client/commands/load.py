"""pyreg load -i FILE: import an OCI archive or a docker/podman save archive into the local store."""

from __future__ import annotations

import argparse
from pathlib import Path

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", required=True, help="archive file to read")
    parser.add_argument("--tag", help="name the (first) image this instead of the archive's name")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from client.archive import load
    from storage.reference import parse

    tag = str(parse(args.tag)) if args.tag else None
    records = load(Path(args.input), common.store(), tag)
    common.emit(args, [{"name": r.name, "digest": str(r.digest)} for r in records],
                "\n".join(f"Loaded image: {r.name}" for r in records))
    return 0
