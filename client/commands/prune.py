"""pyreg prune: delete blobs, extracted layers and partial downloads that no local image uses."""

from __future__ import annotations

import argparse

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client import origins
    from pyreg.client.progress import human
    from pyreg.runtime.api import prune_build_cache

    store = common.store()
    removed = store.prune(common.keep_digests(common.container_images()), dangling=True)
    origins.sweep(store.root, store.has_blob)
    removed["build_cache"] = prune_build_cache(store.root)
    common.emit(args, removed, f"removed {removed['images']} unnamed images, "
                               f"{removed['blobs']} blobs ({human(removed['bytes'])}), "
                               f"{removed['layers']} layers, {removed['ingest']} partial files, "
                               f"{removed['build_cache']} build cache entries")
    return 0
