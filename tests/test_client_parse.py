"""``pyreg pull`` / ``push``'s own parser (``parse_simple`` over client/common.py's
``parse_plain``, the start-up path) against argparse's.

parse_simple either gives exactly the namespace argparse gives or declines (None), so that
argparse parses the words again and help, errors and ``--ca-file``'s check stay argparse's.
"""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from pyreg.client import common
from pyreg.client.commands import pull, push
from tests.fixtures import cliparse


def parser_of(module: ModuleType) -> argparse.ArgumentParser:
    return cliparse.argparse_parser(module.add_arguments, f"pyreg {module.__name__}")


def with_argparse(module: ModuleType, argv: list[str]) -> dict[str, object] | None:
    return cliparse.with_argparse(module.add_arguments, f"pyreg {module.__name__}", argv)


PLAIN = [
    (pull, ["busybox"]),
    (pull, ["-q", "--no-extract", "127.0.0.1:5000/a/b:1"]),
    (pull, ["127.0.0.1:5000/a/b:1", "--json", "-q"]),
    (pull, ["--platform", "linux/arm64", "--parallel", "8", "--insecure", "reg/x"]),
    (pull, ["--platform=linux/amd64", "--parallel=2", "-a", "reg/x"]),
    (pull, ["--all-tags", "--quiet", "reg/x"]),
    (push, ["/tmp/layout:1", "127.0.0.1:5000/a/b:1"]),
    (push, ["-q", "/tmp/layout:1", "127.0.0.1:5000/a/b:1", "--json"]),
    (push, ["busybox"]),
    (push, ["--chunk-size", "8M", "--parallel", "3", "img", "reg/img:1"]),
    (push, ["--chunk-size=1M", "--insecure", "img", "reg/img:1"]),
]

DECLINED = [
    (pull, []),
    (pull, ["-h"]),
    (pull, ["--help"]),
    (pull, ["--ca-file", "/etc/hostname", "busybox"]),
    (pull, ["--no-ext", "busybox"]),               # an abbreviation: argparse's business
    (pull, ["-qa", "busybox"]),                    # combined short options
    (pull, ["--parallel", "x", "busybox"]),
    (pull, ["--parallel", "-1", "busybox"]),
    (pull, ["--platform"]),
    (pull, ["--platform", "--json", "busybox"]),
    (pull, ["a", "b"]),
    (pull, ["--", "busybox"]),
    (pull, ["--no-extract=yes", "busybox"]),
    (push, []),
    (push, ["a", "b", "c"]),
    (push, ["--chunk-size"]),
]


def _id(x: object) -> str:
    return " ".join(x) if isinstance(x, list) else ""


@pytest.mark.parametrize(("module", "argv"), PLAIN, ids=_id)
def test_plain_lines_parse_as_argparse_does(module: ModuleType, argv: list[str]) -> None:
    simple = module.parse_simple(argv)
    assert simple is not None
    assert vars(simple) == with_argparse(module, argv)


@pytest.mark.parametrize(("module", "argv"), DECLINED, ids=_id)
def test_anything_else_is_left_to_argparse(module: ModuleType, argv: list[str]) -> None:
    assert module.parse_simple(argv) is None


@pytest.mark.parametrize("module", [pull, push])
def test_every_option_of_argparse_is_known(module: ModuleType) -> None:
    """An option added to add_arguments but not to the plain tables would be declined (safe,
    slow); one with another dest would differ from argparse's namespace."""
    flags = {**common.TRANSFER_FLAGS, **common.TRANSFER_VALUES}
    names = {"pull": {"-a": "all_tags", "--all-tags": "all_tags", "--no-extract": "no_extract",
                      "--platform": "platform"},
             "push": {"--chunk-size": "chunk_size"}}[module.__name__.rsplit(".", 1)[1]]
    known = {**flags, **names}
    for action in parser_of(module)._actions:
        for option in action.option_strings:
            if option in ("-h", "--help", "--ca-file"):
                continue  # declined on purpose: argparse prints help / checks the file
            assert known.get(option) == action.dest, option
            if option in flags or option in names:
                assert module.parse_simple([option, "1", "x"] if option in common.TRANSFER_VALUES
                                           or option in ("--platform", "--chunk-size") else [option, "x"]) \
                    is not None, option


def test_errors_stay_argparses() -> None:
    """A bad value: argparse's usage line and message, exit 2, as before the plain parser."""
    p = cliparse.pyreg_cli("pull", "--parallel", "x", "busybox")
    assert p.returncode == 2 and p.stderr.startswith("usage: pyreg pull ")
    assert "Traceback" not in p.stderr


def test_pull_and_push_import_no_argparse() -> None:
    """The point: a plain pull or push never imports argparse (nor gettext and locale, which
    its messages pull in), nor tempfile for a push that unpacks no archive."""
    code = ("import sys\nfrom pyreg.client import cli\n"
            "from pyreg.client.commands import pull, push\n"
            "pull.run = push.run = lambda args, **kw: 0\n"
            "assert cli.main(['pull', '-q', '--no-extract', '127.0.0.1:1/a:1']) == 0\n"
            "assert cli.main(['push', '-q', '/nowhere:1', '127.0.0.1:1/a:1']) == 0\n"
            "print(sorted(m for m in ('argparse', 'gettext', 'locale', 'tempfile') if m in sys.modules))\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
