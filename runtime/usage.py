"""What ``pyreg stats`` and ``pyreg top`` read: a container's usage from its cgroup (v1 or v2)
and its processes from /proc, as docker computes them.

Memory usage is docker's: the cgroup's usage minus its inactive file cache (v2
``memory.current - inactive_file``, v1 ``usage_in_bytes - total_inactive_file``); the limit is
the cgroup's, or the host's memory when it has none. CPU % is the cgroup's CPU time over wall
time between two samples, times 100 (a busy loop on one CPU is ~100%).
"""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.cgroups import Cgroup
    from pyreg.runtime.record import Container


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _keyed(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in _read(path).splitlines():
            k, _, v = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[k] = int(v)
    return out


def host_memory() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_ns(cg: Cgroup) -> int:
    """CPU time the cgroup has used, in nanoseconds."""
    with contextlib.suppress(OSError, ValueError):
        if cg.version == 2:
            return _keyed(os.path.join(cg.paths["unified"], "cpu.stat")).get("usage_usec", 0) * 1000
        for ctl in ("cpuacct", "cpu"):
            if ctl in cg.paths and os.path.exists(os.path.join(cg.paths[ctl], "cpuacct.usage")):
                return int(_read(os.path.join(cg.paths[ctl], "cpuacct.usage")))
    return 0


def memory(cg: Cgroup) -> tuple[int, int]:
    """(usage without inactive file cache, limit) in bytes."""
    usage, limit, host = 0, 0, host_memory()
    with contextlib.suppress(OSError, ValueError):
        if cg.version == 2:
            p = cg.paths["unified"]
            usage = int(_read(os.path.join(p, "memory.current")))
            usage -= _keyed(os.path.join(p, "memory.stat")).get("inactive_file", 0)
            raw = _read(os.path.join(p, "memory.max"))
            limit = host if raw == "max" else int(raw)
        elif "memory" in cg.paths:
            p = cg.paths["memory"]
            usage = int(_read(os.path.join(p, "memory.usage_in_bytes")))
            usage -= _keyed(os.path.join(p, "memory.stat")).get("total_inactive_file", 0)
            limit = int(_read(os.path.join(p, "memory.limit_in_bytes")))
    if not limit or (host and limit > host):
        limit = host
    return max(0, usage), limit


def pids(cg: Cgroup) -> int:
    with contextlib.suppress(OSError, ValueError):
        if cg.version == 2:
            return int(_read(os.path.join(cg.paths["unified"], "pids.current")))
        if "pids" in cg.paths:
            return int(_read(os.path.join(cg.paths["pids"], "pids.current")))
    return len(cg.procs())


def block_io(cg: Cgroup) -> tuple[int, int]:
    """(bytes read, bytes written) by the cgroup's block I/O."""
    r = w = 0
    with contextlib.suppress(OSError):
        if cg.version == 2:
            for line in _read(os.path.join(cg.paths["unified"], "io.stat")).splitlines():
                for kv in line.split()[1:]:
                    k, _, v = kv.partition("=")
                    r += int(v) if k == "rbytes" else 0
                    w += int(v) if k == "wbytes" else 0
        elif "blkio" in cg.paths:
            text = _read(os.path.join(cg.paths["blkio"], "blkio.throttle.io_service_bytes"))
            for line in text.splitlines():
                f = line.split()
                if len(f) == 3 and f[1] in ("Read", "Write"):
                    r += int(f[2]) if f[1] == "Read" else 0
                    w += int(f[2]) if f[1] == "Write" else 0
    return r, w


def net_io(pid: int) -> tuple[int, int]:
    """(bytes received, sent) on the container's interfaces but lo."""
    rx = tx = 0
    with contextlib.suppress(OSError, ValueError):
        for line in _read(f"/proc/{pid}/net/dev").splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                continue
            f = rest.split()
            rx, tx = rx + int(f[0]), tx + int(f[8])
    return rx, tx


def processes(rec: Container) -> list[int]:
    """Host pids of every process in the container's pid namespace (PID 1's and exec'd ones)."""
    try:
        ns = os.readlink(f"/proc/{int(rec.pid or 0)}/ns/pid")
    except OSError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    out.append(int(name))
    return sorted(out)


def human(n: float, binary: bool = True) -> str:
    """docker's sizes (storage/units.py): ``1.953MiB`` for memory (binary), ``1.5MB`` otherwise."""
    from pyreg.storage.units import bytes_size, human_size

    return bytes_size(n) if binary else human_size(n)
