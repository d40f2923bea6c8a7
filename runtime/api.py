"""The runtime's public face for the rest of pyreg: what the client may ask of it.

The client reads containers only through these functions (never ``runtime.state`` or the
record classes), and hands ``extract_layer`` to the local store; the runtime in turn is handed
what it needs from the client (``pyreg run`` gets a pull function from the CLI) and imports no
client code. Answers are plain JSON-shaped values, so the record's shape can change behind them.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.extract import Extracted


def extract_layer(blob_path: str | os.PathLike[str], dest_dir: str | os.PathLike[str],
                  media_type: str | None = None, **options: Any) -> Extracted:
    """The safe layer extractor (runtime/extract.py), for ``LocalStore(extractor=...)``;
    imported when first used: tarfile and friends cost start-up."""
    from pyreg.runtime.extract import extract_layer as extract

    return extract(blob_path, dest_dir, media_type, **options)


def inspect_container(ref: str) -> dict[str, Any] | None:
    """``docker inspect``-shaped view of a container (by id, name or unique id prefix), or None
    when there is no such container."""
    from pyreg.runtime import state

    rec = state.lookup(ref)
    if rec is None:
        return None
    cfg = rec.config
    running = rec.status == "running"
    return {
        "Id": rec.id,
        "Name": "/" + rec.name,
        "Created": rec.created or None,
        "Path": (cfg.argv or [""])[0],
        "Args": cfg.argv[1:],
        "Image": rec.image_digest,
        "State": {
            "Status": rec.status,
            "Running": running,
            "Pid": rec.pid if running else 0,
            "ExitCode": rec.exit_code or 0,
            "OOMKilled": bool(rec.oom_killed),
            "Error": rec.error or "",
            "StartedAt": rec.started_at or "0001-01-01T00:00:00Z",
            "FinishedAt": rec.finished_at or "0001-01-01T00:00:00Z",
        },
        "Config": {
            "Hostname": cfg.hostname or None,
            "User": cfg.user,
            "Env": cfg.env,
            "Cmd": cfg.cmd,
            "Entrypoint": cfg.entrypoint,
            "WorkingDir": cfg.workdir,
            "Image": rec.image or None,
        },
        "HostConfig": {
            "Memory": cfg.memory or 0,
            "NanoCpus": int((cfg.cpus or 0) * 1e9),
            "PidsLimit": cfg.pids_limit,
            "NetworkMode": cfg.network,
            "ReadonlyRootfs": cfg.read_only,
            "AutoRemove": cfg.rm,
            "Binds": [f"{h}:{c}{':ro' if ro else ''}" for h, c, ro in cfg.volumes],
        },
        "Cgroup": rec.cgroup,
        "LogPath": os.path.join(state.container_dir(rec.id), "log"),
    }


def run_as_program() -> None:
    """Said by the CLI when ``pyreg run`` is the whole process (it ends with ``os._exit`` once the
    command returns): a foreground ``--rm`` may then report the exit status first and leave the
    unseen part of the removal to a detached child (runtime/container.py ``_remove_after_exit``).
    In-process callers (tests, ``build``) keep removal done before ``run`` returns."""
    from pyreg.runtime import container

    container.background_removal = True


def containers_by_image() -> dict[str, list[str]]:
    """Manifest digest -> names of the containers (any state) made from it: their layers are
    overlay lower dirs, so the client's rmi and prune must keep them. Empty when there is no run
    root to read."""
    from pyreg.runtime import state

    out: dict[str, list[str]] = {}
    try:
        records = state.all_containers()
    except OSError:
        return {}
    for rec in records:
        if rec.image_digest:
            out.setdefault(rec.image_digest, []).append(rec.name or rec.id)
    return out


def prune_build_cache(store_root: str | os.PathLike[str]) -> int:
    """``pyreg prune``: remove the build cache kept under the store (runtime/build/cache.py);
    the number of entries and cache mounts removed."""
    from pathlib import Path

    from pyreg.runtime.build.cache import prune

    return prune(Path(store_root))
