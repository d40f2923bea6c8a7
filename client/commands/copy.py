"""pyreg copy SRC DEST: any image transport to any other (skopeo's and crane's transport strings).

    docker://HOST/REPO:TAG (or a bare reference)   oci:DIR[:NAME]   oci-archive:FILE[:NAME]
    docker-archive:FILE[:NAME:TAG]                  dir:DIR          a bare layout dir or archive path
"""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source: docker://REF (or REF), oci:DIR[:NAME], oci-archive:FILE[:NAME], "
                                    "docker-archive:FILE[:NAME:TAG|:@N], dir:DIR, or a layout/archive path")
    parser.add_argument("dest", help="destination, in the same forms (an archive path needs its transport)")
    parser.add_argument("--platform", help="copy only this os/arch[/variant] out of an index")
    parser.add_argument("--all", action="store_true", default=True, help="copy every platform (default)")
    common.add_network(parser, transfers=True)
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    common.lean_httpx()
    from pyreg.client import config, transports
    from pyreg.storage.graph import Platform

    src, dest = transports.parse_spec(args.src), transports.parse_spec(args.dest)
    platform = Platform.parse(args.platform) if args.platform else None
    with common.progress(args) as progress:
        progress.line(f"copying {src} -> {dest}")
        result = transports.copy(src, dest, platform=platform, insecure=args.insecure,
                                 parallel=config.parallel(args.parallel), progress=progress)
    common.emit_transfer(args, result)
    return 0
