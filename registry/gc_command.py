"""``pyreg gc``: mark-and-sweep garbage collection of a registry's storage (see registry/gc.py).

Safe to run while ``pyreg serve`` is serving the same storage: blobs and links younger than
``--grace`` are never swept, and what a push starts to use during the run is rescued. It reads
the same configuration as ``pyreg serve`` (``--config``, ``PYREG_*``), or just ``--data-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("PYREG_CONFIG_FILE"),
                        help="the registry's YAML configuration (default: none; also PYREG_CONFIG_FILE)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="filesystem storage root (storage.filesystem.rootdirectory, default ./data)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    parser.add_argument("--delete-untagged", action="store_true",
                        help="also delete manifests no tag reaches (with their referrers and tag history)")
    parser.add_argument("--grace", metavar="DURATION", default="1h",
                        help="never sweep blobs or links younger than this (default 1h; 30m, 2h, 90s)")
    parser.add_argument("--settle", metavar="DURATION", default="10s",
                        help="wait between unlinking garbage and the second look for new pushes "
                             "(default 10s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from pyreg.registry.config import ConfigError, load_config, parse_duration
    from pyreg.registry.drivers import make_driver
    from pyreg.registry.gc import GCOptions

    overrides = {"storage.filesystem.rootdirectory": args.data_dir} if args.data_dir else {}
    try:
        config = load_config(args.config, overrides=overrides)
        grace = parse_duration(args.grace, "--grace")
        settle = parse_duration(args.settle, "--settle")
    except ConfigError as e:
        print(f"pyreg gc: configuration error: {e}", file=sys.stderr)
        return 2
    if config.storage.filesystem is not None:
        root = config.storage.filesystem.rootdirectory
        if not os.path.isdir(root):
            print(f"pyreg gc: no storage at {os.path.abspath(root)!r}", file=sys.stderr)
            return 2
    options = GCOptions(dry_run=args.dry_run, delete_untagged=args.delete_untagged, grace=grace,
                        settle=settle)
    report = asyncio.run(_collect(config, make_driver(config), options))
    if args.json:
        print(report.to_json())
    else:
        for item in report.manifests_deleted:
            print(f"{'would delete' if report.dry_run else 'deleted'} manifest "
                  f"{item['repository']}@{item['digest']}")
        for digest in sorted(report.blobs_deleted):
            print(f"{'would delete' if report.dry_run else 'deleted'} blob {digest}")
        print(report.summary())
    return 0


async def _collect(config: Any, driver: Any, options: Any) -> Any:
    """One run; with ``redis:`` the servers' shared lookup cache is dropped after the unlinking."""
    from pyreg.registry.gc import collect_garbage
    from pyreg.registry.mirror.expiry import expire  # cached content not pulled within its ttl
    from pyreg.registry.shared_state import make_shared_state

    shared = make_shared_state(config)
    try:
        expired = await expire(driver, config, options.dry_run)
        report = await collect_garbage(driver, options, invalidate=shared.forget_cache if shared else None)
        report.manifests_deleted[:0] = expired
        return report
    finally:
        if shared is not None:
            await shared.close()
