"""The container's processes: fork PID 1 into new namespaces, set it up, exec the command;
``--init``; wait for it and turn its end into docker's exit code.

Process shape (as docker/runc, minus the daemon)::

    pyreg run (supervisor) ── fork ──> container PID 1 ── execve(command)

The supervisor calls ``unshare(CLONE_NEWPID)`` on itself, so its one child is PID 1 of a new pid
namespace: the command *is* PID 1 (orphans of the container are reparented to it, as with docker
without ``--init``). The child joins the cgroup, unshares mnt/uts/ipc/net/cgroup, builds its
filesystem and pivots into it (runtime/mounts.py), drops to Docker's default capability set with
no_new_privs (runtime/confine.py), switches user (runtime/identity.py) and execs. Set-up
failures come back to the supervisor through a close-on-exec pipe (EOF means the exec happened),
so errors get docker's exit codes: 125 for pyreg's own, 126 when the command cannot be executed,
127 when it does not exist.

Everything the child runs between fork and exec is imported here, before the fork: an import in
the child costs every container start (``runtime.tty`` only with ``-t``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from pyreg.runtime import confine, linux, mounts, rootfs, state
from pyreg.runtime.errors import EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_PYREG, ContainerError
from pyreg.runtime.identity import resolve_user

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from pyreg.runtime.cgroups import Cgroup
    from pyreg.runtime.record import Container, ContainerConfig

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def _drop_privileges(uid: int, gid: int, groups: list[int], rootless: bool = False) -> None:
    """Keyring, no_new_privs, capabilities, user and, last, seccomp (runtime/confine.py)."""
    confine.apply(uid, gid, groups, rootless)


def _reset_signals() -> None:
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTTOU, *FORWARDED_SIGNALS):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _chdir_in_root(workdir: str) -> None:
    """cd to ``workdir`` (made if missing) resolved in the container's root with no magic link,
    so ``-w /proc/self/fd/N`` or a symlink to ``/proc/1/cwd`` cannot land outside it."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = rootfs.mkdir_all(root, workdir)
    except OSError as e:
        raise ContainerError(f"workdir {workdir!r}: {e.strerror or e}") from None
    finally:
        os.close(root)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def exec_command(cfg: ContainerConfig, err_w: int, hostname: str) -> None:
    """After pivot_root (or setns): user, workdir, environment, privileges, execve. Never returns."""
    uid, gid, groups, home = resolve_user(cfg.user)
    env = list(cfg.env)
    keys = {e.partition("=")[0] for e in env}
    if "HOSTNAME" not in keys:
        env.append(f"HOSTNAME={hostname}")
    if "HOME" not in keys:
        env.append(f"HOME={home}")
    _chdir_in_root(cfg.workdir or "/")
    try:  # never exec a binary from outside the rootfs through /proc (CVE-2019-5736)
        rootfs.check_program(cfg.argv[0], dict(e.partition("=")[::2] for e in env).get("PATH", ""))
    except rootfs.UnsafePath as e:
        raise ContainerError(str(e), EXIT_CANNOT_EXEC) from None
    if cfg.rootless and (uid, gid) != (0, 0):
        raise ContainerError(f"rootless: only root (0:0) is mapped in the container, not {uid}:{gid}")
    if cfg.tty:
        os.fchown(0, uid, gid)  # the user owns its terminal, as with docker
    _drop_privileges(uid, gid, groups, cfg.rootless)
    _reset_signals()
    argv = cfg.argv
    envd = dict(e.partition("=")[::2] for e in env)
    try:
        _execvpe(argv[0], argv, envd)
    except OSError as e:
        report(err_w, "exec", e, argv[0])


