"""``pyreg build``: a Dockerfile and a context become an image in the local store.

Progress goes to stderr in the shape of docker's ``--progress=plain`` (``#N [stage i/n] RUN …``,
the step's output, ``#N DONE``/``CACHED``), so stdout holds only what ``-q`` asks for: the image
ID. ``--push`` hands each tag to the push function the CLI wires (client/cli.py ``WIRING``), and
images that are not local are pulled through its pull function: the runtime imports no client.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from pyreg.runtime.build.context import BuildContext


def _usage_error(message: str) -> Exception:
    """argparse's error for a bad value, imported only then (plain arguments parse without it)."""
    import argparse

    return argparse.ArgumentTypeError(message)


def _key_value(text: str) -> tuple[str, str | None]:
    key, sep, value = text.partition("=")
    if not key:
        raise _usage_error(f"invalid {text!r}: expected KEY=VALUE")
    return key, value if sep else None


def _epoch(text: str) -> int:
    if not text.isdigit():
        raise _usage_error(f"invalid --source-date-epoch {text!r}: seconds since 1970")
    return int(text)


NETWORKS = ("default", "none", "host")
COMPRESSIONS = ("gzip", "zstd")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name the image (repeatable)")
    p.add_argument("-f", "--file", metavar="DOCKERFILE",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; '-' reads it from stdin)")
    p.add_argument("--build-arg", action="append", default=[], type=_key_value, metavar="K=V",
                   help="set a build-time variable (K alone: its value from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build this stage (and what it needs) only")
    p.add_argument("--no-cache", action="store_true", help="run every step, use no cached result")
    p.add_argument("--pull", action="store_true", help="pull base images even when they are local")
    p.add_argument("--platform", metavar="linux/ARCH", help="the host's platform (the only one)")
    p.add_argument("--label", action="append", default=[], type=_key_value, metavar="K=V",
                   help="set a label on the image")
    p.add_argument("--network", default="default", choices=NETWORKS,
                   help="network of RUN steps (default: what 'pyreg run' defaults to)")
    p.add_argument("--push", action="store_true", help="push every -t name once built")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    p.add_argument("--source-date-epoch", type=_epoch, metavar="N",
                   help="timestamps (created, history, file mtimes: clamped) from this time")
    p.add_argument("--compression", default="gzip", choices=COMPRESSIONS, help="layer compression")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("context", metavar="CONTEXT",
                   help="the build context: a directory, or - for a tar on stdin")


# parse_simple's view of add_arguments: option -> dest, by kind. tests/test_cli_fast_parse.py
# checks that it names every option of the argparse parser and parses as argparse does.
_FLAGS = {"--no-cache": "no_cache", "--pull": "pull", "--push": "push", "-q": "quiet", "--quiet": "quiet"}
_VALUES = {"-f": "file", "--file": "file", "--target": "target", "--platform": "platform",
           "--network": "network", "--iidfile": "iidfile", "--source-date-epoch": "source_date_epoch",
           "--compression": "compression"}
_LISTS = {"-t": "tag", "--tag": "tag", "--build-arg": "build_arg", "--label": "label"}


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise ValueError(text)
        return text
    return check


def parse_simple(argv: list[str]) -> Any:
    """``build``'s arguments without argparse (its import, gettext's and locale's, and the parser:
    ~2 ms of a cached rebuild): a namespace as argparse's, or None for anything but a plain
    command line — exactly spelled options (``--opt VALUE`` / ``--opt=VALUE``, one short option
    per word), values that don't start with ``-`` and that their type accepts, one context —
    which argparse then parses, so help, errors and its grammar's corners stay argparse's."""
    from types import SimpleNamespace

    from pyreg.storage.plainargs import plain_options

    types: dict[str, Callable[[str], Any]] = {
        "build_arg": _key_value, "label": _key_value, "source_date_epoch": _epoch,
        "network": _choice(NETWORKS), "compression": _choice(COMPRESSIONS)}
    parsed = plain_options(argv, _FLAGS, _VALUES, _LISTS, types)
    if parsed is None:
        return None  # -h, --help, -qt, -tX, an abbreviation, --: argparse knows
    out, words = parsed
    if len(words) != 1 or words[0] == "-":
        return None  # no context, several (argparse's errors), or stdin
    for dest, default in (("network", "default"), ("compression", "gzip")):
        if out[dest] is None:
            out[dest] = default
    out["context"] = words[0]
    return SimpleNamespace(**out)


