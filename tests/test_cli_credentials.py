"""Credentials shared with podman/skopeo as well as docker: ``auth.json`` read in podman's order
beside ``~/.docker/config.json``; ``login --authfile``; docker's file by default. Real pyreg with
htpasswd, real ``pyreg`` runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.auth import USERS
from tests.fixtures.client import ClientEnv, mem_image, write_oci_layout


def _auth(host: str, user: str, password: str) -> str:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}})


@pytest.fixture
def locked(pyreg_factory: Any, htpasswd_users: Path) -> Any:
    return pyreg_factory({"auth": {"htpasswd": {"realm": "r", "path": str(htpasswd_users)}}})


def test_auth_files_in_podmans_order(locked: Any, client_env: ClientEnv, tmp_path: Path) -> None:
    host = locked.host
    layout = write_oci_layout(tmp_path / "img", mem_image({"a": b"1"}))
    env = client_env.env
    env.pop("REGISTRY_AUTH_FILE")
    runtime_dir, config_home = tmp_path / "xdg-run", Path(env["XDG_CONFIG_HOME"])
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    run_file = runtime_dir / "containers" / "auth.json"
    config_file = config_home / "containers" / "auth.json"
    good, bad = USERS["alice"], "wrong-password"

    def push_works() -> bool:
        proc = client_env.run("push", str(layout), f"{host}/team/a:1", check=False)
        assert "Traceback" not in proc.stderr
        return proc.returncode == 0

    assert not push_works()
    # login --authfile: that file (podman's format), not docker's
    client_env.run("login", host, "-u", "alice", "--password-stdin", "--authfile", str(run_file),
                   input=good + "\n")
    assert json.loads(run_file.read_text())["auths"][host]["auth"] == base64.b64encode(
        f"alice:{good}".encode()).decode()
    assert not client_env.docker_config.exists()
    assert push_works()  # $XDG_RUNTIME_DIR/containers/auth.json is read
    # podman's order: the runtime file before ~/.config's, before docker's
    config_file.parent.mkdir(parents=True)
    config_file.write_text(_auth(host, "alice", bad))
    client_env.docker_config.write_text(_auth(host, "alice", bad))
    assert push_works()
    run_file.unlink()
    assert not push_works()  # now ~/.config/containers/auth.json's wrong password is the one used
    config_file.write_text(_auth(host, "alice", good))
    assert push_works()
    config_file.unlink()
    assert not push_works()  # docker's, wrong
    client_env.docker_config.write_text(_auth(host, "alice", good))
    assert push_works()
    # $REGISTRY_AUTH_FILE comes first, and is where login writes
    named = tmp_path / "named.json"
    named.write_text(_auth(host, "alice", bad))
    env["REGISTRY_AUTH_FILE"] = str(named)
    assert not push_works()
    client_env.run("login", host, "-u", "alice", "--password-stdin", input=good + "\n")
    assert push_works() and host in json.loads(named.read_text())["auths"]
    client_env.run("logout", host)
    assert host not in json.loads(named.read_text())["auths"]
    assert push_works()  # docker's file still has them
    # no --authfile, no $REGISTRY_AUTH_FILE: login writes docker's file, as docker does
    env.pop("REGISTRY_AUTH_FILE")
    client_env.docker_config.unlink()
    out = client_env.run("login", host, "-u", "alice", "--password-stdin", input=good + "\n").stdout
    assert str(client_env.docker_config) in out
    assert host in json.loads(client_env.docker_config.read_text())["auths"]


def test_login_help_says_where(client_env: ClientEnv) -> None:
    text = " ".join(client_env.run("login", "--help").stdout.split())
    assert "--authfile" in text and "~/.docker/config.json" in text and "REGISTRY_AUTH_FILE" in text


def test_cred_helpers_in_an_auth_json(locked: Any, client_env: ClientEnv, tmp_path: Path) -> None:
    """credHelpers in podman's file work as in docker's: the helper named there answers."""
    host = locked.host
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    helper = helper_dir / "docker-credential-testhelper"
    secret = json.dumps({"Username": "alice", "Secret": USERS["alice"]})
    helper.write_text(f"#!/bin/sh\n[ \"$1\" = get ] && echo '{secret}'\n")
    helper.chmod(0o755)
    env = client_env.env
    env["PATH"] = f"{helper_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"credHelpers": {host: "testhelper"}}))
    env["REGISTRY_AUTH_FILE"] = str(auth)
    layout = write_oci_layout(tmp_path / "img", mem_image({"a": b"1"}))
    client_env.run("push", str(layout), f"{host}/team/a:1")
