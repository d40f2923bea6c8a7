"""``pyreg exec``: run a command in a running container's namespaces and cgroup."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an env variable")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="USER[:GROUP] (names or ids)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="pass our stdin to the command (without it the command reads /dev/null)")
    p.add_argument("-t", "--tty", action="store_true", help="give the command a pseudo-terminal")
    p.add_argument("container", help="container name or id (prefix)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime.commands._common import find
    from pyreg.runtime.errors import EXIT_PYREG, ContainerError
    from pyreg.runtime.exec import exec_in

    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        print("pyreg: exec needs a command", file=sys.stderr)
        return EXIT_PYREG
    rec = find(args.container)
    if rec is None:
        return EXIT_PYREG
    if rec.status != "running":
        print(f"pyreg: container {args.container} is not running", file=sys.stderr)
        return EXIT_PYREG
    try:
        return exec_in(rec, cmd, env=args.env, workdir=args.workdir, user=args.user, tty=args.tty,
                       interactive=args.interactive)
    except ContainerError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return e.code
