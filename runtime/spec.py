"""What to run: the image config overridden by ``pyreg run``'s flags, as docker combines them
(entrypoint and cmd, env, working dir, user, stop signal) -> a ``ContainerConfig``."""

from __future__ import annotations

import os

from runtime.record import ContainerConfig

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"



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
