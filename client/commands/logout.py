"""pyreg logout [REGISTRY]: forget stored credentials."""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("registry", nargs="?", help="registry host[:port] (default: the configured one)")
    parser.add_argument("--authfile", metavar="FILE", help="the credentials file to remove them from "
                        "(default $REGISTRY_AUTH_FILE, else docker's ~/.docker/config.json)")


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client import credentials

    registry = common.registry_name(args.registry)
    if not credentials.erase(registry, args.authfile):
        raise ValueError(f"not logged in to {registry}")
    print(f"Removed login credentials for {registry}")
    return 0
