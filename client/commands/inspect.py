"""pyreg inspect REF: manifest and config of a local image, a remote one, or a container.

Order: a local image by that name; else (or with ``--remote``) the registry. Containers are the
runtime's: ``container_lookup`` asks its public ``runtime.api`` and is the one hook between the two.
"""

from __future__ import annotations

import argparse
from typing import Any

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="image reference, local image ID, or container name/ID")
    parser.add_argument("--remote", action="store_true", help="ask the registry even if the image is local")
    parser.add_argument("--raw", action="store_true", help="print the manifest bytes exactly as stored")
    parser.add_argument("--platform", help="os/arch[/variant] when REF is a multi-arch index")
    common.add_network(parser)
    parser.add_argument("-f", "--format", help="Go template over the document ({{.Id}}, {{.State.Status}}, "
                        "{{json .Config}})")
    parser.add_argument("--json", action="store_true", help="(always JSON; accepted for symmetry)")


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def container_lookup(name: str) -> dict[str, Any] | None:
    """The runtime's view of a container, or None: ``runtime.api.inspect_container(name)``."""
    try:
        from pyreg.runtime.api import inspect_container
    except ImportError:
        return None
    try:
        return inspect_container(name)
    except (LookupError, OSError, ValueError):
        return None


def _local(text: str) -> dict[str, Any] | None:
    from pyreg.storage import mediatypes
    from pyreg.storage.localstore import ImageNotFoundError, StoreError

    store = common.store()
    try:
        record = store.lookup(text)
        manifest = store.read_manifest(record.digest, record.media_type)
    except ImageNotFoundError:
        return None
    except StoreError:
        raise
    doc: dict[str, Any] = {"Name": record.name, "Digest": str(record.digest), "MediaType": record.media_type,
                           "Source": "local", "Manifest": manifest.raw}
    if record.platform:
        doc["Platform"] = record.platform
    if record.media_type in mediatypes.IMAGE_MANIFESTS and manifest.config is not None:
        doc["Id"] = str(manifest.config.digest)
        doc["Config"] = store.read_json(manifest.config.digest)
    return doc


def _remote(args: argparse.Namespace) -> dict[str, Any]:
    import json

    from pyreg.storage import mediatypes
    from pyreg.storage.graph import Platform, select_platform
    from pyreg.storage.reference import parse

    ref = parse(args.ref)
    with common.remote(ref.registry, args) as rc:
        top = rc.get_manifest(ref.repository, ref.reference, verify=ref.digest)
        if args.raw:
            return {"raw": top.data.decode()}
        doc: dict[str, Any] = {"Name": str(ref), "Digest": str(top.digest), "MediaType": top.media_type,
                               "Source": "remote", "Manifest": top.json()}
        chosen = top
        if top.media_type in mediatypes.INDEXES and args.platform:
            desc = select_platform(top.parsed, Platform.parse(args.platform))
            chosen = rc.get_manifest(ref.repository, str(desc.digest), verify=desc.digest)
            doc["Platform"] = desc.platform
            doc["PlatformManifest"] = {"Digest": str(chosen.digest), "Manifest": chosen.json()}
        config = chosen.parsed.config if chosen.media_type in mediatypes.IMAGE_MANIFESTS else None
        if config is not None:
            doc["Id"] = str(config.digest)
            doc["Config"] = json.loads(rc.get_blob_bytes(ref.repository, config.digest,
                                                         size=config.size or None))
        return doc


def _run(args: argparse.Namespace) -> int:
    import json

    doc = None if args.remote else _local(args.ref)
    if doc is None and not args.remote:
        doc = container_lookup(args.ref)
    if doc is None:
        doc = _remote(args)
    if args.format and "raw" not in doc:
        return common.print_format(args.format, [doc])
    if "raw" in doc:
        print(doc["raw"])
    else:
        print(json.dumps(doc, indent=2))
    return 0