def run(args: argparse.Namespace, pull: Callable[[str], None] | None = None,
        push: Callable[[str], None] | None = None) -> int:
    import signal

    from pyreg.runtime.build.executor import BuildError

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds: the running step, its mounts and cgroup are removed

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    try:
        return _run(args, pull, push)
    except (BuildError, LookupError) as e:  # LookupError: the wired pull or push failed
        print(f"pyreg: build: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, pull: Callable[[str], None] | None,
         push: Callable[[str], None] | None) -> int:
    import shutil
    import tempfile

    from pyreg.runtime.build import executor
    from pyreg.runtime.build.executor import Builder, BuildError, BuildOptions

    executor.check_platform(args.platform)
    from pyreg.storage.reference import ReferenceError, parse

    for tag in args.tag:  # before any work, as docker
        try:
            parse(tag)
        except (ReferenceError, ValueError) as e:
            raise BuildError(f"invalid tag {tag!r}: {e}") from None
    if args.push and not args.tag:
        raise BuildError("--push needs a name: give -t NAME[:TAG]")
    if args.push and push is None:
        raise BuildError("--push is not available here")
    build_args: dict[str, str] = {}
    for k, v in args.build_arg:
        if v is None:
            if k not in os.environ:
                continue  # as docker: a K with no value and no such variable is left unset
            v = os.environ[k]
        build_args[k] = v
    epoch = args.source_date_epoch
    if epoch is None and build_args.get("SOURCE_DATE_EPOCH", "").isdigit():
        epoch = int(build_args["SOURCE_DATE_EPOCH"])
    scratch = tempfile.mkdtemp(prefix="pyreg-context-")
    try:
        context, text, name = _context(args, scratch)
        quiet = args.quiet

        def out(line: str) -> None:
            if not quiet:
                print(line, file=sys.stderr, flush=True)

        opts = BuildOptions(
            context=context, dockerfile_text=text, dockerfile_name=name, tags=list(args.tag),
            build_args=build_args, target=args.target, no_cache=args.no_cache, pull=args.pull,
            labels={k: v or "" for k, v in args.label}, network=args.network, source_date_epoch=epoch,
            compression=args.compression, pull_fn=pull, out=out,
        )
        result = Builder(opts).build()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out(f"writing image {result.image_id} done")
    if not result.names:
        short = result.image_id.removeprefix("sha256:")[:12]
        out(f"note: the image has no name: run it as pyreg run {short}, name it with pyreg tag; "
            "'pyreg prune' removes it")
    for n in result.names:
        out(f"naming to {n} done")
    if args.iidfile:
        with open(args.iidfile, "w") as f:
            f.write(result.image_id)
    if quiet:
        print(result.image_id)
    if args.push:
        assert push is not None
        for n in result.names:
            push(n)
    return 0


def _context(args: argparse.Namespace, scratch: str) -> tuple[BuildContext, str, str]:
    """(context, Dockerfile text, its name): CONTEXT a directory, or ``-``: a tar on stdin (or, as
    docker, a lone Dockerfile with an empty context). The ignore rules are read by
    runtime/build/context.py (build-front)."""
    from pathlib import Path

    from pyreg.runtime.build.context import BuildContext, ContextError
    from pyreg.runtime.build.executor import BuildError, load_dockerfile

    try:
        if args.context == "-":
            if args.file == "-":
                raise BuildError("the Dockerfile and the context cannot both come from stdin")
            name = args.file or "Dockerfile"
            ctx = BuildContext.from_tar(sys.stdin.buffer, Path(scratch), name)
            text, _ = load_dockerfile(scratch, str(ctx.dockerfile or Path(scratch) / name))
            return ctx, text, name
        if not os.path.isdir(args.context):
            raise BuildError(f"unable to prepare context: path {args.context!r} not found or not a directory")
        if args.file == "-":
            return BuildContext.from_dir(Path(args.context)), sys.stdin.read(), "Dockerfile"
        text, name = load_dockerfile(args.context, args.file)
        df_path = Path(args.file) if args.file and os.path.exists(args.file) else Path(args.context) / name
        return BuildContext.from_dir(Path(args.context), df_path), text, name
    except ContextError as e:
        raise BuildError(str(e)) from None
