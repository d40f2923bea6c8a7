"""pyreg delete REF: delete a tag or a manifest in a registry.

A tag is deleted as the spec allows (``DELETE /manifests/<tag>``); registries that only delete
by digest (Distribution) get the manifest the tag points at deleted, which removes every tag on it
— that is said on stderr.
"""

from __future__ import annotations

import argparse
import sys

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="registry/repo:tag or registry/repo@digest")
    common.add_network(parser)
    common.add_json(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.storage.reference import parse

    ref = parse(args.ref, default_tag=False)
    if ref.tag is None and ref.digest is None:
        raise ValueError(f"{args.ref}: name a tag or a digest to delete")
    deleted = ref.reference
    common.lean_httpx()
    from pyreg.storage.remote import RemoteError

    with common.remote(ref.registry, args) as rc:
        try:
            rc.delete_manifest(ref.repository, ref.reference)
        except RemoteError as exc:
            if ref.digest is not None or exc.status not in (400, 404, 405) or exc.code == "NAME_UNKNOWN":
                raise
            digest = rc.head_manifest(ref.repository, ref.reference)
            if digest is None:
                raise
            rc.delete_manifest(ref.repository, str(digest))
            deleted = str(digest)
            print(f"pyreg: the registry does not delete tags; deleted manifest {digest} and its tags",
                  file=sys.stderr)
    name = f"{ref.name}{'@' if ':' in deleted else ':'}{deleted}"
    common.emit(args, {"deleted": name}, f"deleted {name}")
    return 0
