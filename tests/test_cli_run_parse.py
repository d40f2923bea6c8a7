"""``pyreg run``'s own parser (``parse_simple``, the start-up path) against argparse's.

parse_simple either gives exactly the namespace argparse gives or declines (None), so that
argparse parses the words again and help, errors and its grammar's corners stay argparse's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pyreg.runtime.commands import run
from tests.fixtures import cliparse
from tests.fixtures.runtime import RuntimeEnv


def argparse_parser() -> argparse.ArgumentParser:
    return cliparse.argparse_parser(run.add_arguments, "pyreg run")


def with_argparse(argv: list[str]) -> dict[str, object] | None:
    return cliparse.with_argparse(run.add_arguments, "pyreg run", argv)


# plain command lines: parse_simple must take them (the fast path is used) and agree
PLAIN = [
    ["busybox"],
    ["busybox", "true"],
    ["--rm", "busybox", "true"],
    ["--rm", "-d", "-i", "-t", "--read-only", "--init", "--privileged", "-P", "busybox", "sh", "-c", "x"],
    ["--detach", "--interactive", "--tty", "--publish-all", "img"],
    ["--name", "web", "--hostname=h", "-w", "/tmp", "-u", "1000:1000", "--entrypoint", "", "img", "a"],
    ["--name=", "img"],
    ["-e", "A=1", "--env", "B=2", "--env=C=3", "-l", "k=v", "--label", "x", "img"],
    ["--env-file", "/nonexistent", "img"],
    ["-v", "/tmp:/data", "--volume=/srv:/srv:ro", "img"],
    ["-m", "256m", "--memory=1g", "--cpus", "0.5", "--pids-limit", "10", "img"],
    ["--restart", "always", "-d", "img"], ["--restart=on-failure:3", "img"],
    ["--network", "none", "--net=host", "--network-alias", "a", "img"],
    ["-p", "8080:80", "--publish=127.0.0.1:53:53/udp", "img"],
    ["--cap-add", "NET_ADMIN", "--cap-drop=ALL", "--security-opt", "seccomp=unconfined", "img"],
    ["--device", "/dev/fuse", "img"],
    ["busybox", "--rm", "-d", "--", "x"],  # after the image: all the command's
    ["busybox", "ls", "-l", "--name", "x"],
    ["--name=--odd", "img"],
    ["", "x"],
]

# what parse_simple leaves to argparse (it must decline, not guess); argparse may accept or refuse
DECLINED = [
    [], ["--rm"], ["-h"], ["--help"], ["-it", "img"], ["-dit", "img"], ["-eA=1", "img"],
    ["-e=A", "img"], ["--priv", "img"], ["--rm=1", "img"], ["--unknown", "img"],
    ["--", "img"], ["img", "--", "true"], ["-e", "-x", "img"], ["--name", "-n", "img"],
    ["--name"], ["-", "x"], ["--cpus", "lots", "img"], ["--pids-limit", "1.5", "img"],
    ["-m", "0", "img"], ["-m", "12q", "img"], ["-v", "nocolon", "img"], ["-v", "/a:/b:rx", "img"],
    ["--restart", "sometimes", "img"], ["--restart=on-failure:0", "img"], ["--cpus", "-1", "img"],
    ["-1", "img"], ["--network", "--rm", "img"],
]


@pytest.mark.parametrize("argv", PLAIN, ids=lambda a: " ".join(a) or "<none>")
def test_plain_arguments_parse_as_argparse_does(argv: list[str]) -> None:
    simple = run.parse_simple(argv)
    assert simple is not None, "a plain command line should not need argparse"
    assert vars(simple) == with_argparse(argv)


@pytest.mark.parametrize("argv", DECLINED, ids=lambda a: " ".join(a) or "<none>")
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert run.parse_simple(argv) is None


def test_every_option_of_argparse_is_known() -> None:
    """An option added to add_arguments but not to parse_simple's tables would be declined
    (safe) but slow; one with another dest or default would differ from argparse's."""
    known = {**run._FLAGS, **run._VALUES, **run._LISTS}
    for action in argparse_parser()._actions:
        for option in action.option_strings:
            if option in ("-h", "--help"):
                continue
            assert known.get(option) == action.dest, option


@pytest.mark.parametrize("argv", [["--cpus", "lots", "img"], ["-v", "nocolon", "img"], ["--rm"],
                                  ["--restart", "sometimes", "img"], ["-m", "0", "img"]])
def test_errors_stay_argparses(argv: list[str]) -> None:
    """A bad value: the usage line and argparse's message, exit 2, as before the fast path."""
    p = cliparse.pyreg_cli("run", *argv)
    assert p.returncode == 2
    assert p.stderr.startswith("usage: pyreg run ")
    assert "pyreg run: error: " in p.stderr
    assert "Traceback" not in p.stderr


def test_run_path_imports_no_argparse() -> None:
    """The point of parse_simple: ``run`` with plain arguments never imports argparse (nor
    gettext and locale, which argparse's messages pull in)."""
    code = ("import sys\nfrom pyreg.client import cli\n"
            "from pyreg.runtime.commands import run\n"
            "run.run = lambda args, **kw: 0\n"
            "assert cli.main(['run', '--rm', '-e', 'A=1', 'busybox', 'true']) == 0\n"
            "print(sorted(m for m in ('argparse', 'gettext', 'locale') if m in sys.modules))\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# what pip's console script runs: no runpy, so none of the modules ``python -m`` imports first
# (importlib, warnings) are there before the container's child has pivoted into the image, where
# a module imported late is not found
CONSOLE_SCRIPT = "import sys\nfrom pyreg.client.cli import main\nsys.exit(main())\n"


@pytest.mark.root
@pytest.mark.parametrize("argv", [
    ["--rm", "busybox", "true"],
    ["--rm", "-u", "nobody", "-w", "/tmp", "-e", "A=1", "--read-only", "busybox", "sh", "-c", "echo $A"],
    ["--rm", "--init", "busybox", "true"],
])
def test_run_started_as_the_console_script(busybox_store: RuntimeEnv, argv: list[str]) -> None:
    env = busybox_store
    env.run("run", "--rm", "busybox", "true", check=True)  # resolved once: the next start is the fast one
    p = subprocess.run([sys.executable, "-S", "-c", CONSOLE_SCRIPT, "run", *argv], env=env.env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("1" if "echo $A" in argv else "")


def test_the_collector_runs_again_for_the_supervision() -> None:
    """``pyreg run`` starts with the garbage collector off (client/cli.py); a supervisor that
    may live for days must not keep it so."""
    import gc

    from pyreg.runtime import container

    gc.disable()
    try:
        container._collect_again()
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


def test_run_started_as_a_program_turns_the_collector_off() -> None:
    code = ("import gc, sys\nfrom pyreg.client import cli\nfrom pyreg.runtime.commands import run\n"
            "seen = []\nrun.run = lambda args, **kw: seen.append(gc.isenabled()) or 0\n"
            "import atexit\natexit.register(lambda: print(seen))\n"
            "sys.argv = ['pyreg', 'run', 'busybox']\ncli.main()\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[False]"


def test_a_pull_for_run_collects_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that is not local is pulled in the run process: no start-up to save there."""
    import gc

    from pyreg.client import cli

    monkeypatch.setattr(cli, "main", lambda argv: 0)
    gc.disable()
    try:
        cli.pull_for_run("busybox")
        assert gc.isenabled()
    finally:
        gc.enable()
