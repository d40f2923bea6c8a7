"""Every option and argument of every ``pyreg`` command has help text (issue 12), and a
non-root user's defaults are their own directories (rootless by default)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from pyreg.client.cli import COMMANDS


def _parsers(parser: argparse.ArgumentParser, prog: str) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{prog} {name}")
    return out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"pyreg {name}")
    module.add_arguments(parser)
    missing = []
    for prog, p in _parsers(parser, f"pyreg {name}"):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{prog}: {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help text:\n" + "\n".join(missing)


def test_non_root_defaults_are_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pyreg.runtime import state
    from pyreg.storage.localstore import LocalStore

    monkeypatch.delenv("PYREG_RUN_ROOT", raising=False)
    monkeypatch.delenv("PYREG_STORE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", f"{tmp_path}/run")
    monkeypatch.setenv("XDG_DATA_HOME", f"{tmp_path}/data")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert state.run_root() == f"{tmp_path}/run/pyreg"
    assert str(LocalStore.default_root()) == f"{tmp_path}/data/pyreg"
