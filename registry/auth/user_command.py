"""``pyreg user add|del|list``: manage the bcrypt htpasswd file the registry reads.

The server re-reads the file when it changes, so no restart is needed. The file is the one
given with ``--file``, else ``auth.htpasswd.path`` of ``--config``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pyreg.registry.auth import htpasswd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", "-f", help="the htpasswd file (default: auth.htpasswd.path of --config)")
    parser.add_argument("--config", "-c", help="registry config file to take the htpasswd path from")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a user or change its password")
    add.add_argument("name", help="user name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument("--cost", type=int, default=htpasswd.DEFAULT_COST, help="bcrypt cost (4-31)")
    rm = sub.add_parser("del", help="remove a user")
    rm.add_argument("name", help="user name")
    sub.add_parser("list", help="list the users")


def _path(args: argparse.Namespace) -> str | None:
    if args.file:
        return str(args.file)
    if args.config:
        from pyreg.registry.config import load_config

        config = load_config(args.config)
        if config.auth.htpasswd is not None and config.auth.htpasswd.path:
            return config.auth.htpasswd.path
        print(f"pyreg user: {args.config} has no auth.htpasswd.path", file=sys.stderr)
        return None
    print("pyreg user: give --file HTPASSWD or --config CONFIG", file=sys.stderr)
    return None


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("pyreg user: no terminal to ask for the password; use --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        print("pyreg user: the passwords differ", file=sys.stderr)
        return None
    return first


def run(args: argparse.Namespace) -> int:
    path = _path(args)
    if path is None:
        return 2
    try:
        if args.action == "add":
            if not 4 <= args.cost <= 31:
                print("pyreg user: --cost must be between 4 and 31", file=sys.stderr)
                return 2
            password = _password(args)
            if password is None:
                return 1
            if not password:
                print("pyreg user: empty password refused", file=sys.stderr)
                return 1
            new = htpasswd.set_user(path, args.name, password, cost=args.cost)
            print(f"{'added' if new else 'updated'} {args.name} in {path}")
        elif args.action == "del":
            if not htpasswd.delete_user(path, args.name):
                print(f"pyreg user: no user {args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"deleted {args.name} from {path}")
        else:
            for name in htpasswd.parse(Path(path).read_text(encoding="utf-8")):
                print(name)
    except (htpasswd.HtpasswdError, OSError) as e:
        print(f"pyreg user: {e}", file=sys.stderr)
        return 1
    return 0
