"""What a ``pyreg serve`` worker imports for its configuration (issue 18: RSS per worker).

A worker builds its app from the JSON ``pyreg serve`` passes (``create_app_from_env``); modules
only some configurations use (boto3 for S3, jwt + cryptography for token auth, bcrypt for
htpasswd, yaml for a config file, redis-py, httpx for the mirror) must not be loaded by one that
does not use them: together they cost a worker tens of MiB. Checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ["boto3", "botocore", "jwt", "cryptography", "bcrypt", "yaml", "redis", "httpx"]

PROBE = """
import json, sys
from pyreg.registry.app import create_app_from_env
create_app_from_env()
print(json.dumps(sorted(m for m in {names} if m in sys.modules)))
"""


def loaded_by_worker(config: dict[str, object], names: list[str]) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    from pyreg.registry.app import CONFIG_ENV

    env[CONFIG_ENV] = json.dumps(config)
    out = subprocess.run([sys.executable, "-c", PROBE.format(names=names)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return json.loads(out.splitlines()[-1])


def test_filesystem_no_auth_worker_imports_no_optional_module(tmp_path: Path) -> None:
    config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}}
    assert loaded_by_worker(config, OPTIONAL) == []


def test_htpasswd_worker_loads_bcrypt_but_not_jwt(tmp_path: Path) -> None:
    """The lazy imports still happen where the config asks for them."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("")
    config = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
              "auth": {"htpasswd": {"realm": "r", "path": str(htpasswd)}}}
    assert loaded_by_worker(config, ["bcrypt", "jwt", "cryptography"]) == ["bcrypt"]
