"""Container state on disk, so ``ps``, ``logs``, ``stop`` and ``rm`` work from any shell.

Layout under the run root (``$PYREG_RUN_ROOT``, default ``/run/pyreg``; for non-root users
``$XDG_RUNTIME_DIR/pyreg``), every directory 0700 and refused if another user could swap it
(:func:`ensure_run_root`)::

    containers/<id>/state.json     the record below, replaced atomically on every change
    containers/<id>/log            stdout and stderr of a detached container
    containers/<id>/hosts|hostname|resolv.conf   bind-mounted into the container's /etc
    containers/<id>/upper, work    the container's overlay upper and work dirs
    containers/<id>/rootfs         the overlay mount point (mounted only inside the container)

A record is a :class:`runtime.record.Container` (``id``, ``name``, ``image``, ``config``: what
was run; ``status``: created, running, exited; ``pid`` and ``pid_start``: the container's PID 1
on the host and its start time, to never signal a recycled pid; ``supervisor``, ``exit_code``,
``oom_killed``, ``created``, ``started_at``, ``finished_at``, ``cgroup``), stored as the JSON
object earlier versions wrote as a plain dict, which it still reads.

Other packages do not read this module: they ask ``runtime.api``.
"""

from __future__ import annotations

import json
import os
import time

from pyreg.runtime.record import Container

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
    from pyreg.storage.private import check_owned, make_private_dir

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


def save(record: Container) -> None:
    """Replace state.json atomically; quietly does nothing once the container was removed."""
    d = container_dir(record.id)
    tmp = os.path.join(d, f".state.{os.getpid()}.tmp")
    try:  # 0600 whatever the umask: the record holds the container's environment (secrets, often)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record.to_json()))  # dumps: C-accelerated; dump: pure Python (~0.3 ms)
        os.rename(tmp, os.path.join(d, "state.json"))
    except FileNotFoundError:
        pass


def load(cid: str) -> Container | None:
    try:
        with open(os.path.join(container_dir(cid), "state.json")) as f:
            rec = Container.from_json(json.load(f))
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
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


def is_alive(rec: Container) -> bool:
    pid = rec.pid
    return bool(pid) and proc_start_time(int(pid)) == rec.pid_start  # type: ignore[arg-type]


def refresh(rec: Container, sweep: bool = True) -> Container:
    """A 'running' record whose process and supervisor are gone is shown as exited; with
    ``sweep``, what its network left (bridge, NAT after ``kill -9``) is removed and it is saved so."""
    if rec.status == "running" and not is_alive(rec):
        sup = rec.supervisor
        if not sup or proc_start_time(int(sup)) != rec.supervisor_start:
            rec = rec.copy()
            rec.status = "exited"
            rec.exit_code = rec.exit_code if rec.exit_code is not None else 255
            rec.finished_at = rec.finished_at or now()
            if sweep and rec.net:
                from pyreg.runtime.container import release_network

                release_network(rec)
                save(rec)
    return rec


def all_containers() -> list[Container]:
    try:
        ids = os.listdir(containers_dir())
    except FileNotFoundError:
        return []
    out = []
    for cid in ids:
        rec = load(cid)
        if rec is not None:
            out.append(rec)
    out.sort(key=lambda r: r.created, reverse=True)
    return out


def is_build(rec: Container) -> bool:
    """A ``pyreg build`` RUN step's container (runtime/build/runstep.py marks it): the builder's own,
    as BuildKit's are, so the user's container commands neither list nor find it."""
    return rec.config.extra.get("build") is True


def lookup(ref: str, builds: bool = False) -> Container | None:
    """A container by full id, name, or unique id prefix (as docker resolves them). A build step's
    container is found only with ``builds``: ``kill``, ``stop``, ``top``, ``exec``, ``inspect``…
    answer "no such container" for it, as docker does for BuildKit's."""
    if not ref:
        return None
    if len(ref) == 64:
        rec = load(ref)
        if rec is not None and (builds or not is_build(rec)):
            return rec
    recs = [r for r in all_containers() if builds or not is_build(r)]
    for rec in recs:
        if rec.name == ref or rec.name == ref.lstrip("/"):
            return rec
    matches = [r for r in recs if r.id.startswith(ref)]
    return matches[0] if len(matches) == 1 else None
