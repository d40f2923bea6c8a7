"""pyreg tags REPO: every tag of a remote repository (follows Link pagination)."""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="[registry/]repository")
    parser.add_argument("--page-size", type=int, default=None, help="ask for N tags per page")
    common.add_network(parser)
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.storage.reference import parse_repository

    ref = parse_repository(args.repo)
    with common.remote(ref.registry, args) as rc:
        tags = rc.tags(ref.repository, args.page_size)
    common.emit(args, {"name": ref.name, "tags": tags}, "\n".join(tags) if tags else None)
    return 0
