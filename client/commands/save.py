"""pyreg save [-o FILE] [--format docker-archive|oci-archive] IMAGE...: local images to an archive.

The default, docker-archive, is what docker 25+ writes: ``manifest.json`` + ``repositories`` for
``docker load`` and skopeo/podman's docker-archive, and an OCI layout in the same tar for docker
25+, containerd and oci-archive readers. Without ``-o`` the archive goes to stdout (not a terminal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="local image names")
    parser.add_argument("-o", "--output", help="archive file to write (default: stdout, when redirected)")
    parser.add_argument("--format", choices=("docker-archive", "oci-archive"), default="docker-archive",
                        help="docker-archive (default; also carries an OCI layout) or oci-archive")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client.archive import save

    if args.output is None and sys.stdout.isatty():
        raise ValueError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")
    store = common.store()
    records = []
    for text in args.images:  # docker: an image saved by ID carries no name
        match = store.find(text)
        record = match.records[0]
        records.append(record.replace(name=str(record.digest)) if match.by_id else record)
    if args.output is None:
        sys.stdout.flush()
        save(records, store, None, args.format, stream=sys.stdout.buffer)
        return 0
    count = save(records, store, Path(args.output), args.format)
    common.emit(args, {"output": args.output, "format": args.format,
                       "images": [r.name for r in records if not r.dangling], "blobs": count}, None)
    return 0
