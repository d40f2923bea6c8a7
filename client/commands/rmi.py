"""pyreg rmi IMAGE...: untag local images and remove what no other image uses."""

from __future__ import annotations

import argparse

from client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image names or IDs")
    parser.add_argument("-f", "--force", action="store_true",
                        help="untag even if a container uses the image (its layers are kept)")
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    store = common.store()
    in_use = common.container_images()
    keep = common.keep_digests(in_use)
    out = []
    for text in args.images:
        record = store.lookup(text)
        users = in_use.get(str(record.digest))
        others = [r for r in store.images() if r.digest == record.digest and r.name != record.name]
        if users and not others and not args.force:
            raise ValueError(f"image {record.name} is used by container {', '.join(users)} "
                             "(remove it with pyreg rm, or pyreg rmi -f to untag and keep the layers)")
        record, removed = store.rmi(record.name, keep)
        out.append({"untagged": record.name, "digest": str(record.digest), "removed": removed})
        if not args.json:
            print(f"Untagged: {record.name}")
            if removed["blobs"] or removed["layers"]:
                print(f"Deleted: {removed['blobs']} blobs, {removed['layers']} layers")
    if out:
        from client import origins

        origins.sweep(store.root, store.has_blob)
    if args.json:
        common.emit(args, out)
    return 0
