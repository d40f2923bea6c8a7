"""``pyreg exec``: run a command inside a running container — setns into its namespaces and
cgroup, then the same user, workdir, confinement and exec as its PID 1 got (runtime/process.py).

Nothing of the caller's leaks in: every inherited fd above 2 is closed before the setns, and the
helper is not dumpable until its exec, so container root cannot open its /proc/PID/exe, fd/ or
mem (CVE-2019-5736).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from pyreg.runtime import confine, linux, state
from pyreg.runtime.cgroups import Cgroup
from pyreg.runtime.errors import EXIT_PYREG, ContainerError
from pyreg.runtime.process import FORWARDED_SIGNALS, exec_command, exit_code_of, read_to_end, report

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container


def _close_fds_except(*keep: int) -> None:
    """Close every descriptor above 2 except ``keep``."""
    top = max(65536, os.sysconf("SC_OPEN_MAX"))
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, top)


def exec_in(rec: Container, argv: list[str], env: list[str] | None = None, workdir: str | None = None,
            user: str | None = None, tty: bool = False, interactive: bool = True) -> int:
    """Run ``argv`` inside a running container (setns into its namespaces and cgroup). With
    ``tty`` it gets a pty of the container's own devpts (as PID 1 does with ``run -t``), the master
    relayed to our stdio; without ``interactive`` its stdin is /dev/null, as docker's."""
    pid = int(rec.pid or 0)
    changes: dict[str, Any] = {"argv": argv}
    if env:
        changes["env"] = [*rec.config.env, *env]
    if workdir:
        changes["workdir"] = workdir
    if user is not None:
        changes["user"] = user
    cfg = rec.config.replace(**changes)
    cg = Cgroup.from_dict(rec.cgroup)
    fds = {}
    try:
        for ns in ("user", "ipc", "uts", "net", "cgroup", "pid", "mnt"):
            try:
                fds[ns] = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if ns in ("pid", "mnt"):
                    raise ContainerError(f"container {rec.name} is not running") from None
        if state.proc_start_time(pid) != rec.pid_start:
            raise ContainerError(f"container {rec.name} is not running")
        if cfg.rootless:
            linux.setns(fds["user"], linux.CLONE_NEWUSER)
        linux.setns(fds["pid"], linux.CLONE_NEWPID)
        child = 0

        def forward(sig: int, frame: object) -> None:
            if child:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, sig)

        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, forward)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        console = None
        if tty:
            from pyreg.runtime import tty as ttys

            console = ttys.console_pair()
        # the helper is in the container's pid namespace from birth, a host Python until it
        # execs: not dumpable, so container root cannot open its /proc/PID/exe, fd/ or mem
        # (CVE-2019-5736); exec makes the command dumpable again
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        child = os.fork()
        if child == 0:
            try:
                keep = [console[1].fileno()] if console else []
                _close_fds_except(err_w, *fds.values(), *keep)  # err_r and all of the caller's: closed
                if not interactive and not tty:
                    null = os.open("/dev/null", os.O_RDONLY)
                    os.dup2(null, 0)
                    os.close(null)
                linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
                confine.prepare(cfg)
                if cg is not None:  # v1: without the global lock's RCU wait (cgroups.py)
                    cg.join_self() if cg.version == 1 else cg.attach(0)
                for ns in ("ipc", "uts", "net", "cgroup", "mnt"):
                    if ns in fds:
                        linux.setns(fds[ns], 0)
                os.chdir("/")
                for fd in fds.values():
                    os.close(fd)
                if console is not None:  # a session of our own, the container's pty its terminal
                    os.setsid()
                    ttys.setup_in_container(console[1].detach())
            except BaseException as e:
                report(err_w, "setup", e)
            try:
                exec_command(cfg, err_w, cfg.hostname)
            except BaseException as e:
                report(err_w, "setup", e)
            os._exit(EXIT_PYREG)
        os.close(err_w)
        if console is not None:
            console[1].close()
            try:
                master = ttys.receive_master(console[0])
            except OSError:
                master = None  # the child failed before: its error is on err_r
            console[0].close()
            if master is not None:
                ttys.relay(master, 0 if interactive else None, 1)
                os.close(master)
        data = read_to_end(err_r)
        _, status = os.waitpid(child, 0)
        if data:
            err = json.loads(data)
            raise ContainerError(err["message"], int(err["code"]))
        return exit_code_of(status)
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
