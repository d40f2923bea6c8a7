"""pyreg manifest create|add|annotate|inspect|push|rm: make a multi-platform index and push it.

As ``docker manifest`` / ``podman manifest``: the list lives in the local store under its name
(an OCI image index, or a Docker manifest list when every member is a Docker manifest); members are
local images or registry images (fetched into the store, so that ``push`` can send them), each
with the platform of its config. ``push`` sends the members and their blobs first, then the
index (podman's ``--all``, the default here too); ``--all=false`` sends the index alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pyreg.client import common

_PLATFORM_FLAGS = (("--os", "os"), ("--arch", "architecture"), ("--variant", "variant"),
                   ("--os-version", "os.version"))


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _platform_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--os", help="override the member's operating system")
    p.add_argument("--arch", help="override the member's architecture")
    p.add_argument("--variant", help="override the member's architecture variant (e.g. v8)")
    p.add_argument("--os-version", help="override the member's os.version")
    p.add_argument("--os-features", help="override the member's os.features (comma-separated)")
    p.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="set an annotation on the member (repeatable)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="make a new list, optionally with members")
    p.add_argument("list", help="name of the list (a reference, e.g. registry/app:1.0)")
    p.add_argument("images", nargs="*", help="members: local images or registry references")
    p.add_argument("--amend", action="store_true", help="add to the list if it already exists")
    p.add_argument("--all", action="store_true",
                   help="a member that is itself an index adds all its platforms (default: this host's)")
    p.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                   help="set an annotation on the index (repeatable)")
    common.add_network(p)
    p = sub.add_parser("add", help="add an image to a list")
    p.add_argument("list", help="name of the list")
    p.add_argument("image", help="a local image or a registry reference (docker://... or REF)")
    p.add_argument("--all", action="store_true",
                   help="an image that is itself an index adds all its platforms (default: this host's)")
    _platform_args(p)
    common.add_network(p)
    p = sub.add_parser("annotate", help="set a member's platform fields and annotations")
    p.add_argument("list", help="name of the list")
    p.add_argument("image", nargs="?", help="the member: its digest or an image name")
    p.add_argument("--index", action="store_true", help="annotate the index itself, not a member")
    _platform_args(p)
    p = sub.add_parser("inspect", help="print a list (local, else from its registry)")
    p.add_argument("list", help="name of the list, or a registry reference")
    common.add_network(p)
    p = sub.add_parser("push", help="push a list, its members and their blobs to a registry")
    p.add_argument("list", help="name of the list")
    p.add_argument("dest", nargs="?", help="destination reference (default: the list's name)")
    p.add_argument("--all", type=_bool, default=True, nargs="?", const=True, metavar="BOOL",
                   help="push the members too (default true; --all=false pushes the index alone)")
    p.add_argument("--rm", action="store_true", help="remove the local list after a push")
    common.add_network(p, transfers=True)
    common.add_json(p)
    p = sub.add_parser("rm", help="remove local lists (their members stay)")
    p.add_argument("lists", nargs="+", help="names of lists")


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    return int({"create": _create, "add": _add, "annotate": _annotate, "inspect": _inspect,
                "push": _push, "rm": _rm}[args.action](args))


# --------------------------------------------------------------------------- the list in the store

class _List:
    """A list being edited: its members and annotations, saved as a blob and tagged."""

    def __init__(self, store: Any, name: str, members: list[Any], annotations: dict[str, str]) -> None:
        self.store, self.name, self.members, self.annotations = store, name, members, annotations

    @classmethod
    def load(cls, store: Any, text: str, create: bool = False) -> _List:
        from pyreg.storage import mediatypes as mt
        from pyreg.storage.localstore import ImageNotFoundError
        from pyreg.storage.reference import parse

        name = str(parse(text))
        try:
            record = store.lookup(name)
        except ImageNotFoundError:
            if create:
                return cls(store, name, [], {})
            raise ValueError(f"{text}: no such manifest list (make one with pyreg manifest create)") from None
        if record.media_type not in mt.INDEXES:
            raise ValueError(f"{text}: is an image, not a manifest list")
        index = store.read_manifest(record.digest, record.media_type)
        return cls(store, record.name, list(index.manifests), dict(index.annotations or {}))

    def save(self) -> str:
        from pyreg.storage.manifestlist import build

        data, index = build(self.members, self.annotations)
        with self.store.writing():
            digest = self.store.put_blob(data)
            self.store.tag(self.name, digest, index.media_type, len(data))
        return str(digest)


def _annotations(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--annotation {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _members_of(store: Any, text: str, args: argparse.Namespace) -> list[Any]:
    """Descriptors (with platforms) for an image argument: local, else fetched from its registry."""
    from pyreg.client.transports import fetch
    from pyreg.storage import mediatypes as mt
    from pyreg.storage.localstore import ImageNotFoundError
    from pyreg.storage.manifest import Descriptor
    from pyreg.storage.manifestlist import platform_of
    from pyreg.storage.reference import parse

    remote = text.startswith("docker://")
    desc = None
    if not remote:
        try:
            record = store.lookup(text)
            desc = Descriptor(record.media_type, record.digest, record.size, platform=record.platform)
        except ImageNotFoundError:
            pass
    if desc is None:
        common.lean_httpx()
        image = fetch(parse(text.removeprefix("docker://")), store, insecure=args.insecure,
                      all_platforms=args.all)
        desc = image.descriptor
    if desc.media_type in mt.INDEXES:
        index = store.read_manifest(desc.digest, desc.media_type)
        return [c for c in index.manifests if c.media_type in mt.IMAGE_MANIFESTS and store.has_blob(c.digest)]
    manifest = store.read_manifest(desc.digest, desc.media_type)
    if manifest.config is None:
        raise ValueError(f"{text}: manifest {desc.digest} has no config")
    platform = platform_of(store.read_json(manifest.config.digest))
    return [Descriptor(desc.media_type, desc.digest, desc.size, platform=platform)]


def _edited(desc: Any, args: argparse.Namespace) -> Any:
    """``desc`` with the platform flags and annotations of ``args`` applied."""

    platform = dict(desc.platform or {})
    for flag, key in _PLATFORM_FLAGS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value:
            platform[key] = value
    if args.os_features:
        platform["os.features"] = [f for f in args.os_features.split(",") if f]
    annotations = {**(desc.annotations or {}), **_annotations(args.annotation)}
    return desc.replace(platform=platform or None, annotations=annotations or None)


# --------------------------------------------------------------------------- actions

def _create(args: argparse.Namespace) -> int:
    from pyreg.storage.localstore import ImageNotFoundError
    from pyreg.storage.manifestlist import with_member

    store = common.store()
    exists = True
    try:
        store.lookup(args.list)
    except ImageNotFoundError:
        exists = False
    if exists and not args.amend:
        raise ValueError(f"{args.list}: a local image or list of that name exists "
                         "(use --amend to add to a list, or pyreg manifest rm)")
    lst = _List.load(store, args.list, create=True)
    lst.annotations.update(_annotations(args.annotation))
    for text in args.images:
        for member in _members_of(store, text, args):
            lst.members = with_member(lst.members, member)
    print(lst.save())
    return 0


def _add(args: argparse.Namespace) -> int:
    from pyreg.storage.manifestlist import with_member

    store = common.store()
    lst = _List.load(store, args.list)
    for member in _members_of(store, args.image, args):
        lst.members = with_member(lst.members, _edited(member, args))
    print(lst.save())
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from pyreg.storage.digest import Digest, DigestError

    store = common.store()
    lst = _List.load(store, args.list)
    if args.index:
        lst.annotations.update(_annotations(args.annotation))
        print(lst.save())
        return 0
    if not args.image:
        raise ValueError("name the member to annotate (its digest or image name), or use --index")
    try:
        digest = Digest.parse(args.image)
    except DigestError:
        digest = store.lookup(args.image).digest
    hits = [m for m in lst.members if m.digest == digest]
    if not hits:
        raise ValueError(f"{args.image}: not a member of {lst.name}")
    lst.members = [_edited(m, args) if m.digest == digest else m for m in lst.members]
    print(lst.save())
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pyreg.storage.localstore import ImageNotFoundError

    store = common.store(create=False)
    data = None
    if store is not None and not args.list.startswith("docker://"):
        try:
            record = store.lookup(args.list)
            data = store.read_blob(record.digest)
        except ImageNotFoundError:
            data = None
    if data is None:
        from pyreg.storage.reference import parse

        ref = parse(args.list.removeprefix("docker://"))
        with common.remote(ref.registry, args) as rc:
            data = rc.get_manifest(ref.repository, ref.reference, verify=ref.digest).data
    print(json.dumps(json.loads(data), indent=4))
    return 0


def _push(args: argparse.Namespace) -> int:
    common.lean_httpx()
    from pyreg.client import config, transfer
    from pyreg.client.transports import push_source
    from pyreg.storage.manifest import Descriptor
    from pyreg.storage.reference import parse
    from pyreg.storage.transports import Image

    store = common.store()
    lst = _List.load(store, args.list)
    record = store.lookup(lst.name)
    desc = Descriptor(record.media_type, record.digest, record.size)
    dest = parse(args.dest.removeprefix("docker://") if args.dest else lst.name)
    if args.all:
        source = push_source(store, Image(desc, [lst.name]))
        with common.progress(args) as progress:
            progress.line(f"pushing {dest}")
            result = transfer.push(source, dest, parallel=config.parallel(args.parallel),
                                   insecure=args.insecure, progress=progress)
    else:  # the index alone: its members must be in the repository already
        from pyreg.client.remote import connect
        from pyreg.storage.remote.store import RemoteStore

        with connect(dest.registry, insecure=args.insecure) as rc:
            RemoteStore(rc, dest.repository).push_manifest(desc, store.read_blob(desc.digest),
                                                           dest.tag)
        result = transfer.TransferResult(str(dest), str(desc.digest), desc.media_type)
    if args.rm:
        store.untag(lst.name)
    common.emit_transfer(args, result)
    return 0


def _rm(args: argparse.Namespace) -> int:
    store = common.store()
    failed = 0
    for text in args.lists:
        try:
            lst = _List.load(store, text)
        except (ValueError, LookupError) as exc:
            print(f"pyreg: {exc}", file=sys.stderr)
            failed += 1
            continue
        store.untag(lst.name)
        print(f"Untagged: {lst.name}")
    return 1 if failed else 0
