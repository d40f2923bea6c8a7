"""What to run: the image config overridden by ``pyreg run``'s flags, as docker combines them
(entrypoint and cmd, env, working dir, user, stop signal), the confinement flags and the
operator's defaults from the client config -> a ``ContainerConfig``."""

from __future__ import annotations

import os

from pyreg.runtime.record import ContainerConfig

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# A fork bomb in a forgotten container must not take the host: podman's default (containers.conf
# pids_limit) — far above what a service needs (tens to hundreds of tasks, threads included),
# far below the kernel's pid_max. Docker has none. ``run.pidslimit`` in the client config (0: no
# limit) or ``--pids-limit`` change it.
DEFAULT_PIDS_LIMIT = 2048

def build_config(image_config: dict[str, Any], *, cmd: list[str], entrypoint: str | None = None,
                 env: list[str] | None = None, workdir: str | None = None, user: str | None = None,
                 ) -> ContainerConfig:
    """What to run: the image config, overridden by flags, the way docker combines them."""
    cfg = image_config.get("config") or {}
    ep = list(cfg.get("Entrypoint") or [])
    command = list(cfg.get("Cmd") or [])
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        command = list(cmd)
    elif cmd:
        command = list(cmd)
    merged: dict[str, str] = {}
    for item in [*(cfg.get("Env") or []), *(env or [])]:
        k, sep, v = item.partition("=")
        if not sep:
            if k in os.environ:
                merged[k] = os.environ[k]
            continue
        merged[k] = v
    if "PATH" not in merged:
        merged["PATH"] = DEFAULT_PATH.partition("=")[2]
    return ContainerConfig(
        entrypoint=ep, cmd=command, argv=ep + command,
        env=[f"{k}={v}" for k, v in merged.items()],
        workdir=workdir or cfg.get("WorkingDir") or "/",
        user=user if user is not None else (cfg.get("User") or ""),
        stop_signal=cfg.get("StopSignal") or "SIGTERM",
    )


def parse_bytes(text: str) -> int:
    """``256m``, ``1g``, ``1048576``, ``512MiB`` -> bytes (``storage.units``: powers of 1024)."""
    value = _size(text)
    if value is None:
        import argparse  # only for the error: ``run``'s start-up imports no argparse

        raise argparse.ArgumentTypeError(f"invalid size: {text!r}")
    return value


def _size(text: str) -> int | None:
    """``parse_bytes`` without the error: None for anything that is not a positive size."""
    from pyreg.storage.units import parse_size

    try:
        return parse_size(text) or None
    except ValueError:
        return None


def run_defaults() -> dict[str, Any]:
    """``run.memory`` and ``run.pidslimit`` from the client config (the operator's defaults)."""
    from pyreg.storage.clientconfig import client_config

    section = client_config().get("run") or {}
    if not isinstance(section, dict):
        raise ValueError("client config: 'run' must be an object")
    out: dict[str, Any] = {"memory": None, "pidslimit": DEFAULT_PIDS_LIMIT}
    if section.get("memory") is not None:
        out["memory"] = _size(str(section["memory"]))
        if out["memory"] is None:
            raise ValueError(f"client config run.memory: invalid size: {str(section['memory'])!r}")
    if section.get("pidslimit") is not None:
        value = section["pidslimit"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"client config run.pidslimit must be an integer, not {value!r}")
        out["pidslimit"] = value if value > 0 else None
    out["network"], out["subnet"] = section.get("network"), section.get("subnet")  # run.py
    return out


def security_options(opts: list[str]) -> dict[str, Any]:
    """``--security-opt`` values -> {"seccomp": None|"unconfined"|profile text, "no_new_privileges":
    None|bool}. ``key=value`` and docker's older ``key:value`` are both accepted."""
    import json

    out: dict[str, Any] = {"seccomp": None, "no_new_privileges": None}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep and ":" in opt:
            key, _, value = opt.partition(":")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise ValueError(f"invalid --security-opt {opt!r}: no-new-privileges takes true or false")
            out["no_new_privileges"] = value != "false"
        elif key == "seccomp":
            if value == "unconfined":
                out["seccomp"] = "unconfined"
            elif value:
                try:
                    with open(value) as f:
                        text = f.read()
                    json.loads(text)
                except (OSError, ValueError) as e:
                    raise ValueError(f"opening seccomp profile ({value}) failed: {e}") from None
                out["seccomp"] = text
            else:
                raise ValueError(f"invalid --security-opt {opt!r}: seccomp=unconfined|FILE")
        else:
            raise ValueError(f"invalid --security-opt {opt!r}: supported are seccomp= and no-new-privileges")
    return out


def confinement(cfg: ContainerConfig, *, privileged: bool, cap_add: list[str], cap_drop: list[str],
                security_opt: list[str], device: list[str]) -> None:
    """The confinement flags (``--privileged``, ``--cap-add``/``--cap-drop``, ``--security-opt``,
    ``--device``) into ``cfg`` (errors: ValueError)."""
    from pyreg.runtime import confine, devices

    sec = security_options(security_opt)
    nnp = sec["no_new_privileges"]
    cfg.privileged = privileged
    cfg.capabilities = confine.tweak_capabilities(cap_add, cap_drop, privileged)
    cfg.seccomp = "unconfined" if privileged else sec["seccomp"]
    # on unless asked otherwise (docker: off unless asked); --privileged: docker's default
    cfg.no_new_privileges = nnp if nnp is not None else not privileged
    cfg.devices = [devices.parse_device(d) for d in device]
