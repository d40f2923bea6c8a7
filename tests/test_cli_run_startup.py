"""``pyreg run``'s start-up beyond its fast parser (tests/test_cli_fast_parse.py): the console
script's path into a container, and the garbage collector off while starting, on again after."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures import cliparse
from tests.fixtures.runtime import RuntimeEnv

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
