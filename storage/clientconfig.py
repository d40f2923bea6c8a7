"""The client config file (``$PYREG_CONFIG``, else ``$XDG_CONFIG_HOME/pyreg/config.json``).

Its own small module, stdlib only: ``pyreg run`` reads its ``run`` defaults on every start, and
``storage.reference`` (where these lived) costs tens of milliseconds of imports.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # typing and pathlib cost milliseconds of `pyreg run` start-up
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any


def _path() -> str:
    explicit = os.environ.get("PYREG_CONFIG")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "pyreg", "config.json")


def config_path() -> Path:
    from pathlib import Path

    return Path(_path())


def store_root() -> str:
    """The local store's directory: ``$PYREG_STORE``, else ``store`` in the client config, else
    /var/lib/pyreg for root, else ``$XDG_DATA_HOME/pyreg`` (``~/.local/share/pyreg``). Here, not
    in storage/localstore.py, so that a pull of a present image finds it without the store's model."""
    explicit = os.environ.get("PYREG_STORE") or client_config().get("store")
    if explicit:
        return os.path.expanduser(str(explicit))
    if os.geteuid() == 0:
        return "/var/lib/pyreg"
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "pyreg")


def client_config() -> dict[str, Any]:
    """The client config file as a dict ({} when absent); a broken file is an error, not silence."""
    return read_json_object(_path(), "client config")


def read_json_object(path: str | os.PathLike[str], what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """A JSON file holding one object ({} when absent; shared by the client config and docker's
    credentials file, where docker tolerates an empty file: ``empty_ok``); unreadable or not an
    object is a ValueError naming ``what`` and the path."""
    try:
        with open(path) as f:
            text = f.read()
            data = json.loads(text or "{}" if empty_ok else text)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must be a JSON object")
    return data
