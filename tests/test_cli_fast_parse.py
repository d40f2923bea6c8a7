"""The fast command-line parsers of ``run``, ``build``, ``pull`` and ``push`` (``parse_simple``
over storage/plainargs.py, their start-up path) against each command's argparse parser.

``parse_simple`` either gives exactly the namespace argparse gives or declines (None), so that
argparse parses the words again and help, errors and its grammar's corners stay argparse's. One
table of command lines per command; every check runs over all four.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import pytest

from pyreg.client import common
from pyreg.client.commands import pull, push
from pyreg.runtime.commands import build, run
from tests.fixtures import cliparse


@dataclass(frozen=True)
class Command:
    name: str
    module: ModuleType
    known: dict[str, str]  # the fast parser's options -> dest
    left_to_argparse: tuple[str, ...] = ("-h", "--help")  # options it always declines
    plain_line: tuple[str, ...] = ()  # a plain line for the import check
    not_imported: tuple[str, ...] = ("argparse", "gettext", "locale")  # by that line

    def __str__(self) -> str:
        return self.name


RUN = Command("run", run, {**run._FLAGS, **run._VALUES, **run._LISTS},
              plain_line=("--rm", "-e", "A=1", "busybox", "true"))
BUILD = Command("build", build, {**build._FLAGS, **build._VALUES, **build._LISTS},
                plain_line=("-q", "-t", "x", "."))
_TRANSFER = {**common.TRANSFER_FLAGS, **common.TRANSFER_VALUES}
PULL = Command("pull", pull, {**_TRANSFER, "-a": "all_tags", "--all-tags": "all_tags",
                              "--no-extract": "no_extract", "--platform": "platform"},
               left_to_argparse=("-h", "--help", "--ca-file"),
               plain_line=("-q", "--no-extract", "127.0.0.1:1/a:1"),
               not_imported=("argparse", "gettext", "locale", "tempfile"))
PUSH = Command("push", push, {**_TRANSFER, "--chunk-size": "chunk_size"},
               left_to_argparse=("-h", "--help", "--ca-file"),
               plain_line=("-q", "/nowhere:1", "127.0.0.1:1/a:1"),
               not_imported=("argparse", "gettext", "locale", "tempfile"))
COMMANDS = [RUN, BUILD, PULL, PUSH]

# plain command lines: parse_simple must take them (the fast path is used) and agree
PLAIN: list[tuple[Command, list[str]]] = [
    (RUN, ["busybox"]),
    (RUN, ["busybox", "true"]),
    (RUN, ["--rm", "busybox", "true"]),
    (RUN, ["--rm", "-d", "-i", "-t", "--read-only", "--init", "--privileged", "-P", "busybox",
           "sh", "-c", "x"]),
    (RUN, ["--detach", "--interactive", "--tty", "--publish-all", "img"]),
    (RUN, ["--name", "web", "--hostname=h", "-w", "/tmp", "-u", "1000:1000", "--entrypoint", "", "img", "a"]),
    (RUN, ["--name=", "img"]),
    (RUN, ["-e", "A=1", "--env", "B=2", "--env=C=3", "-l", "k=v", "--label", "x", "img"]),
    (RUN, ["--env-file", "/nonexistent", "img"]),
    (RUN, ["-v", "/tmp:/data", "--volume=/srv:/srv:ro", "img"]),
    (RUN, ["-m", "256m", "--memory=1g", "--cpus", "0.5", "--pids-limit", "10", "img"]),
    (RUN, ["--restart", "always", "-d", "img"]),
    (RUN, ["--restart=on-failure:3", "img"]),
    (RUN, ["--network", "none", "--net=host", "--network-alias", "a", "img"]),
    (RUN, ["-p", "8080:80", "--publish=127.0.0.1:53:53/udp", "img"]),
    (RUN, ["--cap-add", "NET_ADMIN", "--cap-drop=ALL", "--security-opt", "seccomp=unconfined", "img"]),
    (RUN, ["--device", "/dev/fuse", "img"]),
    (RUN, ["busybox", "--rm", "-d", "--", "x"]),  # after the image: all the command's
    (RUN, ["busybox", "ls", "-l", "--name", "x"]),
    (RUN, ["--name=--odd", "img"]),
    (RUN, ["", "x"]),
    (BUILD, ["."]),
    (BUILD, ["-q", "-t", "hello", "examples/hello"]),
    (BUILD, ["--tag", "a:1", "--tag=b", "-t", "c", "ctx"]),
    (BUILD, ["ctx", "-t", "after", "--pull"]),
    (BUILD, ["-f", "Dockerfile.x", "--file=other", "--target", "build", "ctx"]),
    (BUILD, ["--build-arg", "A=1", "--build-arg=B", "--build-arg", "C=", "--label", "k=v",
             "--label=x", "ctx"]),
    (BUILD, ["--no-cache", "--pull", "--push", "--quiet", "ctx"]),
    (BUILD, ["--platform", "linux/amd64", "--network", "none", "--network=host", "--iidfile",
             "/tmp/id", "ctx"]),
    (BUILD, ["--source-date-epoch", "0", "--compression", "zstd", "--compression=gzip", "ctx"]),
    (BUILD, ["--target=", "ctx"]),
    (PULL, ["busybox"]),
    (PULL, ["-q", "--no-extract", "127.0.0.1:5000/a/b:1"]),
    (PULL, ["127.0.0.1:5000/a/b:1", "--json", "-q"]),
    (PULL, ["--platform", "linux/arm64", "--parallel", "8", "--insecure", "reg/x"]),
    (PULL, ["--platform=linux/amd64", "--parallel=2", "-a", "reg/x"]),
    (PULL, ["--all-tags", "--quiet", "reg/x"]),
    (PUSH, ["/tmp/layout:1", "127.0.0.1:5000/a/b:1"]),
    (PUSH, ["-q", "/tmp/layout:1", "127.0.0.1:5000/a/b:1", "--json"]),
    (PUSH, ["busybox"]),
    (PUSH, ["--chunk-size", "8M", "--parallel", "3", "img", "reg/img:1"]),
    (PUSH, ["--chunk-size=1M", "--insecure", "img", "reg/img:1"]),
]

# what parse_simple leaves to argparse (it must decline, not guess); argparse may accept or refuse
DECLINED: list[tuple[Command, list[str]]] = [
    *((RUN, argv) for argv in [
        [], ["--rm"], ["-h"], ["--help"], ["-it", "img"], ["-dit", "img"], ["-eA=1", "img"],
        ["-e=A", "img"], ["--priv", "img"], ["--rm=1", "img"], ["--unknown", "img"],
        ["--", "img"], ["img", "--", "true"], ["-e", "-x", "img"], ["--name", "-n", "img"],
        ["--name"], ["-", "x"], ["--cpus", "lots", "img"], ["--pids-limit", "1.5", "img"],
        ["-m", "0", "img"], ["-m", "12q", "img"], ["-v", "nocolon", "img"], ["-v", "/a:/b:rx", "img"],
        ["--restart", "sometimes", "img"], ["--restart=on-failure:0", "img"], ["--cpus", "-1", "img"],
        ["-1", "img"], ["--network", "--rm", "img"]]),
    *((BUILD, argv) for argv in [
        [], ["-q"], ["-h"], ["--help"], ["-"], ["-f", "-", "."], ["-qt", "x", "."], ["-tx", "."],
        ["--tag"], ["--no-cache=1", "."], ["--unknown", "."], ["--", "."], ["a", "b"],
        ["--network", "bridge", "."], ["--compression", "xz", "."], ["--build-arg", "=1", "."],
        ["--source-date-epoch", "yesterday", "."], ["--label", "-x", "."], ["--no-c", "."]]),
    *((PULL, argv) for argv in [
        [], ["-h"], ["--help"], ["--ca-file", "/etc/hostname", "busybox"],
        ["--no-ext", "busybox"],  # an abbreviation: argparse's business
        ["-qa", "busybox"],  # combined short options
        ["--parallel", "x", "busybox"], ["--parallel", "-1", "busybox"], ["--platform"],
        ["--platform", "--json", "busybox"], ["a", "b"], ["--", "busybox"], ["--no-extract=yes", "busybox"]]),
    *((PUSH, argv) for argv in [[], ["a", "b", "c"], ["--chunk-size"]]),
]

# a bad value: argparse's usage line and message, exit 2, as before the fast parsers
ERRORS: list[tuple[Command, list[str]]] = [
    (RUN, ["--cpus", "lots", "img"]), (RUN, ["-v", "nocolon", "img"]), (RUN, ["--rm"]),
    (RUN, ["--restart", "sometimes", "img"]), (RUN, ["-m", "0", "img"]),
    (BUILD, ["--network", "bridge", "."]), (BUILD, ["--build-arg", "=1", "."]), (BUILD, []),
    (PULL, ["--parallel", "x", "busybox"]), (PUSH, ["a", "b", "c"]),
]


def _id(x: object) -> str:
    return " ".join(x) or "<none>" if isinstance(x, list) else str(x)


@pytest.mark.parametrize(("command", "argv"), PLAIN, ids=_id)
def test_plain_lines_parse_as_argparse_does(command: Command, argv: list[str]) -> None:
    simple = command.module.parse_simple(argv)
    assert simple is not None, "a plain command line should not need argparse"
    assert vars(simple) == cliparse.with_argparse(command.module.add_arguments, f"pyreg {command}", argv)


@pytest.mark.parametrize(("command", "argv"), DECLINED, ids=_id)
def test_anything_else_is_left_to_argparse(command: Command, argv: list[str]) -> None:
    assert command.module.parse_simple(argv) is None


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_every_option_of_argparse_is_known(command: Command) -> None:
    """An option added to add_arguments but not to the fast parser's tables would be declined
    (safe, but slow); one with another dest would differ from argparse's namespace. Each known
    option is taken on a line of its own."""
    parser = cliparse.argparse_parser(command.module.add_arguments, f"pyreg {command}")
    for action in parser._actions:
        for option in action.option_strings:
            if option in command.left_to_argparse:
                continue
            assert command.known.get(option) == action.dest, option
            value = [] if action.nargs == 0 else [_a_value(command, option)]
            line = [option, *value, *_positionals(command)]
            assert command.module.parse_simple(line) is not None, line


def _a_value(command: Command, option: str) -> str:
    """A value the option accepts."""
    return {"--parallel": "2", "--cpus": "1", "--pids-limit": "1", "-m": "1m", "--memory": "1m",
            "-v": "/a:/b", "--volume": "/a:/b", "--restart": "no", "--network": "none", "--net": "none",
            "--compression": "gzip", "--source-date-epoch": "0", "--chunk-size": "1M",
            "--platform": "linux/amd64"}.get(option, "x")


def _positionals(command: Command) -> list[str]:
    return {"run": ["img"], "build": ["."], "pull": ["reg/x"], "push": ["img", "reg/img:1"]}[command.name]


@pytest.mark.parametrize(("command", "argv"), ERRORS, ids=_id)
def test_errors_stay_argparses(command: Command, argv: list[str]) -> None:
    p = cliparse.pyreg_cli(command.name, *argv)
    assert p.returncode == 2
    assert p.stderr.startswith(f"usage: pyreg {command} ")
    assert f"pyreg {command}: error: " in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_plain_line_imports_no_argparse(command: Command) -> None:
    """The point of the fast parsers: a plain line reaches the command without argparse (nor
    gettext and locale, which its messages pull in; nor tempfile for a pull or push)."""
    code = ("import sys\nfrom pyreg.client import cli\n"
            f"import {command.module.__name__} as command\n"
            "seen = []\ncommand.run = lambda args, **kw: seen.append(vars(args)) or 0\n"
            f"assert cli.main({[command.name, *command.plain_line]!r}) == 0\n"
            f"print(len(seen), sorted(m for m in {command.not_imported!r} if m in sys.modules))\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1 []"
