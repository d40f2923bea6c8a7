"""Detached containers from other shells: run -d, ps, logs, exec, stop, kill, rm."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root

SERVER = ('trap "echo stopping; exit 7" TERM; echo started; echo to-stderr >&2; '
          "while true; do sleep 0.05; done")


def _wait_for_log(env: RuntimeEnv, ref: str, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = env.run("logs", ref, check=True).stdout
        if text in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the logs of {ref}: {out!r}")


def test_detached_lifecycle(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    r = env.run("run", "-d", "--name", "web", "busybox", "sh", "-c", SERVER, check=True)
    cid = r.stdout.strip()
    assert len(cid) == 64
    rec = env.state(cid)
    assert rec["status"] == "running"
    # ps (a new process: "another shell") shows it by name and short id
    ps = env.run("ps", check=True).stdout
    assert cid[:12] in ps and "web" in ps and "Up" in ps
    assert env.run("ps", "-q", check=True).stdout.split() == [cid[:12]]
    out = _wait_for_log(env, "web", "started")
    assert "to-stderr" in out
    # exec joins its namespaces: same hostname, its pid 1, its filesystem
    r = env.run("exec", "web", "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; "
                "echo from-exec > /tmp/x; ps -o pid | tail -n +2 | wc -l", check=True)
    lines = r.stdout.split("\n")
    assert lines[0] == cid[:12]
    assert lines[1].startswith("sh -c trap")
    r = env.run("exec", cid[:8], "cat", "/tmp/x", check=True)
    assert r.stdout == "from-exec\n"
    assert env.run("exec", "web", "sh", "-c", "exit 9").returncode == 9
    assert env.run("exec", "web", "nosuch").returncode == 127
    r = env.run("exec", "-u", "user", "-w", "/tmp", "-e", "X=1", "web", "sh", "-c", "id -u; pwd; echo $X",
                check=True)
    assert r.stdout.split() == ["1000", "/tmp", "1"]
    # stop: SIGTERM reaches the trap, exit 7
    r = env.run("stop", "-t", "30", "web", check=True)
    assert r.stdout.strip() == "web"
    rec = env.state("web")
    assert (rec["status"], rec["exit_code"]) == ("exited", 7)
    assert "stopping" in env.run("logs", "web", check=True).stdout
    assert "web" not in env.run("ps", check=True).stdout
    ps_a = env.run("ps", "-a", check=True).stdout
    assert "web" in ps_a and "Exited (7)" in ps_a
    assert env.run("exec", "web", "true").returncode != 0
    assert env.container_cgroups() == []  # removed when it exited
    env.run("rm", "web", check=True)
    assert env.states() == []
    assert "web" not in env.run("ps", "-a", check=True).stdout
    assert env.run("rm", "web").returncode != 0


def test_stop_escalates_to_sigkill(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    # sh as PID 1 without a trap ignores SIGTERM (the kernel protects PID 1): only SIGKILL ends it
    loop = "while true; do sleep 0.05; done"
    cid = env.run("run", "-d", "busybox", "sh", "-c", loop, check=True).stdout.strip()
    env.run("stop", "-t", "1", cid, check=True)
    assert env.state(cid)["exit_code"] == 128 + signal.SIGKILL


def test_rm_refuses_running_and_force_removes(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    cid = env.run("run", "-d", "--name", "busy", "busybox", "sleep", "600", check=True).stdout.strip()
    pid = env.state(cid)["pid"]
    r = env.run("rm", "busy")
    assert r.returncode != 0 and "running" in r.stderr
    env.run("rm", "-f", "busy", check=True)
    assert env.states() == []
    assert env.container_cgroups() == []
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or reaped any moment)


def test_kill_with_signal_and_logs_follow(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "k", "busybox", "sh", "-c",
            'trap "echo usr1; exit 3" USR1; echo up; while true; do sleep 0.05; done', check=True)
    _wait_for_log(env, "k", "up")
    follower = env.popen("logs", "-f", "k")
    try:
        env.run("kill", "-s", "USR1", "k", check=True)
        out, _ = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert out == "up\nusr1\n"
    assert env.wait_exited("k")["exit_code"] == 3
    assert env.run("kill", "k").returncode != 0  # not running any more


def test_detached_rm_flag_removes_itself(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    cid = env.run("run", "-d", "--rm", "busybox", "true", check=True).stdout.strip()
    deadline = time.monotonic() + 30
    while env.states() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env.states() == [], cid
    assert env.container_cgroups() == []


def test_names_are_unique(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "--name", "same", "busybox", "true", check=True)
    r = env.run("run", "--name", "same", "busybox", "true")
    assert r.returncode == 125 and "already in use" in r.stderr


def test_concurrent_containers_are_isolated(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    procs = [env.popen("run", "--rm", "--name", f"c{i}", "--hostname", f"h{i}", "busybox", "sh", "-c",
                       f"echo {i} > /mine; sleep 0.3; cat /mine; hostname; echo /proc/[0-9]*")
             for i in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.split())
    assert outs == [[str(i), f"h{i}", "/proc/1"] for i in range(4)]
    assert env.states() == [] and env.container_cgroups() == []


ORPHAN = "sh -c 'sleep 0.1 &'; exec sleep 600"  # PID 1 (or PID 2 under --init) becomes a sleep


def _ps(env: RuntimeEnv, cid: str) -> list[list[str]]:
    out = env.run("exec", cid, "ps", "-o", "pid,stat,comm", check=True).stdout
    return [ln.split() for ln in out.splitlines()[1:]]


def _poll(cond: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_without_init_zombies_stay_as_with_docker(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    cid = env.run("run", "-d", "busybox", "sh", "-c", ORPHAN, check=True).stdout.strip()
    # the orphan is reparented to PID 1, a sleep that never waits: it stays a zombie
    assert _poll(lambda: any("Z" in row[1] for row in _ps(env, cid)))
    env.run("rm", "-f", cid, check=True)


def test_init_reaps_orphans_and_forwards_signals(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    cid = env.run("run", "-d", "--init", "busybox", "sh", "-c", ORPHAN, check=True).stdout.strip()

    def reaped() -> bool:
        rows = _ps(env, cid)
        return not any("Z" in row[1] for row in rows) and [r[2] for r in rows if r[2] == "sleep"] == ["sleep"]

    assert _poll(reaped)
    rows = _ps(env, cid)
    assert rows[0][0] == "1" and rows[0][2] == "pyreg-init"
    init_status = env.run("exec", cid, "cat", "/proc/1/status", check=True).stdout
    assert "CapEff:\t00000000a80425fb" in init_status  # the init has no more than the command
    env.run("rm", "-f", cid, check=True)
    # exit codes and signals go through the init to the command
    assert env.run("run", "--rm", "--init", "busybox", "sh", "-c", "exit 7").returncode == 7
    cid = env.run("run", "-d", "--init", "busybox", "sh", "-c",
                  'trap "exit 9" TERM; while :; do sleep 0.05; done', check=True).stdout.strip()
    env.run("stop", "-t", "30", cid, check=True)
    assert env.state(cid)["exit_code"] == 9
