"""``pyreg ps``: list containers (running ones; all with -a)."""

from __future__ import annotations

import argparse
import calendar
import contextlib
import os
import stat
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="show all containers, not only running ones")
    p.add_argument("-q", "--quiet", action="store_true", help="only print container ids")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids and commands")
    p.add_argument("-s", "--size", action="store_true",
                   help="a SIZE column: what the container wrote (its upper dir), and with its image "
                   "(virtual), as docker: '2B (virtual 7.55MB)'")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="only containers matching: status=, name=, id=, ancestor=, label=KEY[=VALUE]")
    p.add_argument("--format", help="Go template per container ({{.ID}} {{.Names}} …, {{json .}}, "
                   "'table …' for a header)")


def _ago(stamp: str | None) -> str:
    if not stamp:
        return ""
    try:
        t = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return stamp
    from pyreg.storage.units import human_duration

    return human_duration(max(0.0, time.time() - t))  # docker's words: "About an hour", "3 weeks"


def _tree_size(path: str) -> int:
    """Bytes in the files under ``path`` (symlinks as themselves; unreadable parts skipped)."""
    total = 0
    for top, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                if not stat.S_ISDIR(st.st_mode):
                    total += st.st_size
    return total


def _image_size(digest: str | None, cache: dict[str, int]) -> int:
    """The image's size as ``pyreg images`` counts it: its config and layer blobs."""
    if not digest:
        return 0
    if digest not in cache:
        from pyreg.storage.localstore import LocalStore
        from pyreg.storage.manifest import parse_manifest

        try:
            manifest = parse_manifest(LocalStore().read_blob(digest))
            cache[digest] = sum(d.size for d in manifest.blobs)
        except Exception:  # the image was removed since: the container's own bytes still count
            cache[digest] = 0
    return cache[digest]


def _size(r: Container, cache: dict[str, int]) -> str:
    from pyreg.runtime import state
    from pyreg.storage.units import human_size

    rw = _tree_size(os.path.join(state.container_dir(r.id), "upper"))
    return f"{human_size(rw)} (virtual {human_size(rw + _image_size(r.image_digest, cache))})"


def _ports(r: Container) -> str:
    """docker's PORTS column: the published ports of a running container."""
    if r.status != "running" or not r.net:
        return ""
    from pyreg.runtime.network.ports import format_port

    return ", ".join(format_port(p) for p in r.net.get("ports") or [])


def run(args: argparse.Namespace) -> int:

    from pyreg.runtime import state
    from pyreg.runtime.commands import _pslist

    filters = _pslist.filters_or_complain(args.filter)
    if filters is None:
        return 1
    recs: list[Container] = [r for r in state.all_containers() if not _pslist.is_build(r)
                             and (args.all or r.status == "running" or "status" in filters)
                             and _pslist.matches(r, filters)]
    if args.quiet:
        for r in recs:
            print(r.id if args.no_trunc else r.id[:12])
        return 0
    items: list[dict[str, object]] = []
    rows: list[tuple[str, ...]] = [
        ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    sizes: dict[str, int] = {}
    if args.format and ".Size" in args.format:  # docker computes sizes when the template asks
        args.size = True
    if args.size:
        rows[0] += ("SIZE",)
    for r in recs:
        cmd = " ".join(r.config.argv)
        if not args.no_trunc and len(cmd) > 20:
            cmd = cmd[:19] + "…"
        status = r.status or ""
        if status == "running":
            status = f"Up {_ago(r.started_at)}"
        elif status == "exited":
            status = f"Exited ({r.exit_code}) {_ago(r.finished_at)} ago"
        else:
            status = status.capitalize()
        rows.append((r.id if args.no_trunc else r.id[:12], r.image, f'"{cmd}"',
                     f"{_ago(r.created)} ago", status, _ports(r), r.name)
                    + ((_size(r, sizes),) if args.size else ()))
        if args.format:
            full = {"ID": r.id} if args.no_trunc else {}
            size = {"Size": rows[-1][7]} if args.size else {}
            items.append(_pslist.fields(r, status, rows[-1][3], cmd) | {"Ports": rows[-1][5]} | full | size)
    if args.format:
        return _pslist.print_format(args.format, items)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "   " + row[-1])
    return 0
