"""pyreg rmi IMAGE...: untag local images and remove what no other image uses."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from pyreg.client import common

if TYPE_CHECKING:
    from pyreg.storage.imageindex import ImageRecord


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
        match = store.find(text)
        records = match.records
        if match.by_id and len(records) > 1 and not args.force:  # docker: an ID names them all
            raise ValueError(f"unable to delete {text} (must be forced): the image is referenced by "
                             f"{', '.join(r.name for r in records)}; pyreg rmi -f {text} untags them all")
        for record in records:
            users = in_use.get(str(record.digest))
            others = [r for r in store.images() if r.digest == record.digest and r.name != record.name
                      and r not in records]
            if users and not others and not args.force:
                raise ValueError(f"image {_shown(record)} is used by container {', '.join(users)} "
                                 "(remove it with pyreg rm, or pyreg rmi -f to untag and keep the layers)")
        for record in records:
            record, removed = store.rmi(record.name, keep)
            out.append({"untagged": record.name, "digest": str(record.digest), "removed": removed})
            if not args.json:
                print(f"{'Deleted' if record.dangling else 'Untagged'}: {_shown(record)}")
                if removed["blobs"] or removed["layers"]:
                    print(f"Deleted: {removed['blobs']} blobs, {removed['layers']} layers")
    if out:
        from pyreg.client import origins

        origins.sweep(store.root, store.has_blob)
    if args.json:
        common.emit(args, out)
    return 0


def _shown(record: ImageRecord) -> str:
    """A name, or for an unnamed image its manifest digest (docker says ``Deleted: sha256:…``)."""
    return str(record.digest) if record.dangling else record.name