def _execvpe(name: str, argv: list[str], env: dict[str, str]) -> None:
    """``os.execvpe`` (the same search, the same error raised) without its ``get_exec_path``,
    which imports ``warnings`` when first called: after pivot_root, where the host's standard
    library is out of reach, so it had to be imported before the fork (~0.3 ms of every run)."""
    if "/" in name:
        os.execve(name, argv, env)
    path = env.get("PATH")
    saved: OSError | None = None
    last: OSError | None = None
    for d in (os.defpath if path is None else path).split(os.pathsep):
        try:
            os.execve(os.path.join(d, name), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            last = e
        except OSError as e:
            last = e
            saved = saved or e
    raise saved or last or FileNotFoundError(2, "No such file or directory", name)


def read_to_end(fd: int) -> bytes:
    """Everything a child writes on a pipe until it closes its end (exec or exit); closes ``fd``."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def report(err_w: int, stage: str, e: BaseException, what: str = "") -> None:
    code = EXIT_PYREG
    errno_ = getattr(e, "errno", None)
    if stage == "exec":
        code = EXIT_NOT_FOUND if errno_ in (2, 20) else EXIT_CANNOT_EXEC
    if isinstance(e, ContainerError):
        code = e.code
    msg = str(e) if not isinstance(e, OSError) else (e.strerror or str(e))
    if stage == "exec":
        msg = (f"exec: {what!r}: executable file not found in $PATH" if code == EXIT_NOT_FOUND
               else f"exec: {what!r}: {msg}")
    try:
        os.write(err_w, json.dumps({"stage": stage, "message": msg, "code": code}).encode())
    finally:
        os._exit(code)


def _child(rec: Container, err_w: int, sync_r: int, stdio: tuple[int, int, int] | None,
           console: int | None = None, netns: int | None = None, join: Cgroup | None = None,
           ns_w: int | None = None) -> None:
    """PID 1 of the new pid namespace, before it becomes the command. Never returns.

    On cgroup v1 it joins its cgroup itself (``join``: ``Cgroup.join_self``, first, before it
    touches anything); on v2 the supervisor moves it meanwhile (a migration by pid waits for an
    RCU grace period, spent in parallel with the mounts); ``sync_r`` says when. A byte on
    ``ns_w`` tells the supervisor that its mount namespace exists (``start``'s ``keeper``).
    """
    cfg = rec.config
    cdir = state.container_dir(rec.id)
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # no container outlives its supervisor
        linux.prctl(linux.PR_SET_DUMPABLE, 0)  # a host Python (--init: for good): not openable via /proc
        if join is not None:
            try:
                join.join_self()
            except OSError as e:
                raise ContainerError(f"cannot move the container into its cgroup: {e}") from None
        os.setsid()
        if stdio is not None:
            for i, fd in enumerate(stdio):
                os.dup2(fd, i)
        confine.prepare(cfg)  # while the host's files are reachable (and the supervisor attaches)

        flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if cfg.network != "host" and netns is None:
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        if ns_w is not None:
            os.write(ns_w, b"n")
            os.close(ns_w)
        if netns is not None:  # --network bridge: the namespace the supervisor wired
            linux.setns(netns, linux.CLONE_NEWNET)
            os.close(netns)
        mounts.enter_rootfs(cfg, cdir)
        hostname = cfg.hostname
        linux.sethostname(hostname)
        if cfg.network != "host":
            linux.set_loopback_up()
        if console is not None:  # -t: a pty of the container's devpts, the master to the supervisor
            from pyreg.runtime import tty

            tty.setup_in_container(console)
        if os.read(sync_r, 1) != b"g":  # the supervisor could not put us in the cgroup
            os._exit(EXIT_PYREG)
        os.close(sync_r)
        if os.path.exists("/proc/self/ns/cgroup"):  # rooted at the container's cgroup, now we're in
            linux.unshare(linux.CLONE_NEWCGROUP)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
    except BaseException as e:
        report(err_w, "setup", e)
    if cfg.init:
        _init(cfg, err_w, hostname)
    try:
        exec_command(cfg, err_w, hostname)
    except BaseException as e:
        report(err_w, "setup", e)


def _init(cfg: ContainerConfig, err_w: int, hostname: str) -> None:
    """``--init`` (docker's tini): stay PID 1, run the command as its child, forward signals to
    it, reap every orphan that is reparented here, and exit as the command does. Never returns."""
    try:
        linux.set_name("pyreg-init")
        confine.apply(0, 0, [], cfg.rootless, switch_user=False)
    except BaseException as e:
        report(err_w, "setup", e)
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, 0)  # its own process group: terminal signals reach it once, not via us
            if cfg.tty:
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(0, os.getpid())
            exec_command(cfg, err_w, hostname)
        except BaseException as e:
            report(err_w, "setup", e)
        os._exit(EXIT_PYREG)
    os.close(err_w)

    def forward(sig: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(EXIT_PYREG)
        if pid == child:
            os._exit(exit_code_of(status))


def exit_code_of(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


_in_user_namespace = False


def enter_user_namespace() -> None:
    """Rootless: a new user namespace where our uid and gid are 0 (only they are mapped).

    Every namespace made after this (pid here, then mnt/uts/ipc/net in PID 1) is owned by it, so
    the container's root has capabilities over them and nothing else.
    """
    global _in_user_namespace
    if _in_user_namespace:  # slirp4netns's set-up entered it already (runtime/network/slirp.py)
        return
    uid, gid = os.getuid(), os.getgid()
    linux.unshare(linux.CLONE_NEWUSER)
    _in_user_namespace = True
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def start(rec: Container, cg: Cgroup | None, stdio: tuple[int, int, int] | None = None,
          forward_signals: bool = True, console: int | None = None, netns: int | None = None,
          keeper: int | None = None) -> int:
    """Fork PID 1 and wait for its exec; returns its host pid. Raises ContainerError on failure.

    With ``keeper`` (the write end of a pipe to a process outside the container's pid namespace:
    runtime/container.py ``_keeper``), PID 1's host pid is written to it as soon as PID 1 has its
    own mount namespace, for the keeper to open and hold: while it does, PID 1's exit does not
    tear the namespace down (unmounting overlay, /proc, /dev, /sys waits for RCU grace periods:
    1-4 ms, at times 40 ms and more, between the command's exit and its exit status)."""
    pending: list[int] = []
    child = 0

    def forward(sig: int, frame: object) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)
        else:
            pending.append(sig)

    if forward_signals:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, forward)
    if rec.config.rootless:
        enter_user_namespace()
    linux.unshare(linux.CLONE_NEWPID)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
    ns_r, ns_w = os.pipe2(os.O_CLOEXEC) if keeper is not None else (None, None)
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(sync_w)
        if ns_r is not None:
            os.close(ns_r)
        _child(rec, err_w, sync_r, stdio, console, netns, cg if cg is not None and cg.version == 1 else None,
               ns_w)
        os._exit(EXIT_PYREG)  # not reached
    os.close(err_w)
    os.close(sync_r)
    if ns_w is not None:
        os.close(ns_w)
    failure: OSError | None = None
    try:
        if cg is not None and cg.version != 1:  # v1: the child joins itself (_child)
            cg.attach(child)
        os.write(sync_w, b"g")
    except OSError as e:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        failure = e
    finally:
        os.close(sync_w)
    if ns_r is not None and keeper is not None:
        _tell_keeper(child, ns_r, keeper)
    data = read_to_end(err_r)  # when the set-up failed first (EPIPE above), it says why
    if failure is not None and not data:
        raise ContainerError(f"cannot move the container into its cgroup: {failure}") from None
    if data:
        if failure is None:
            os.waitpid(child, 0)
        try:
            err = json.loads(data)
        except ValueError:
            err = {"message": data.decode(errors="replace"), "code": EXIT_PYREG}
        raise ContainerError(err["message"], int(err.get("code", EXIT_PYREG)))
    for pending_sig in pending:
        forward(pending_sig, None)
    return child


def _tell_keeper(child: int, ns_r: int, keeper: int) -> None:
    """Once the child says it unshared (EOF: it failed before), its pid to the keeper; best
    effort: a keeper that is gone, or too late, leaves the namespace to go down with PID 1."""
    try:
        if os.read(ns_r, 1) == b"n":
            os.write(keeper, f"{child}\n".encode())
    except OSError:
        pass
    finally:
        os.close(ns_r)


def wait(rec: Container, pid: int, cg: Cgroup | None, record: bool = True) -> int:
    """Reap PID 1, record how it ended (unless ``record`` is false: a ``--rm`` container about to
    vanish whole); returns its docker-style exit code."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 255 << 8
            break
    code = exit_code_of(status)
    if not record:
        return code
    # as docker: OOMKilled when the kernel's OOM killer struck inside the container's cgroup
    oom = bool(cg is not None and cg.oom_kills() > 0)
    rec.status, rec.exit_code, rec.oom_killed, rec.finished_at = "exited", code, oom, state.now()
    state.save(rec)
    return code
