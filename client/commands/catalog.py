"""pyreg catalog [REGISTRY]: the repositories a registry lists in /v2/_catalog (all pages)."""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("registry", nargs="?", help="registry host[:port] (default: the configured one)")
    parser.add_argument("--page-size", type=int, default=None, help="ask for N repositories per page")
    common.add_network(parser)
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    registry = common.registry_name(args.registry)
    with common.remote(registry, args) as rc:
        repos = rc.catalog(args.page_size)
    common.emit(args, {"registry": registry, "repositories": repos}, "\n".join(repos) if repos else None)
    return 0
