"""``pyreg cp``: copy files between a container (running or stopped, as docker) and the host,
either way.

``pyreg cp CONTAINER:SRC HOSTDEST`` and ``pyreg cp HOSTSRC CONTAINER:DEST``; ``-`` as HOSTDEST
writes a tar stream to stdout, as HOSTSRC reads one from stdin (DEST is then a directory).
Container paths never resolve outside the container (runtime/copy.py)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="CONTAINER:PATH, a host path, or - (a tar stream on stdin)")
    p.add_argument("dest", help="CONTAINER:PATH, a host path, or - (a tar stream to stdout)")


def _split(arg: str) -> tuple[str | None, str]:
    if arg == "-" or arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    ref, _, path = arg.partition(":")
    return ref, path


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import copy
    from pyreg.runtime.commands._common import find

    (src_ref, src), (dst_ref, dst) = _split(args.src), _split(args.dest)
    if (src_ref is None) == (dst_ref is None):
        print("pyreg: cp copies between a container and the host: one of SRC and DEST must be "
              "CONTAINER:PATH", file=sys.stderr)
        return 1
    rec = find(src_ref or dst_ref or "")
    if rec is None:
        return 1
    try:
        if src_ref is not None:
            copy.copy_out(rec, src, dst, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            copy.copy_in(rec, src, dst, sys.stdin.buffer)
    except (OSError, ValueError) as e:
        text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
        print(f"pyreg: cp: {where}{text}", file=sys.stderr)
        return 1
    return 0
