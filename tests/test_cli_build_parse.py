"""``pyreg build``'s own parser (``parse_simple``, a cached rebuild's start-up) against argparse's:
it gives exactly argparse's namespace or declines (None), and argparse parses the words again."""

from __future__ import annotations

import argparse

import pytest

from pyreg.runtime.commands import build
from tests.fixtures import cliparse


def argparse_parser() -> argparse.ArgumentParser:
    return cliparse.argparse_parser(build.add_arguments, "pyreg build")


def with_argparse(argv: list[str]) -> dict[str, object] | None:
    return cliparse.with_argparse(build.add_arguments, "pyreg build", argv)


PLAIN = [
    ["."],
    ["-q", "-t", "hello", "examples/hello"],
    ["--tag", "a:1", "--tag=b", "-t", "c", "ctx"],
    ["ctx", "-t", "after", "--pull"],
    ["-f", "Dockerfile.x", "--file=other", "--target", "build", "ctx"],
    ["--build-arg", "A=1", "--build-arg=B", "--build-arg", "C=", "--label", "k=v", "--label=x", "ctx"],
    ["--no-cache", "--pull", "--push", "--quiet", "ctx"],
    ["--platform", "linux/amd64", "--network", "none", "--network=host", "--iidfile", "/tmp/id", "ctx"],
    ["--source-date-epoch", "0", "--compression", "zstd", "--compression=gzip", "ctx"],
    ["--target=", "ctx"],
]

DECLINED = [
    [], ["-q"], ["-h"], ["--help"], ["-"], ["-f", "-", "."], ["-qt", "x", "."], ["-tx", "."],
    ["--tag"], ["--no-cache=1", "."], ["--unknown", "."], ["--", "."], ["a", "b"],
    ["--network", "bridge", "."], ["--compression", "xz", "."], ["--build-arg", "=1", "."],
    ["--source-date-epoch", "yesterday", "."], ["--label", "-x", "."], ["--no-c", "."],
]


@pytest.mark.parametrize("argv", PLAIN, ids=lambda a: " ".join(a))
def test_plain_arguments_parse_as_argparse_does(argv: list[str]) -> None:
    simple = build.parse_simple(argv)
    assert simple is not None, "a plain command line should not need argparse"
    assert vars(simple) == with_argparse(argv)


@pytest.mark.parametrize("argv", DECLINED, ids=lambda a: " ".join(a) or "<none>")
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert build.parse_simple(argv) is None


def test_every_option_of_argparse_is_known() -> None:
    known = {**build._FLAGS, **build._VALUES, **build._LISTS}
    for action in argparse_parser()._actions:
        for option in action.option_strings:
            if option in ("-h", "--help"):
                continue
            assert known.get(option) == action.dest, option


@pytest.mark.parametrize("argv", [["--network", "bridge", "."], ["--build-arg", "=1", "."], []])
def test_errors_stay_argparses(argv: list[str]) -> None:
    p = cliparse.pyreg_cli("build", *argv)
    assert p.returncode == 2
    assert p.stderr.startswith("usage: pyreg build ")
    assert "pyreg build: error: " in p.stderr
    assert "Traceback" not in p.stderr


def test_build_path_imports_no_argparse() -> None:
    """A plain ``pyreg build`` command line reaches the build without argparse, gettext, locale."""
    code = ("import sys\nfrom pyreg.client import cli\nfrom pyreg.runtime.commands import build\n"
            "seen = []\nbuild.run = lambda args, **kw: seen.append(vars(args)) or 0\n"
            "assert cli.main(['build', '-q', '-t', 'x', '.']) == 0\n"
            "late = sorted(m for m in ('argparse', 'gettext', 'locale') if m in sys.modules)\n"
            "print(seen[0]['tag'], late)\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['x'] []"
