"""cgroups v1 and v2: one container, one cgroup (per v1 hierarchy), limits, OOM, removal.

Which version is used is decided at run time from the mount table: if memory, cpu or pids are
bound to v1 hierarchies (a "hybrid" host such as this one, with an empty cgroup2 at
``/sys/fs/cgroup/unified``), v1 is the one that can enforce limits; otherwise the cgroup2 mount.
``PYREG_CGROUP_VERSION`` (1 or 2) forces a version, ``PYREG_CGROUP_ROOT`` a root (v2: a cgroup2
mount or a directory inside one; v1: a directory holding one mount per controller, named after
it), and ``PYREG_CGROUP_PARENT`` the parent group (default ``pyreg``): tests use all three.

Devices (runtime/devices.py): on v1 the ``devices`` hierarchy gets Docker's allow-list; on v2 an
eBPF device program is attached to the container's cgroup (this works on an empty cgroup2 such
as a hybrid host's, where no controller is needed for it). A container is never started without
one or the other. The default pids limit (``pids_default``) applies where the pids controller is
there; an explicit ``--pids-limit`` that cannot be applied is an error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.devices import Rule

V1_CONTROLLERS = ("memory", "cpu", "pids", "devices", "cpuacct")  # cpuacct: pyreg stats' CPU %
CPU_PERIOD = 100_000


class CgroupError(RuntimeError):
    """A cgroup cannot be made or a limit cannot be applied; the message says which and why."""


def _mounts() -> tuple[dict[str, str], str | None]:
    """(v1 controller -> mount point, the first cgroup2 mount point) from /proc/self/mountinfo."""
    v1: dict[str, str] = {}
    v2: str | None = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if len(fields) < 3:
                continue
            fstype, opts = fields[0], fields[2]
            mnt = left.split()[4]
            if fstype == "cgroup2" and v2 is None:
                v2 = mnt
            elif fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in V1_CONTROLLERS and opt not in v1:
                        v1[opt] = mnt
    return v1, v2


def detect() -> tuple[int, dict[str, str]]:
    """The cgroup version to use and its roots: v1 {controller: dir}, v2 {"unified": dir}."""
    forced = os.environ.get("PYREG_CGROUP_VERSION", "").strip()
    root = os.environ.get("PYREG_CGROUP_ROOT", "").strip()
    if forced not in ("", "1", "2"):
        raise CgroupError(f"PYREG_CGROUP_VERSION must be 1 or 2, not {forced!r}")
    if root:
        version = int(forced) if forced else (2 if os.path.exists(os.path.join(root, "cgroup.controllers"))
                                              else 1)
        if version == 2:
            return 2, {"unified": root}
        return 1, {c: os.path.join(root, c) for c in V1_CONTROLLERS if os.path.isdir(os.path.join(root, c))}
    v1, v2 = _mounts()
    if forced == "2" or (not forced and not v1 and v2):
        if v2 is None:
            raise CgroupError("cgroup v2 requested but no cgroup2 filesystem is mounted")
        return 2, {"unified": v2}
    if not v1:
        raise CgroupError("no cgroup v1 controllers (memory, cpu, pids) are mounted")
    return 1, v1


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _keyed(path: str) -> dict[str, int]:
    out = {}
    try:
        for line in _read(path).splitlines():
            k, _, v = line.partition(" ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
    except OSError:
        pass
    return out


class Cgroup:
    """The cgroup(s) of one container; serialisable into the container's state."""

    def __init__(self, version: int, paths: dict[str, str]) -> None:
        self.version = version
        self.paths = paths

    def to_dict(self) -> dict[str, object]:
        return {"version": self.version, "paths": self.paths}

    @classmethod
    def from_dict(cls, d: dict[str, object] | None) -> Cgroup | None:
        if not d:
            return None
        return cls(int(d["version"]), dict(d["paths"]))  # type: ignore[call-overload]

    @classmethod
    def create(cls, name: str, memory: int | None = None, cpus: float | None = None,
               pids: int | None = None, pids_default: int | None = None,
               devices: tuple[Rule, ...] | None = None) -> Cgroup:
        """``devices``: the allow-list (None: no device confinement, for callers that manage
        none, e.g. unit tests of limits); ``pids_default``: a limit for when ``pids`` is None,
        applied only where the pids controller is available."""
        version, roots = detect()
        parent = os.environ.get("PYREG_CGROUP_PARENT", "pyreg").strip("/") or "pyreg"
        if version == 2:
            if pids is None and pids_default is not None and "pids" in set(
                    _read(os.path.join(roots["unified"], "cgroup.controllers")).split()):
                pids = pids_default
            cg = cls._create_v2(roots["unified"], parent, name, memory, cpus, pids)
        else:
            if pids is None and "pids" in roots:
                pids = pids_default
            if devices is not None and "devices" not in roots:
                raise CgroupError("the cgroup v1 devices controller is not mounted; cannot confine devices")
            cg = cls._create_v1(roots, parent, name, memory, cpus, pids)
        if devices is not None:
            from pyreg.runtime import devices as devmod

            try:
                if version == 2:
                    devmod.apply_v2(cg.paths["unified"], devices)
                else:
                    devmod.apply_v1(cg.paths["devices"], devices)
            except BaseException as e:
                cg.remove()
                if isinstance(e, OSError):
                    raise CgroupError(f"cannot confine devices: {e}") from None
                raise
        return cg

    @classmethod
    def _create_v1(cls, roots: dict[str, str], parent: str, name: str, memory: int | None,
                   cpus: float | None, pids: int | None) -> Cgroup:
        wanted = {"memory": memory, "cpu": cpus, "pids": pids}
        for ctl, limit in wanted.items():
            if limit is not None and ctl not in roots:
                raise CgroupError(f"cgroup v1 controller {ctl!r} is not mounted; cannot apply its limit")
        paths: dict[str, str] = {}
        cg = cls(1, paths)
        try:
            for ctl, root in roots.items():
                path = os.path.join(root, parent, name)
                os.makedirs(path, exist_ok=path in paths.values())  # co-mounted: cpu,cpuacct
                paths[ctl] = path
            if memory is not None:
                mem = paths["memory"]
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(memory))
                if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                    # no swap beyond the limit: the limit is what the container gets
                    _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), str(memory))
            if cpus is not None:
                cpu = paths["cpu"]
                _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD))
                _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(max(1000, int(cpus * CPU_PERIOD))))
            if pids is not None:
                _write(os.path.join(paths["pids"], "pids.max"), str(pids) if pids > 0 else "max")
        except BaseException:
            cg.remove()
            raise
        return cg

    @classmethod
    def _create_v2(cls, root: str, parent: str, name: str, memory: int | None, cpus: float | None,
                   pids: int | None) -> Cgroup:
        available = set(_read(os.path.join(root, "cgroup.controllers")).split())
        wanted = {"memory": memory, "cpu": cpus, "pids": pids}
        for ctl, limit in wanted.items():
            if limit is not None and ctl not in available:
                raise CgroupError(
                    f"cgroup v2 controller {ctl!r} is not available at {root} (available: "
                    f"{' '.join(sorted(available)) or 'none'}); cannot apply its limit")
        enable = [c for c in ("memory", "cpu", "pids") if c in available]
        parent_dir = os.path.join(root, parent)
        os.makedirs(parent_dir, exist_ok=True)
        if enable:
            # every level from the root down delegates the controllers to its children
            level = root
            for part in ["", *parent.split("/")]:
                level = os.path.join(level, part) if part else level
                try:
                    _write(os.path.join(level, "cgroup.subtree_control"), " ".join(f"+{c}" for c in enable))
                except OSError as e:
                    raise CgroupError(f"cannot enable {enable} in {level}: {e.strerror}") from None
        path = os.path.join(parent_dir, name)
        os.mkdir(path)
        cg = cls(2, {"unified": path})
        try:
            if memory is not None:
                _write(os.path.join(path, "memory.max"), str(memory))
                if os.path.exists(os.path.join(path, "memory.swap.max")):
                    _write(os.path.join(path, "memory.swap.max"), "0")
            if cpus is not None:
                _write(os.path.join(path, "cpu.max"), f"{max(1000, int(cpus * CPU_PERIOD))} {CPU_PERIOD}")
            if pids is not None:
                _write(os.path.join(path, "pids.max"), str(pids) if pids > 0 else "max")
        except BaseException:
            cg.remove()
            raise
        return cg

    # -- membership --------------------------------------------------------------------------
    def attach(self, pid: int = 0) -> None:
        """Move ``pid`` (0: the caller) into every hierarchy of this cgroup."""
        for path in self.paths.values():
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def join_self(self) -> None:
        """Move the calling process, which must be single-threaded (a child fresh from fork),
        into every v1 hierarchy of this cgroup.

        Why not ``attach`` from the parent: writing a pid to v1's ``cgroup.procs`` takes the
        kernel's global threadgroup lock for writing, which waits for an RCU grace period (10-20
        ms on this machine, the largest single cost of a container start). Writing ``0`` (the
        caller) to ``tasks`` moves one thread, the caller, and the kernel skips that lock: ~0.1
        ms. With one thread that thread is the whole process. v2 has no such file outside
        threaded cgroups: there the parent attaches (``attach``)."""
        if self.version != 1:
            raise CgroupError("join_self is for cgroup v1; use attach")
        for path in self.paths.values():
            _write(os.path.join(path, "tasks"), "0")

    def procs(self) -> list[int]:
        pids: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in _read(os.path.join(path, "cgroup.procs")).split())
        return sorted(pids)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        if self.version == 2 and os.path.exists(os.path.join(self.paths["unified"], "cgroup.kill")):
            try:
                _write(os.path.join(self.paths["unified"], "cgroup.kill"), "1")
                return
            except OSError:
                pass
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    # -- reporting ---------------------------------------------------------------------------
    def oom_kills(self) -> int:
        if self.version == 2:
            return _keyed(os.path.join(self.paths["unified"], "memory.events")).get("oom_kill", 0)
        mem = self.paths.get("memory")
        if not mem:
            return 0
        return _keyed(os.path.join(mem, "memory.oom_control")).get("oom_kill", 0)

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            if self.version == 2:
                p = self.paths["unified"]
                if os.path.exists(os.path.join(p, "memory.current")):
                    out["memory"] = int(_read(os.path.join(p, "memory.current")))
                if os.path.exists(os.path.join(p, "pids.current")):
                    out["pids"] = int(_read(os.path.join(p, "pids.current")))
            else:
                if "memory" in self.paths:
                    out["memory"] = int(_read(os.path.join(self.paths["memory"], "memory.usage_in_bytes")))
                if "pids" in self.paths:
                    out["pids"] = int(_read(os.path.join(self.paths["pids"], "pids.current")))
        except (OSError, ValueError):
            pass
        return out

    # -- removal -----------------------------------------------------------------------------
    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove the directories; idempotent."""
        deadline = time.monotonic() + timeout
        for path in list(self.paths.values()):
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {path}: {e.strerror}") from None
                    self.kill_all()
                    time.sleep(0.01)
