"""``pyreg port C [PORT[/PROTO]]``: the host addresses a container's ports are published on."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", help="container name or ID")
    p.add_argument("port", nargs="?", help="PORT[/tcp|/udp]: only this one, as HOSTIP:HOSTPORT")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import state
    from pyreg.runtime.errors import EXIT_PYREG

    rec = state.lookup(args.container)
    if rec is None:
        print(f"pyreg: no such container: {args.container}", file=sys.stderr)
        return EXIT_PYREG
    published = (rec.net or {}).get("ports") or [] if state.refresh(rec).status == "running" else []
    want = None
    if args.port:
        num, _, proto = args.port.partition("/")
        want = (int(num), proto or "tcp")
    from pyreg.runtime.network.ports import host_port

    found = False
    for p in published:
        host = host_port(p)
        if want is None:
            print(f"{p['port']}/{p['proto']} -> {host}")
        elif (int(p["port"]), p["proto"]) == want:
            print(host)
            found = True
    if want is not None and not found:
        print(f"pyreg: no public port '{args.port}' published for {args.container}", file=sys.stderr)
        return 1
    return 0
