"""cgroups v1 and v2: limits trip, OOM is reported, the cgroup goes away with the container.

Each test is run with the version forced (``PYREG_CGROUP_VERSION``). A version whose controller
is not usable on this host is skipped with the reason: on a hybrid host (v1 memory/cpu/pids
hierarchies plus an empty cgroup2 at /sys/fs/cgroup/unified) a controller bound to a v1
hierarchy cannot also be enabled in cgroup2 — any cgroup2 mount, including one made for the
test, is the same single hierarchy with the same (empty) controller list.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pyreg.runtime import cgroups
from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root


def _v2_root() -> str | None:
    _, v2 = cgroups._mounts()
    return v2


def require(version: int, controller: str | None = None) -> dict[str, str]:
    """Env forcing ``version``; skip with the reason when it (or the controller) is unusable here."""
    v1, v2 = cgroups._mounts()
    if version == 1:
        if not v1:
            pytest.skip("no cgroup v1 hierarchies are mounted on this host (pure cgroup v2)")
        if controller and controller not in v1:
            pytest.skip(f"the cgroup v1 {controller} controller is not mounted on this host")
    else:
        if v2 is None:
            pytest.skip("no cgroup2 filesystem is mounted on this host")
        available = Path(v2, "cgroup.controllers").read_text().split()
        if controller and controller not in available:
            bound = f" (it is bound to the v1 hierarchy {v1[controller]})" if controller in v1 else ""
            pytest.skip(f"the {controller} controller is not available in cgroup v2 at {v2}{bound}; "
                        f"available there: {' '.join(available) or 'none'}")
    return {"PYREG_CGROUP_VERSION": str(version)}


def _proc_cgroup(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_created_joined_and_removed(busybox_store: RuntimeEnv, version: int) -> None:
    env = busybox_store
    force = require(version)
    cid = env.run("run", "-d", "busybox", "sleep", "600", env=force, check=True).stdout.strip()
    rec = env.state(cid)
    assert rec["cgroup"]["version"] == version
    paths = list(rec["cgroup"]["paths"].values())
    assert paths and all(os.path.isdir(p) for p in paths)
    assert all(env.cgroup_parent in p and cid in p for p in paths)
    membership = _proc_cgroup(rec["pid"])
    if version == 2:
        assert f"0::/{env.cgroup_parent}/{cid}\n" in membership
    else:
        for ctl in ("memory", "pids", "cpu"):
            line = next(ln for ln in membership.splitlines() if ctl in ln.split(":")[1].split(","))
            assert line.endswith(f"/{env.cgroup_parent}/{cid}")
    # inside, the cgroup namespace hides the host's hierarchy
    r = env.run("exec", cid, "cat", "/proc/self/cgroup", check=True)
    assert env.cgroup_parent not in r.stdout
    # and an exec'd process is in the container's cgroup: the namespace's root, not "/.." above it
    # (v1: it joins each hierarchy itself through ``tasks``, runtime/cgroups.py join_self)
    ctls = ("memory", "pids", "cpu") if version == 1 else ("",)
    for ctl in ctls:
        line = next(ln for ln in r.stdout.splitlines() if ctl in ln.split(":")[1].split(","))
        assert line.endswith(":/"), r.stdout
    env.run("rm", "-f", cid, check=True)
    assert not any(os.path.exists(p) for p in paths)
    assert env.container_cgroups() == []


@pytest.mark.parametrize("version", [1, 2])
def test_memory_limit_oom_kills_and_is_reported(busybox_store: RuntimeEnv, version: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    env = busybox_store
    force = require(version, "memory")
    # dd's 128 MiB block buffer is touched as it fills: far above a 32 MiB limit without swap
    r = env.run("run", "--name", "hog", "--memory", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
                "bs=128M", "count=4", env=force)
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    rec = env.state("hog")
    assert rec["exit_code"] == 137 and rec["oom_killed"] is True
    monkeypatch.setenv("PYREG_RUN_ROOT", str(env.run_root))
    from pyreg.runtime.api import inspect_container

    info = inspect_container("hog")
    assert info is not None
    assert info["State"]["OOMKilled"] is True and info["State"]["ExitCode"] == 137
    assert info["HostConfig"]["Memory"] == 32 << 20
    # under the limit it runs fine, and is not reported as OOM-killed
    r = env.run("run", "--name", "small", "--memory", "32m", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
                "bs=1M", "count=4", env=force)
    assert r.returncode == 0, r.stderr
    assert env.state("small")["oom_killed"] is False
    env.run("rm", "hog", "small", check=True)
    assert env.container_cgroups() == []


@pytest.mark.parametrize("version", [1, 2])
def test_pids_limit_stops_a_fork_bomb(busybox_store: RuntimeEnv, version: int) -> None:
    env = busybox_store
    force = require(version, "pids")
    # a fork bomb: every level forks two more and waits. The outer shell forks its timer before
    # the bomb (busybox sh gives up with exit 2 when one of its own forks fails) and then uses
    # only builtins (wait, a glob, echo, kill), which need no fork while the table is full.
    script = ("bomb() { bomb & bomb & wait; }; sleep 2 & timer=$!; bomb & wait $timer; "
              "set -- /proc/[0-9]*; echo count=$#; kill -9 -1; true")
    r = env.run("run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c", script, env=force, timeout=120)
    assert r.returncode == 0, r.stderr
    count = int(r.stdout.split("count=")[1].split()[0])
    assert 0 < count <= 20, r.stdout
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr, r.stderr[-500:]


@pytest.mark.parametrize("version", [1, 2])
def test_limits_are_written(busybox_store: RuntimeEnv, version: int) -> None:
    env = busybox_store
    force = require(version, "cpu")
    require(version, "memory")
    require(version, "pids")
    cid = env.run("run", "-d", "--cpus", "0.5", "--memory", "64m", "--pids-limit", "50", "busybox", "sleep",
                  "600", env=force, check=True).stdout.strip()
    paths = env.state(cid)["cgroup"]["paths"]
    if version == 1:
        assert Path(paths["cpu"], "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert Path(paths["cpu"], "cpu.cfs_period_us").read_text().strip() == "100000"
        assert int(Path(paths["memory"], "memory.limit_in_bytes").read_text()) == 64 << 20
        assert Path(paths["pids"], "pids.max").read_text().strip() == "50"
    else:
        p = paths["unified"]
        assert Path(p, "cpu.max").read_text().split() == ["50000", "100000"]
        assert int(Path(p, "memory.max").read_text()) == 64 << 20
        assert Path(p, "pids.max").read_text().strip() == "50"
    env.run("rm", "-f", cid, check=True)
    assert env.container_cgroups() == []


def test_v2_without_controller_refuses_limit_clearly(busybox_store: RuntimeEnv) -> None:
    v2 = _v2_root()
    if v2 is None:
        pytest.skip("no cgroup2 filesystem is mounted on this host")
    if "memory" in Path(v2, "cgroup.controllers").read_text().split():
        pytest.skip("cgroup v2 has the memory controller here: the limit is applied, not refused")
    r = busybox_store.run("run", "--rm", "--memory", "32m", "busybox", "true",
                          env={"PYREG_CGROUP_VERSION": "2"})
    assert r.returncode == 125
    assert "memory" in r.stderr and "not available" in r.stderr
    assert busybox_store.states() == [] and busybox_store.container_cgroups() == []


@pytest.mark.parametrize("version", [1, 2])
def test_cpu_quota_throttles(busybox_store: RuntimeEnv, version: int) -> None:
    env = busybox_store
    force = require(version, "cpu")
    cid = env.run("run", "-d", "--cpus", "0.1", "busybox", "sh", "-c", "while :; do :; done", env=force,
                  check=True).stdout.strip()
    paths = env.state(cid)["cgroup"]["paths"]
    stat_file = Path(paths["cpu"] if version == 1 else paths["unified"], "cpu.stat")

    def throttled() -> int:
        return int(dict(ln.split() for ln in stat_file.read_text().splitlines()).get("nr_throttled", 0))

    deadline = time.monotonic() + 60
    while throttled() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert throttled() > 0  # the busy loop hit its 10 ms per 100 ms quota
    env.run("rm", "-f", cid, check=True)
