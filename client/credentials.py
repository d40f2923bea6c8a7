"""Registry credentials, shared with docker (``~/.docker/config.json``) and podman/skopeo
(``auth.json``, containers-auth.json(5)).

Files read, first with an entry for the registry wins (podman's order): ``--authfile`` or
``$REGISTRY_AUTH_FILE``, else ``$XDG_RUNTIME_DIR/containers/auth.json`` (root without it:
``/run/containers/0/auth.json``); then ``${XDG_CONFIG_HOME:-~/.config}/containers/auth.json``;
then docker's ``config.json`` (``$DOCKER_CONFIG`` moves its directory). In each file:
``credHelpers[host]``, then ``credsStore``, then ``auths[host].auth`` (base64 ``user:password``) /
``identitytoken``. Helpers are the ``docker-credential-<name>`` programs (``get``/``store``/
``erase`` over stdin/stdout). ``pyreg login``/``logout`` write docker's file unless ``--authfile``
or ``$REGISTRY_AUTH_FILE`` names another — so what login writes, the next read finds first.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyreg.storage.clientconfig import read_json_object

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


class CredentialsError(Exception):
    pass


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # an OAuth refresh token ("identitytoken")


def config_file() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def write_file(authfile: str | None = None) -> Path:
    """Where ``login`` writes and ``logout`` erases: ``authfile``, ``$REGISTRY_AUTH_FILE``, else
    docker's ``config.json`` (docker's default, so docker sees a ``pyreg login``)."""
    chosen = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    return Path(chosen) if chosen else config_file()


def read_files(authfile: str | None = None) -> list[Path]:
    """The files credentials are looked up in, in podman's order (see the module docstring)."""
    first = authfile or os.environ.get("REGISTRY_AUTH_FILE")
    if first:
        paths = [Path(first)]
    elif os.environ.get("XDG_RUNTIME_DIR"):
        paths = [Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"]
    else:
        paths = [Path(f"/run/containers/{os.getuid()}/auth.json")] if os.getuid() == 0 else []
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    paths += [Path(config_home) / "containers" / "auth.json", config_file()]
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def _load(path: Path | None = None) -> dict[str, Any]:
    try:
        return read_json_object(path or config_file(), "credentials file", empty_ok=True)
    except ValueError as exc:
        raise CredentialsError(str(exc)) from exc


def _save(data: dict[str, Any], path: Path | None = None) -> None:
    path = path or config_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent="\t")
        f.write("\n")
    os.replace(tmp, path)


def _keys(registry: str) -> list[str]:
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/",
            f"https://{registry}/v2/"]
    if registry in DOCKER_HUB_KEYS:
        keys += list(DOCKER_HUB_KEYS)
    return keys


def _server(registry: str) -> str:
    """The key docker itself uses: Docker Hub's is its legacy v1 URL, everyone else's the host."""
    return DOCKER_HUB_KEYS[0] if registry in DOCKER_HUB_KEYS else registry


def _helper_for(data: dict[str, Any], registry: str) -> str | None:
    helpers = data.get("credHelpers") or {}
    for key in _keys(registry):
        if key in helpers:
            return str(helpers[key])
    store = data.get("credsStore")
    return str(store) if store else None


def _run_helper(helper: str, action: str, payload: str) -> str:
    import subprocess  # only a credential helper needs it: not imported by every registry command

    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([program, action], input=payload, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise CredentialsError(f"credential helper {program} not found in PATH") from None
    if proc.returncode != 0:
        message = (proc.stdout.strip() or proc.stderr.strip())
        if action == "get" and "credentials not found" in message.lower():
            return ""
        raise CredentialsError(f"{program} {action}: {message or f'exit {proc.returncode}'}")
    return proc.stdout


def get(registry: str, authfile: str | None = None) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]) from the first file that has some (podman's
    order, ``read_files``), or None for anonymous."""
    for path in read_files(authfile):
        found = _get_from(_load(path), registry)
        if found is not None:
            return found
    return None


def _get_from(data: dict[str, Any], registry: str) -> Credentials | None:
    helper = _helper_for(data, registry)
    if helper:
        out = _run_helper(helper, "get", _server(registry))
        if out.strip():
            doc = json.loads(out)
            user, secret = doc.get("Username"), doc.get("Secret")
            if user == "<token>":
                return Credentials(identity_token=secret)
            return Credentials(user, secret)
        return None
    auths = data.get("auths") or {}
    for key in _keys(registry):
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("identitytoken"):
            user = base64.b64decode(entry.get("auth") or "").decode().partition(":")[0] or None
            return Credentials(username=user, identity_token=entry["identitytoken"])
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password"))
    return None


def store(registry: str, username: str, password: str, identity_token: str | None = None,
          authfile: str | None = None) -> str:
    """Save credentials in ``write_file(authfile)`` (through its helper if one is configured for
    the registry); return where.

    With ``identity_token`` (a refresh token the registry's token server handed out at login)
    that is kept instead of the password, as ``docker login`` does."""
    path = write_file(authfile)
    data = _load(path)
    helper = _helper_for(data, registry)
    if helper:
        user, secret = ("<token>", identity_token) if identity_token else (username, password)
        _run_helper(helper, "store", json.dumps({"ServerURL": _server(registry), "Username": user,
                                                 "Secret": secret}))
        data.setdefault("auths", {}).setdefault(registry, {})
        data["auths"][registry].pop("auth", None)
        _save(data, path)
        return f"docker-credential-{helper}"
    if identity_token:
        entry = {"auth": base64.b64encode(f"{username}:".encode()).decode(), "identitytoken": identity_token}
    else:
        entry = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    data.setdefault("auths", {})[_server(registry)] = entry
    _save(data, path)
    return str(path)


def erase(registry: str, authfile: str | None = None) -> bool:
    """Forget credentials for the registry in ``write_file(authfile)``; False when there were none."""
    path = write_file(authfile)
    data = _load(path)
    found = False
    helper = _helper_for(data, registry)
    if helper:
        try:
            _run_helper(helper, "erase", _server(registry))
            found = True
        except CredentialsError as exc:
            if "not found" not in str(exc).lower():
                raise
    auths = data.get("auths") or {}
    for key in _keys(registry):
        if key in auths:
            del auths[key]
            found = True
    if found:
        _save(data, path)
    return found
