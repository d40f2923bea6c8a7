"""The ``pyreg`` entry point.

Start-up must stay fast (``pyreg --help`` well under 150 ms), so this module imports nothing
heavy: each subcommand lives in its own module, named in COMMANDS, and is imported only when it
is the one being run. A command module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("registry.serve_command", "run the registry server"),
    "user": ("registry.auth.user_command", "manage the registry's htpasswd users (add, del, list)"),
    "gc": ("registry.gc_command", "delete blobs no manifest references (safe beside live pushes)"),
    "pull": ("client.commands.pull", "pull an image into the local store"),
    "push": ("client.commands.push", "push a local image, OCI layout dir or archive to a registry"),
    "copy": ("client.commands.copy", "copy an image from registry to registry"),
    "tag": ("client.commands.tag", "give a local image another name"),
    "images": ("client.commands.images", "list local images"),
    "rmi": ("client.commands.rmi", "remove local images"),
    "prune": ("client.commands.prune", "remove local blobs and layers no image uses"),
    "inspect": ("client.commands.inspect", "show an image's manifest and config, or a container"),
    "tags": ("client.commands.tags", "list a repository's tags"),
    "catalog": ("client.commands.catalog", "list a registry's repositories"),
    "delete": ("client.commands.delete", "delete a tag or manifest in a registry"),
    "login": ("client.commands.login", "save credentials for a registry"),
    "logout": ("client.commands.logout", "forget credentials for a registry"),
    "save": ("client.commands.save", "write local images to an OCI archive"),
    "load": ("client.commands.load", "load an OCI or docker-save archive"),
    "run": ("runtime.commands.run", "run a command in a new container"),
    "ps": ("runtime.commands.ps", "list containers"),
    "logs": ("runtime.commands.logs", "show what a container wrote"),
    "stop": ("runtime.commands.stop", "stop a container (SIGTERM, then SIGKILL)"),
    "kill": ("runtime.commands.kill", "send a signal to a container"),
    "rm": ("runtime.commands.rm", "remove containers"),
    "exec": ("runtime.commands.exec", "run a command in a running container"),
}

EXIT_USAGE = 2


def pull_for_run(ref: str) -> None:
    """``pyreg pull REF`` in-process for ``run``, its output on stderr: stdout is the container's."""
    import contextlib

    print(f"Unable to find image '{ref}' locally", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        code = main(["pull", ref])
    if code != 0:
        raise LookupError(f"pull of {ref} failed (exit {code})")


# name -> what the CLI hands that command's run(args, **these): the client's services for a
# command of another package, which imports no client code (DESIGN.md)
WIRING: dict[str, dict[str, Callable[..., object]]] = {"run": {"pull": pull_for_run}}


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: pyreg [-h] [--version] COMMAND [ARGS...]",
        "",
        "A self-hosted OCI registry, its push/pull client, and a small container runtime.",
        "",
        "commands:",
    ]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'pyreg COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_top_level_help())
        return 0 if args else EXIT_USAGE
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"pyreg {version('pyreg')}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"pyreg: unknown command {name!r} (see 'pyreg --help')", file=sys.stderr)
        return EXIT_USAGE
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"pyreg {name}", description=summary)
    module.add_arguments(parser)
    parsed = parser.parse_args(rest)
    try:
        return int(module.run(parsed, **WIRING.get(name, {})) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
