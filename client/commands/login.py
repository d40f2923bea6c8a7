"""pyreg login [REGISTRY]: check credentials against the registry, then store them where docker does."""

from __future__ import annotations

import argparse
import getpass
import sys

from pyreg.client import common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("registry", nargs="?", help="registry host[:port] (default: the configured one)")
    parser.add_argument("-u", "--username", help="user name (asked for when missing)")
    parser.add_argument("-p", "--password", help="insecure on a shared machine; prefer --password-stdin")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.add_argument("--authfile", metavar="FILE", help="save the credentials in FILE (podman's "
                        "auth.json format); default $REGISTRY_AUTH_FILE, else docker's "
                        "~/.docker/config.json ($DOCKER_CONFIG), which docker reads too")
    common.add_network(parser)


def run(args: argparse.Namespace) -> int:
    return common.guard(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from pyreg.client import credentials

    registry = common.registry_name(args.registry)
    if args.password_stdin and args.password is not None:
        raise ValueError("--password and --password-stdin are mutually exclusive")
    if args.password_stdin and not args.username:
        raise ValueError("must provide --username with --password-stdin")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    if (not args.username or (args.password is None and not args.password_stdin)) and not interactive:
        # docker's words; input() and getpass() would end in EOFError on a pipe or /dev/null
        raise ValueError("cannot perform an interactive login from a non TTY device: pass -u USER "
                         "and --password-stdin (the password on standard input)")
    username = args.username or input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = args.password if args.password is not None else getpass.getpass("Password: ")
    if not username or not password:
        raise ValueError("username and password are required")
    creds = credentials.Credentials(username, password)
    with common.remote(registry, args, credentials=creds) as rc:
        rc.ping()
        response = rc.http.get(rc.url(""))
        if response.status_code in (401, 403):
            raise ValueError(f"login to {registry} failed: {response.status_code} "
                             "(wrong username or password?)")
        if response.status_code >= 400:
            raise ValueError(f"login to {registry} failed: {response.status_code}")
        # a token server that handed out a refresh token: keep that, not the password
        refresh = rc.auth.refresh_token if rc.auth.scheme == "bearer" else None
    where = credentials.store(registry, username, password, identity_token=refresh,
                              authfile=args.authfile)
    print(f"Login Succeeded (credentials for {registry} saved in {where})")
    return 0
