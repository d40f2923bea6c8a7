"""The ``pyreg`` entry point.

Start-up must stay fast (``pyreg --help`` well under 150 ms), so this module imports nothing
heavy: each subcommand lives in its own module, named in COMMANDS, and is imported only when it
is the one being run. A command module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing and collections.abc: start-up time for annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("pyreg.registry.serve_command", "run the registry server"),
    "user": ("pyreg.registry.auth.user_command", "manage the registry's htpasswd users (add, del, list)"),
    "gc": ("pyreg.registry.gc_command", "delete blobs no manifest references (safe beside live pushes)"),
    "pull": ("pyreg.client.commands.pull", "pull an image into the local store"),
    "push": ("pyreg.client.commands.push", "push a local image, OCI layout dir or archive to a registry"),
    "copy": ("pyreg.client.commands.copy", "copy an image between registries, layouts, archives and dirs"),
    "tag": ("pyreg.client.commands.tag", "give a local image another name"),
    "images": ("pyreg.client.commands.images", "list local images"),
    "rmi": ("pyreg.client.commands.rmi", "remove local images"),
    "prune": ("pyreg.client.commands.prune", "remove local blobs and layers no image uses"),
    "inspect": ("pyreg.client.commands.inspect", "show an image's manifest and config, or a container"),
    "tags": ("pyreg.client.commands.tags", "list a repository's tags"),
    "catalog": ("pyreg.client.commands.catalog", "list a registry's repositories"),
    "delete": ("pyreg.client.commands.delete", "delete a tag or manifest in a registry"),
    "login": ("pyreg.client.commands.login", "save credentials for a registry"),
    "logout": ("pyreg.client.commands.logout", "forget credentials for a registry"),
    "save": ("pyreg.client.commands.save", "write local images to a docker or OCI archive"),
    "load": ("pyreg.client.commands.load", "load the images of an OCI or docker-save archive"),
    "manifest": ("pyreg.client.commands.manifest", "make, inspect and push multi-platform image lists"),
    "run": ("pyreg.runtime.commands.run", "run a command in a new container"),
    "ps": ("pyreg.runtime.commands.ps", "list containers"),
    "logs": ("pyreg.runtime.commands.logs", "show what a container wrote"),
    "stop": ("pyreg.runtime.commands.stop", "stop a container (SIGTERM, then SIGKILL)"),
    "kill": ("pyreg.runtime.commands.kill", "send a signal to a container"),
    "rm": ("pyreg.runtime.commands.rm", "remove containers"),
    "port": ("pyreg.runtime.commands.port", "list a container's published ports"),
    "network": ("pyreg.runtime.commands.network", "manage networks (create, ls, inspect, rm)"),
    "exec": ("pyreg.runtime.commands.exec", "run a command in a running container"),
    "start": ("pyreg.runtime.commands.start", "start stopped containers again"),
    "restart": ("pyreg.runtime.commands.restart", "stop containers and start them again"),
    "wait": ("pyreg.runtime.commands.wait", "wait for containers to stop, print their exit codes"),
    "attach": ("pyreg.runtime.commands.attach", "follow a running container's output until it exits"),
    "cp": ("pyreg.runtime.commands.cp", "copy files between a running container and the host"),
    "container": ("pyreg.runtime.commands.container_cmd", "manage containers (prune: remove stopped ones)"),
    "top": ("pyreg.runtime.commands.top", "show a running container's processes"),
    "stats": ("pyreg.runtime.commands.stats", "show containers' CPU, memory, I/O and pids (from cgroups)"),
    "build": ("pyreg.runtime.commands.build", "build an image from a Dockerfile"),
}

EXIT_USAGE = 2


def pull_for_run(ref: str) -> None:
    """``pyreg pull REF`` in-process for ``run``, its output on stderr: stdout is the container's."""
    import contextlib
    import gc

    gc.enable()  # off for run's start-up (main): a pull is no fast start, and allocates plenty

    print(f"Unable to find image '{ref}' locally", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):
        code = main(["pull", ref])
    if code != 0:
        raise LookupError(f"pull of {ref} failed (exit {code})")


