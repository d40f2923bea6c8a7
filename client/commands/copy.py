"""pyreg copy SRC DEST: registry to registry, every platform of an index or just one."""

from __future__ import annotations

import argparse

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source image reference (REGISTRY/REPO[:TAG|@DIGEST])")
    parser.add_argument("dest", help="destination image reference")
    parser.add_argument("--platform", help="copy only this os/arch[/variant] out of an index")
    parser.add_argument("--all", action="store_true", default=True, help="copy every platform (default)")
    common.add_network(parser, transfers=True)
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    common.lean_httpx()
    from client import config, transfer
    from storage.reference import parse

    src, dest = parse(args.src), parse(args.dest)
    platform = transfer.Platform.parse(args.platform) if args.platform else None
    with common.progress(args) as progress:
        progress.line(f"copying {src} -> {dest}")
        result = transfer.copy(src, dest, all_platforms=platform is None, platform=platform,
                               parallel=config.parallel(args.parallel), insecure=args.insecure,
                               progress=progress)
    common.emit_transfer(args, result)
    return 0
