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


def client_config() -> dict[str, Any]:
    """The client config file as a dict ({} when absent); a broken file is an error, not silence."""
    path = _path()
    try:
        with open(path) as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read client config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"client config {path} must be a JSON object")
    return data
