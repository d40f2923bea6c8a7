"""Container state on disk, so ``ps``, ``logs``, ``stop`` and ``rm`` work from any shell.

Layout under the run root (``$PYREG_RUN_ROOT``, default ``/run/pyreg``; for non-root users
``$XDG_RUNTIME_DIR/pyreg``), every directory 0700 and refused if another user could swap it
(:func:`ensure_run_root`)::

    containers/<id>/state.json     the record below, replaced atomically on every change
    containers/<id>/log            stdout and stderr of a detached container
    containers/<id>/hosts|hostname|resolv.conf   bind-mounted into the container's /etc
    containers/<id>/upper, work    the container's overlay upper and work dirs
    containers/<id>/rootfs         the overlay mount point (mounted only inside the container)

A record is a plain dict: ``id``, ``name``, ``image``, ``config`` (what was run: argv, env,
workdir, user, hostname, limits, …), ``status`` (created, running, exited), ``pid`` and
``pid_start`` (the container's PID 1 on the host, and its start time, to never signal a recycled
pid), ``supervisor``, ``exit_code``, ``oom_killed``, ``created``, ``started_at``,
``finished_at``, ``cgroup``.

The client's ``inspect`` asks :func:`lookup` / :func:`inspect` for containers.
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

NAME_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
                   "merry", "nimble", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zealous")
NAME_NOUNS = ("babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
              "noether", "pascal", "ritchie", "shannon", "thompson", "turing", "volta", "wozniak")


def run_root() -> str:
    explicit = os.environ.get("PYREG_RUN_ROOT")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        return "/run/pyreg"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/pyreg-{os.getuid()}", "pyreg")


def containers_dir() -> str:
    return os.path.join(run_root(), "containers")


def ensure_run_root() -> str:
    """Create the run root (and ``containers/``) 0700, tighten old 0755 ones, and refuse one that
    another user owns or could swap out; returns its path.

    It holds each container's upper dir (whatever the container made setuid lands there, on a
    host mount that honours setuid), its state with the environment it was given, and the
    resolution cache that names the layer dirs ``run`` mounts: none of it is for other users to
    read, and none of it for them to replace — the ``/tmp/pyreg-$UID`` fallback is the classic
    place to try. Raises ``storage.private.UnsafeDirError`` (a PermissionError) with the reason.
    """
    from storage.private import check_owned, make_private_dir

    root = run_root()
    make_private_dir(root)
    check_owned(root, "run root")
    make_private_dir(os.path.join(root, "containers"))
    return root


def container_dir(cid: str) -> str:
    return os.path.join(containers_dir(), cid)


def now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def new_id() -> str:
    return os.urandom(32).hex()


def random_name(taken: set[str]) -> str:
    for _ in range(100):
        b = os.urandom(3)
        name = f"{NAME_ADJECTIVES[b[0] % len(NAME_ADJECTIVES)]}_{NAME_NOUNS[b[1] % len(NAME_NOUNS)]}"
        if name not in taken:
            return name
        name = f"{name}{b[2]}"
        if name not in taken:
            return name
    return "c_" + os.urandom(6).hex()


def save(record: dict[str, Any]) -> None:
    """Replace state.json atomically; quietly does nothing once the container was removed."""
    d = container_dir(record["id"])
    tmp = os.path.join(d, f".state.{os.getpid()}.tmp")
    try:  # 0600 whatever the umask: the record holds the container's environment (secrets, often)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(d, "state.json"))
    except FileNotFoundError:
        pass


def load(cid: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(container_dir(cid), "state.json")) as f:
            rec: dict[str, Any] = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return refresh(rec)


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid, a process identity that survives pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rpartition(b")")[2].split()[19])


def is_alive(rec: dict[str, Any]) -> bool:
    pid = rec.get("pid")
    return bool(pid) and proc_start_time(int(pid)) == rec.get("pid_start")  # type: ignore[arg-type]


def refresh(rec: dict[str, Any]) -> dict[str, Any]:
    """A 'running' record whose process and supervisor are gone is shown as exited."""
    if rec.get("status") == "running" and not is_alive(rec):
        sup = rec.get("supervisor")
        if not sup or proc_start_time(int(sup)) != rec.get("supervisor_start"):
            rec = {**rec, "status": "exited", "exit_code": rec.get("exit_code") if rec.get("exit_code")
                   is not None else 255, "finished_at": rec.get("finished_at") or now()}
    return rec


def all_containers() -> list[dict[str, Any]]:
    try:
        ids = os.listdir(containers_dir())
    except FileNotFoundError:
        return []
    out = []
    for cid in ids:
        rec = load(cid)
        if rec is not None:
            out.append(rec)
    out.sort(key=lambda r: r.get("created", ""), reverse=True)
    return out


def lookup(ref: str) -> dict[str, Any] | None:
    """A container by full id, name, or unique id prefix (as docker resolves them)."""
    if not ref:
        return None
    if len(ref) == 64:
        rec = load(ref)
        if rec is not None:
            return rec
    recs = all_containers()
    for rec in recs:
        if rec.get("name") == ref or rec.get("name") == ref.lstrip("/"):
            return rec
    matches = [r for r in recs if r["id"].startswith(ref)]
    return matches[0] if len(matches) == 1 else None


def inspect(ref: str) -> dict[str, Any] | None:
    """``docker inspect``-shaped view of a container, or None when there is no such container."""
    rec = lookup(ref)
    if rec is None:
        return None
    cfg = rec.get("config", {})
    running = rec.get("status") == "running"
    return {
        "Id": rec["id"],
        "Name": "/" + rec.get("name", ""),
        "Created": rec.get("created"),
        "Path": (cfg.get("argv") or [""])[0],
        "Args": (cfg.get("argv") or [])[1:],
        "Image": rec.get("image_digest", ""),
        "State": {
            "Status": rec.get("status"),
            "Running": running,
            "Pid": rec.get("pid") if running else 0,
            "ExitCode": rec.get("exit_code") or 0,
            "OOMKilled": bool(rec.get("oom_killed")),
            "Error": rec.get("error", ""),
            "StartedAt": rec.get("started_at") or "0001-01-01T00:00:00Z",
            "FinishedAt": rec.get("finished_at") or "0001-01-01T00:00:00Z",
        },
        "Config": {
            "Hostname": cfg.get("hostname"),
            "User": cfg.get("user", ""),
            "Env": cfg.get("env", []),
            "Cmd": cfg.get("cmd"),
            "Entrypoint": cfg.get("entrypoint"),
            "WorkingDir": cfg.get("workdir", "/"),
            "Image": rec.get("image"),
        },
        "HostConfig": {
            "Memory": cfg.get("memory") or 0,
            "NanoCpus": int((cfg.get("cpus") or 0) * 1e9),
            "PidsLimit": cfg.get("pids_limit"),
            "NetworkMode": cfg.get("network"),
            "ReadonlyRootfs": bool(cfg.get("read_only")),
            "AutoRemove": bool(cfg.get("rm")),
            "Binds": [f"{h}:{c}{':ro' if ro else ''}" for h, c, ro in cfg.get("volumes", [])],
        },
        "Cgroup": rec.get("cgroup"),
        "LogPath": os.path.join(container_dir(rec["id"]), "log"),
    }
