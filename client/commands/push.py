"""pyreg push SRC [DEST]: push a local image, an OCI layout directory (DIR[:TAG]) or an archive."""

from __future__ import annotations

import contextlib
import os

from pyreg.client import common

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="local image, OCI layout DIR[:TAG], or a docker-save / OCI archive")
    parser.add_argument("dest", nargs="?",
                        help="destination reference (default: SRC when it is a local image)")
    parser.add_argument("--chunk-size",
                        help="upload in PATCH chunks of this size (e.g. 8M); default: one PUT")
    common.add_network(parser, transfers=True)
    common.add_json(parser)


def parse_simple(argv: list[str]) -> Any:
    """Plain arguments without argparse (client/common.py's ``parse_plain``); None: argparse's."""
    return common.parse_plain(argv, {}, {"--chunk-size": "chunk_size"}, ("src", "dest"), optional=1)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _layout_path(src: str) -> tuple[str, str | None] | None:
    """``(directory, tag)`` of an OCI layout named ``DIR`` or ``DIR:TAG`` (str paths: a push
    imports no pathlib)."""
    if os.path.exists(os.path.join(src, "oci-layout")):
        return src, None
    head, sep, tag = src.rpartition(":")
    if sep and head and os.path.exists(os.path.join(head, "oci-layout")):
        return head, tag
    return None


def _run(args: argparse.Namespace) -> int:
    from pyreg.client import config, transfer  # (transfer imports httpx, leanly, if it must)
    from pyreg.storage.reference import parse

    chunk_size = config.chunk_size(args.chunk_size)
    with contextlib.ExitStack() as stack:
        layout = _layout_path(args.src)
        if layout is not None:
            source = transfer.layout_source(*layout)
        elif os.path.isfile(args.src):
            import tempfile  # (only here: tempfile imports shutil, random and more)
            from pathlib import Path

            from pyreg.client.archive import load
            from pyreg.storage.localstore import LocalStore

            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pyreg-push-"))
            scratch = LocalStore(Path(tmp) / "store")
            records = load(Path(args.src), scratch)
            if not records:
                raise ValueError(f"{args.src}: archive holds no image")
            source = transfer.local_source(scratch, records[0].name)
            source.mount_from = None
        else:
            from pyreg.client.transports import looks_like_path, parse_spec

            if looks_like_path(args.src):
                parse_spec(args.src)  # says what the path is not (no such file, not a layout)
            source = transfer.local_source(common.store(), args.src)
        if args.dest is None and layout is None and not os.path.isfile(args.src):
            from pyreg.storage.imageindex import is_unnamed

            if is_unnamed(source.name):
                raise ValueError(f"image {args.src} has no name: push it as pyreg push {args.src} NAME[:TAG]")
            dest = parse(source.name)
        elif args.dest is None:
            raise ValueError("push from a directory or archive needs a destination reference")
        else:
            dest = parse(args.dest)
        with common.progress(args) as progress:
            progress.line(f"pushing {dest}")
            result = transfer.push(source, dest, parallel=config.parallel(args.parallel),
                                   chunk_size=chunk_size, insecure=args.insecure, progress=progress)
    common.emit_transfer(args, result)
    return 0