def push_for_build(ref: str) -> None:
    """``pyreg push REF`` in-process for ``build --push``, its output on stderr."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        code = main(["push", ref])
    if code != 0:
        raise LookupError(f"push of {ref} failed (exit {code})")


# name -> what the CLI hands that command's run(args, **these): the client's services for a
# command of another package, which imports no client code (DESIGN.md)
WIRING: dict[str, dict[str, Callable[..., object]]] = {
    "run": {"pull": pull_for_run}, "build": {"pull": pull_for_run, "push": push_for_build}}


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
    """Run one command; whatever goes wrong ends as one line on stderr, never a traceback
    (``PYREG_DEBUG=1`` shows it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None and args[:1] == ["run"]:
        # ~10 collections during start-up, of objects (modules, functions) that live until exit:
        # ~1 ms of 40; the runtime turns it on again once the container runs (container.py)
        import gc

        from pyreg.runtime.api import run_as_program

        gc.disable()
        run_as_program()
    try:
        code = _main(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        if argv is None and args[:1] and args[0] in _EXIT_NOW:
            _exit_now(code)
        return code
    except BrokenPipeError:
        return _broken_pipe()
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        try:
            sys.stdout.flush()  # argparse's --help / usage output
        except BrokenPipeError:
            _broken_pipe()
        raise
    except BaseException as exc:
        if os.environ.get("PYREG_DEBUG"):
            raise
        import contextlib

        with contextlib.suppress(BrokenPipeError):
            print(f"pyreg: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(args, exc)


# commands whose process ends without the interpreter's tear-down (start-up bound: a few ms each)
_EXIT_NOW = ("run", "pull", "push")


def _exit_now(code: int) -> None:
    """End the process without the interpreter's tear-down, which frees every module one by one:
    ~5 ms of ``pyreg run --rm``'s 40 ms budget. What tear-down would still do that matters is
    done first: wait for non-daemon threads, run atexit handlers, flush stdio."""
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


def _main(args: list[str]) -> int:
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
    __import__(module_name)  # importlib.import_module's package would add importlib and warnings
    module = sys.modules[module_name]
    # a command on the start-up path (run) parses plain arguments itself; None: argparse does
    simple = getattr(module, "parse_simple", None)
    parsed = simple(rest) if simple is not None else None
    if parsed is None:
        import argparse  # not for the top-level help: argparse, re and gettext cost more than printing it

        parser = argparse.ArgumentParser(prog=f"pyreg {name}", description=summary)
        module.add_arguments(parser)
        parsed = parser.parse_args(rest)
    return int(module.run(parsed, **WIRING.get(name, {})) or 0)


# 128 + SIGPIPE: what git and docker (a Go program, killed by SIGPIPE) end with when the reader of
# their output goes away (``pyreg images | head -1``); nothing is printed about it.
EXIT_BROKEN_PIPE = 141
# docker run / exec: 125 when the failure is docker's own, not the container's
_RUNTIME_COMMANDS = ("run", "exec")


def _broken_pipe() -> int:
    """As the Python docs recommend: point stdout at /dev/null so that the interpreter's final
    flush does not fail (and print) again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _exit_code(args: list[str], exc: BaseException) -> int:
    return 125 if args and args[0] in _RUNTIME_COMMANDS else 1


def _one_line(exc: BaseException) -> str:
    """What failed and what to do, for an error no command turned into a message itself."""
    if isinstance(exc, OSError):
        return os_error_line(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (f"internal error: {type(exc).__name__}: {text} (this is a bug in pyreg; "
            "PYREG_DEBUG=1 shows the traceback)")


def setting_of(path: str, message: str = "") -> str:
    """`` (local store directory, from PYREG_STORE)`` when ``path`` (or, without one, the
    message) names the directory a setting chose; empty otherwise."""
    for env, what in (("PYREG_RUN_ROOT", "container state"), ("PYREG_STORE", "local store")):
        value = os.environ.get(env)
        if not value:
            continue
        named = path == value or path.startswith(value.rstrip("/") + "/")
        if named or (not path and value in message):
            return f" ({what} directory, from {env})"
    return ""


def os_error_line(exc: OSError) -> str:
    """``PATH: reason`` plus the setting that chose the path and what to do about it."""
    import errno

    path = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    text = f"{path}: {reason}" if path else reason
    if exc.filename2 is not None:
        text = f"{path} -> {exc.filename2}: {reason}"
    setting = setting_of(str(path), reason)
    hint = {
        errno.EACCES: "not writable or readable by this user: pick another path or fix its permissions",
        errno.EPERM: "not permitted: pick another path or fix its permissions",
        errno.EROFS: "on a read-only file system: pick a writable path",
        errno.ENOTDIR: "a file is where a directory should be: remove it or pick another path",
        errno.EEXIST: "something is already there: remove it or pick another path",
        errno.EISDIR: "a directory, not a file",
        errno.ENOSPC: "no space left: free some space",
        errno.ENOENT: "does not exist",
    }.get(exc.errno or 0, "")
    return f"{text}{setting}" + (f"; {hint}" if hint and hint != reason.lower() else "")


if __name__ == "__main__":
    sys.exit(main())
