"""pyreg pull REF: fetch an image into the local store and extract its layers for the runtime."""

from __future__ import annotations

import sys

from pyreg.client import common

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    import argparse
    from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", help="[registry/][namespace/]name[:tag][@digest]")
    parser.add_argument("-a", "--all-tags", action="store_true",
                        help="pull every tagged image of the repository (REF names no tag)")
    parser.add_argument("--platform", help="os/arch[/variant] from a multi-arch index (default: this host)")
    parser.add_argument("--no-extract", action="store_true", help="store blobs only; extract on first run")
    common.add_network(parser, transfers=True)
    common.add_json(parser)


def parse_simple(argv: list[str]) -> Any:
    """Plain arguments without argparse (client/common.py's ``parse_plain``); None: argparse's."""
    flags = {"-a": "all_tags", "--all-tags": "all_tags", "--no-extract": "no_extract"}
    return common.parse_plain(argv, flags, {"--platform": "platform"}, ("ref",))


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client import config
    from pyreg.storage.reference import parse

    ref = parse(args.ref, default_tag=not args.all_tags)
    if args.all_tags and (ref.tag is not None or ref.digest is not None):
        raise ValueError("tag can't be used with --all-tags/-a")
    parallel = config.parallel(args.parallel)
    if not args.all_tags and not args.platform and _present(args, ref):
        return 0
    store = common.store()
    from pyreg.client import transfer  # httpx is imported only if the plain way won't do

    extractor = None
    if not args.no_extract:
        from pyreg.runtime.api import extract_layer

        extractor = extract_layer
    platform = transfer.Platform.parse(args.platform) if args.platform else None
    with common.progress(args) as progress:
        if args.all_tags:
            results = transfer.pull_all_tags(ref, store, extractor=progress.extracting(extractor),
                                             platform=platform, parallel=parallel,
                                             insecure=args.insecure, progress=progress)
        else:
            progress.line(f"pulling {ref}")
            results = [transfer.pull(ref, store, extractor=progress.extracting(extractor), platform=platform,
                                     parallel=parallel, insecure=args.insecure,
                                     progress=progress)]
    for result in results:
        common.warn_platform(store, result, args.platform)
    if args.all_tags and getattr(args, "json", False):
        common.emit(args, [r.as_json() for r in results])
    else:
        for result in results:
            common.emit_transfer(args, result)
    return 0


def _present(args: argparse.Namespace, ref: Any) -> bool:
    """The pull of an image the store holds whole and the registry still names (client/present.py):
    reported as the full pull reports it, without the full pull's imports (nor the store's)."""
    from pyreg.client import config, present
    from pyreg.storage.clientconfig import store_root

    found = present.check(ref, store_root(), extract=not args.no_extract,
                          plain_http=config.plain_http_allowed(ref.registry, args.insecure))
    if found is None:
        return False
    result, image = found
    with common.progress(args) as progress:
        progress.line(f"pulling {ref}")
        for blob in result.blobs:
            progress.finish(blob.digest.split(":", 1)[-1][:12], "already exists")
    from pyreg.storage.platforms import platform_warning

    if (warning := platform_warning(image.config)) is not None:
        print(warning, file=sys.stderr)
    common.emit_transfer(args, result)
    return True
