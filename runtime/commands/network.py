"""``pyreg network create|ls|inspect|rm``: user networks (runtime/network/networks.py)."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    c = sub.add_parser("create", help="create a network")
    c.add_argument("--subnet", help="IPv4 subnet in CIDR form (default: a free /24 of 10.89.0.0/16)")
    c.add_argument("--driver", "-d", default="bridge", choices=("bridge",), help="bridge (the only one)")
    c.add_argument("name", help="the network's name (for --network NAME)")
    sub.add_parser("ls", help="list networks")
    i = sub.add_parser("inspect", help="show networks as JSON")
    i.add_argument("names", nargs="+", metavar="name", help="networks to show")
    r = sub.add_parser("rm", help="remove networks no container uses")
    r.add_argument("names", nargs="+", metavar="name", help="networks to remove")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime.errors import EXIT_PYREG
    from pyreg.runtime.network import networks

    if args.action == "create":
        try:
            data = networks.create(args.name, args.subnet)
        except ValueError as e:
            print(f"pyreg: {e}", file=sys.stderr)
            return EXIT_PYREG
        print(data["id"])
        return 0
    if args.action == "ls":
        rows = [("NETWORK ID", "NAME", "DRIVER", "SUBNET"), ("-", "bridge", "bridge", "(run.subnet)")]
        rows += [(n["id"][:12], n["name"], "bridge", n["subnet"]) for n in networks.all_networks()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            print("   ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "   " + row[3])
        return 0
    code = 0
    out = []
    for name in args.names:
        found = networks.load(name)
        if found is None:
            print(f"pyreg: network {name!r} not found", file=sys.stderr)
            code = 1
            continue
        data = found
        users = networks.members(name)
        if args.action == "rm":
            if users:
                print(f"pyreg: network {name!r} has active containers: "
                      f"{', '.join(u.name for u in users)}", file=sys.stderr)
                code = 1
                continue
            try:
                networks.remove(name)  # its bridge and NAT rules, left up while it existed, too
            except (OSError, RuntimeError) as e:
                print(f"pyreg: network {name!r}: {e}", file=sys.stderr)
                code = 1
                continue
            print(name)
        else:
            out.append({**data, "containers": {u.id: {"name": u.name, "ip": (u.net or {}).get("ip"),
                                                       "aliases": (u.net or {}).get("aliases", [])}
                                               for u in users}})
    if args.action == "inspect":
        print(json.dumps(out, indent=2))
    return code
