"""Container lifecycle: build the rootfs, start PID 1 in its namespaces, supervise it, clean up.

Process shape (as docker/runc, minus the daemon)::

    pyreg run (supervisor) ── fork ──> container PID 1 ── execve(command)

The supervisor calls ``unshare(CLONE_NEWPID)`` on itself, so its one child is PID 1 of a new pid
namespace: the command *is* PID 1 (orphans of the container are reparented to it, as with docker
without ``--init``). The child joins the cgroup, unshares mnt/uts/ipc/net/cgroup, mounts the
overlay rootfs (image layers as lower dirs, top first; a per-container upper/work dir) and
/proc, /dev, /sys and the volumes, each on an fd resolved inside the rootfs (runtime/rootfs.py:
an image is hostile input), pivots into it, applies the masks and read-only paths beneath the
/proc and /sys it checked, drops to Docker's default capability set with no_new_privs,
switches user and execs. Set-up failures come back to the
supervisor through a close-on-exec pipe (EOF means the exec happened), so errors get
docker's exit codes: 125 for pyreg's own, 126 when the command cannot be executed, 127 when it
does not exist.

Every mount is made inside the container's private mount namespace, so the host's mount table
never changes and everything disappears with the container's last process. The supervisor
stays outside: it forwards signals to PID 1, records the exit status (128+signal when killed;
OOMKilled from the cgroup), removes the cgroup and, with ``--rm``, the container.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys

from runtime import confine, devices, linux, rootfs, state
from runtime.cgroups import Cgroup
from runtime.record import Container, ContainerConfig

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# runc's default masked and read-only paths (the ones docker uses)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                     signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)

EXIT_PYREG = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


class ContainerError(Exception):
    """A failure to create or start a container; ``code`` is the exit status pyreg returns."""

    def __init__(self, message: str, code: int = EXIT_PYREG) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- paths & users


PASSWD_MAX = 4 << 20  # the image's /etc/passwd and /etc/group are read up to this size


def _read_image_file(path: str, limit: int = PASSWD_MAX) -> str | None:
    """A small regular file of the container (run after pivot_root or setns, so ``/`` is its
    root), resolved in that root; None when it is missing or not a regular file (a FIFO, a
    device such as /dev/zero, a symlink out of the root), as runc treats an unreadable passwd."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        probe = rootfs.resolve(root, path)  # O_PATH: opens no device, blocks on no FIFO
        try:
            st = os.fstat(probe)
        finally:
            os.close(probe)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = rootfs.resolve(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            return None  # swapped while we looked
        if st.st_size > limit:
            raise ContainerError(f"{path} in the image is larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(65536, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ContainerError(f"{path} in the image is larger than {limit} bytes")
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def resolve_user(spec: str, etc: str = "/etc") -> tuple[int, int, list[int], str]:
    """``user[:group]`` (names or ids) -> uid, gid, supplementary gids, home, via the image's files."""
    user, _, group = (spec or "").partition(":")

    def entries(name: str) -> list[list[str]]:
        text = _read_image_file(os.path.join(etc, name))
        if text is None:
            return []
        return [ln.split(":") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    passwd = [e for e in entries("passwd") if len(e) >= 7]
    groups = [e for e in entries("group") if len(e) >= 4]
    entry = None
    if user == "" or user.isdigit():
        uid = int(user or 0)
        entry = next((e for e in passwd if e[2] == str(uid)), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise ContainerError(f"unable to find user {user}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    name = entry[0] if entry else None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if e[0] == group), None)
            if g is None:
                raise ContainerError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
    extra = sorted({int(g[2]) for g in groups if name and name in g[3].split(",") and g[2].isdigit()}
                   | {gid})
    return uid, gid, extra, home or "/"


# --------------------------------------------------------------------------- the spec


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


# --------------------------------------------------------------------------- inside the container


def _setup_dev(rootfd: int, rootless: bool = False) -> int:
    """A tmpfs /dev with the usual nodes; returns an ``O_PATH`` fd of its ``null`` (for masks).

    There is no devices cgroup, so device access is kept out by ``nodev``: /dev and the rootfs
    are nodev and each allowed node is a bind mount of the host's, so a node that the container
    makes (it has CAP_MKNOD, as in docker) cannot be opened. The image's /dev must be a plain
    directory; everything below it is made here, by fd, in the fresh tmpfs."""
    target = rootfs.plain_dir(rootfd, "dev")
    try:
        rootfs.mount_fs("tmpfs", "tmpfs", target, linux.MS_NOSUID | linux.MS_NODEV, "mode=755,size=65536k")
    finally:
        os.close(target)
    dev = rootfs.plain_dir(rootfd, "dev")  # now the tmpfs: this fd sees what was mounted
    try:
        if linux.fs_type(dev) != linux.TMPFS_MAGIC:
            raise ContainerError("/dev is not the tmpfs just mounted there")
        for name, major, minor in DEVICES:
            host = f"/dev/{name}"
            st = os.stat(host)
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(major, minor):
                raise ContainerError(f"host {host} is not the character device {major}:{minor}")
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                             dir_fd=dev))
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
            try:
                linux.mount(host, rootfs.fd_path(node), None, linux.MS_BIND)
            finally:
                os.close(node)
        subs = {}
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(sub, 0o755, dir_fd=dev)
            subs[sub] = os.open(sub, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dev)
        try:
            # rootless: gid 5 (tty) is not mapped in the user namespace
            rootfs.mount_fs("devpts", "devpts", subs["pts"], linux.MS_NOSUID | linux.MS_NOEXEC,
                            "newinstance,ptmxmode=0666,mode=0620" + ("" if rootless else ",gid=5"))
            rootfs.mount_fs("shm", "tmpfs", subs["shm"], linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                            "mode=1777,size=65536k")
            try:
                rootfs.mount_fs("mqueue", "mqueue", subs["mqueue"],
                                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
            except OSError:
                os.rmdir("mqueue", dir_fd=dev)
        finally:
            for fd in subs.values():
                os.close(fd)
        for name, link in DEV_LINKS:
            os.symlink(link, name, dir_fd=dev)
        return os.open("null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
    finally:
        os.close(dev)


def _mount_sys(rootfd: int, cfg: ContainerConfig, masker: rootfs.Masker) -> None:
    """sysfs on the image's plain /sys directory; with ``--network host`` (or rootless, where a
    user namespace may not mount sysfs) the host's /sys, read-only with every mount under it."""
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    target = rootfs.plain_dir(rootfd, "sys")
    try:
        host_sys = cfg.network == "host"
        if not host_sys:
            try:
                rootfs.mount_fs("sysfs", "sysfs", target, flags | linux.MS_RDONLY)
            except OSError:
                if not cfg.rootless:
                    raise
                host_sys = True
        if host_sys:
            attrs = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
            rootfs.bind("/sys", target, readonly=True, attrs=attrs,
                        reopen=lambda: rootfs.plain_dir(rootfd, "sys"))
    finally:
        os.close(target)
    mounted = rootfs.plain_dir(rootfd, "sys")
    try:
        if linux.fs_type(mounted) != linux.SYSFS_MAGIC:
            raise ContainerError("/sys is not the sysfs just mounted there")
        masker.expect("/sys", mounted)
    finally:
        os.close(mounted)


def _setup_mounts(cfg: ContainerConfig, cdir: str, rootfs_path: str) -> rootfs.Masker:
    """Every mount of the container, each on an fd resolved inside the rootfs (runtime/rootfs.py);
    returns what the masks, applied after pivot_root, must find mounted."""
    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    rootfd = os.open(rootfs_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = rootfs.plain_dir(rootfd, "proc")
        try:
            rootfs.mount_fs("proc", "proc", target, nosuid_nodev_noexec)
        finally:
            os.close(target)
        proc = rootfs.plain_dir(rootfd, "proc")
        try:
            if linux.fs_type(proc) != linux.PROC_SUPER_MAGIC:
                raise ContainerError("/proc is not the procfs just mounted there")
            null = _setup_dev(rootfd, cfg.rootless)
            masker = rootfs.Masker(null)
            masker.expect("/proc", proc)
        finally:
            os.close(proc)
        devices.bind_devices(rootfd, cfg.devices)
        _mount_sys(rootfd, cfg, masker)
        for name in ("hosts", "hostname", "resolv.conf"):
            target = rootfs.make_file(rootfd, f"/etc/{name}")
            try:
                rootfs.check_target(target, f"/etc/{name}")
                rootfs.bind(os.path.join(cdir, name), target, recursive=False)
            finally:
                os.close(target)
        for host, ctr, ro in cfg.volumes:
            target = (rootfs.mkdir_all(rootfd, ctr) if os.path.isdir(host) else rootfs.make_file(rootfd, ctr))
            try:
                rootfs.check_target(target, f"volume {ctr}")
                # nodev on the whole volume tree: a node made on it opens nothing, whatever the cgroup
                rootfs.bind(host, target, readonly=bool(ro), attrs=linux.MOUNT_ATTR_NODEV,
                            reopen=lambda ctr=ctr: rootfs.resolve(rootfd, ctr))
            finally:
                os.close(target)
    except rootfs.UnsafePath as e:
        raise ContainerError(str(e)) from None
    finally:
        os.close(rootfd)
    if cfg.read_only:
        linux.mount(None, rootfs_path, None,
                    linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NODEV)
    return masker


def _apply_masks(masker: rootfs.Masker) -> None:
    """After pivot_root: runc's masked and read-only paths, beneath the /proc and /sys that
    were mounted for this container (checked), never through a symlink."""
    try:
        for path in MASKED_PATHS:
            masker.mask(path)
        for path in READONLY_PATHS:
            masker.readonly(path)
    except rootfs.UnsafePath as e:
        raise ContainerError(str(e)) from None
    finally:
        os.close(masker.null_fd)


def _overlay_options(layers: list[str], upper: str, work: str, rootless: bool = False) -> str:
    lower = ":".join(reversed(layers))  # overlay wants the top layer first
    # in a user namespace overlay keeps its metadata in user.overlay.* xattrs (userxattr)
    return f"lowerdir={lower},upperdir={upper},workdir={work}" + (",userxattr" if rootless else "")


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


def _exec(cfg: ContainerConfig, err_w: int, hostname: str) -> None:
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
        os.execvpe(argv[0], argv, envd)
    except OSError as e:
        _report(err_w, "exec", e, argv[0])


def _read_to_end(fd: int) -> bytes:
    """Everything a child writes on a pipe until it closes its end (exec or exit); closes ``fd``."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _report(err_w: int, stage: str, e: BaseException, what: str = "") -> None:
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
           console: int | None = None) -> None:
    """PID 1 of the new pid namespace, before it becomes the command. Never returns.

    The supervisor moves it into its cgroup meanwhile (a cgroup v1 migration waits for an RCU
    grace period: tens of milliseconds, spent in parallel with the mounts); ``sync_r`` says when.
    """
    cfg = rec.config
    cdir = state.container_dir(rec.id)
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)  # no container outlives its supervisor
        linux.prctl(linux.PR_SET_DUMPABLE, 0)  # a host Python (--init: for good): not openable via /proc
        os.setsid()
        if stdio is not None:
            for i, fd in enumerate(stdio):
                os.dup2(fd, i)
        confine.prepare(cfg)  # while the host's files are reachable (and the supervisor attaches)

        flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
        if cfg.network != "host":
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        rootfs_path = os.path.join(cdir, "rootfs")
        layers = cfg.layers
        rootless = cfg.rootless
        opts = _overlay_options(layers, os.path.join(cdir, "upper"), os.path.join(cdir, "work"), rootless)
        if len(opts) > 3900:  # one page of mount data: use short paths relative to the layer store
            os.chdir(os.path.dirname(os.path.dirname(layers[0])))
            rel = [os.path.relpath(p) for p in layers]
            opts = _overlay_options(rel, os.path.join(cdir, "upper"), os.path.join(cdir, "work"), rootless)
        linux.mount("overlay", rootfs_path, "overlay", linux.MS_NODEV, opts)
        os.umask(0o022)
        masker = _setup_mounts(cfg, cdir, rootfs_path)
        os.chdir(rootfs_path)
        linux.pivot_root(".", ".")
        linux.umount(".", linux.MNT_DETACH)
        os.chdir("/")
        if not cfg.privileged:  # docker: --privileged unmasks /proc and /sys
            _apply_masks(masker)
        hostname = cfg.hostname
        linux.sethostname(hostname)
        if cfg.network != "host":
            linux.set_loopback_up()
        if console is not None:  # -t: a pty of the container's devpts, the master to the supervisor
            from runtime import tty

            tty.setup_in_container(console)
        if os.read(sync_r, 1) != b"g":  # the supervisor could not put us in the cgroup
            os._exit(EXIT_PYREG)
        os.close(sync_r)
        if os.path.exists("/proc/self/ns/cgroup"):  # rooted at the container's cgroup, now we're in
            linux.unshare(linux.CLONE_NEWCGROUP)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
    except BaseException as e:
        _report(err_w, "setup", e)
    if cfg.init:
        _init(cfg, err_w, hostname)
    try:
        _exec(cfg, err_w, hostname)
    except BaseException as e:
        _report(err_w, "setup", e)


def _init(cfg: ContainerConfig, err_w: int, hostname: str) -> None:
    """``--init`` (docker's tini): stay PID 1, run the command as its child, forward signals to
    it, reap every orphan that is reparented here, and exit as the command does. Never returns."""
    try:
        linux.set_name("pyreg-init")
        confine.apply(0, 0, [], cfg.rootless, switch_user=False)
    except BaseException as e:
        _report(err_w, "setup", e)
    child = os.fork()
    if child == 0:
        try:
            os.setpgid(0, 0)  # its own process group: terminal signals reach it once, not via us
            if cfg.tty:
                signal.signal(signal.SIGTTOU, signal.SIG_IGN)
                os.tcsetpgrp(0, os.getpid())
            _exec(cfg, err_w, hostname)
        except BaseException as e:
            _report(err_w, "setup", e)
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


# --------------------------------------------------------------------------- the supervisor


def prepare(rec: Container) -> Cgroup | None:
    """Create the container's directory, /etc files and cgroup; save its 'created' state."""
    cdir = state.container_dir(rec.id)
    state.ensure_run_root()  # 0700: the upper dir below gets whatever the container makes setuid
    os.mkdir(cdir, 0o700)
    for sub in ("upper", "work", "rootfs"):
        os.mkdir(os.path.join(cdir, sub), 0o755)
    cfg = rec.config
    hostname = cfg.hostname
    with open(os.path.join(cdir, "hostname"), "w") as f:
        f.write(hostname + "\n")
    with open(os.path.join(cdir, "hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"127.0.1.1\t{hostname}\n")
    resolv = ""
    if cfg.network == "host":
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            pass
    with open(os.path.join(cdir, "resolv.conf"), "w") as f:
        f.write(resolv)
    if cfg.rootless:
        if any(v is not None for v in (cfg.memory, cfg.cpus, cfg.pids_limit)):
            remove_files(rec.id)
            raise ContainerError("rootless containers get no cgroup here: --memory, --cpus and "
                                 "--pids-limit need root")
        rec.status = "created"
        state.save(rec)
        return None
    cg = None
    try:
        cg = Cgroup.create(rec.id, memory=cfg.memory, cpus=cfg.cpus,
                           pids=cfg.pids_limit, pids_default=cfg.pids_default,
                           devices=confine.device_rules(cfg))
    except Exception as e:
        remove_files(rec.id)
        raise ContainerError(f"cgroup: {e}") from None
    rec.cgroup = cg.to_dict()
    rec.status = "created"
    state.save(rec)
    return cg


def remove_files(cid: str) -> None:
    """Remove a container's directory, including overlay's mode-000 ``work/work`` when rootless."""
    import shutil

    def retry(func: Any, path: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, ignore_errors=True)
            else:
                func(path)

    shutil.rmtree(state.container_dir(cid), onerror=retry)


def cleanup(rec: Container, remove: bool) -> None:
    """Remove the cgroup, and with ``remove`` the container's directory; safe to call twice."""
    cg = Cgroup.from_dict(rec.cgroup)
    if cg is not None:
        try:
            cg.kill_all()
            cg.remove()
        except Exception as e:
            print(f"pyreg: warning: {e}", file=sys.stderr)
    if remove:
        remove_files(rec.id)


def exit_code_of(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def enter_user_namespace() -> None:
    """Rootless: a new user namespace where our uid and gid are 0 (only they are mapped).

    Every namespace made after this (pid here, then mnt/uts/ipc/net in PID 1) is owned by it, so
    the container's root has capabilities over them and nothing else.
    """
    uid, gid = os.getuid(), os.getgid()
    linux.unshare(linux.CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def start(rec: Container, cg: Cgroup | None, stdio: tuple[int, int, int] | None = None,
          forward_signals: bool = True, console: int | None = None) -> int:
    """Fork PID 1 and wait for its exec; returns its host pid. Raises ContainerError on failure."""
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
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(sync_w)
        _child(rec, err_w, sync_r, stdio, console)
        os._exit(EXIT_PYREG)  # not reached
    os.close(err_w)
    os.close(sync_r)
    failure: OSError | None = None
    try:
        if cg is not None:
            cg.attach(child)
        os.write(sync_w, b"g")
    except OSError as e:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        failure = e
    finally:
        os.close(sync_w)
    data = _read_to_end(err_r)  # when the set-up failed first (EPIPE above), it says why
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


def wait(rec: Container, pid: int, cg: Cgroup | None) -> int:
    """Reap PID 1, record how it ended; returns its docker-style exit code."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 255 << 8
            break
    code = exit_code_of(status)
    # as docker: OOMKilled when the kernel's OOM killer struck inside the container's cgroup
    oom = bool(cg is not None and cg.oom_kills() > 0)
    rec.status, rec.exit_code, rec.oom_killed, rec.finished_at = "exited", code, oom, state.now()
    state.save(rec)
    return code


def run(rec: Container, detach: bool) -> int:
    """Create, start and (foreground) wait for the container described by ``rec``."""
    cg = prepare(rec)
    if not detach:
        return _supervise(rec, cg, None, None)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the detached supervisor
        code = EXIT_PYREG
        try:
            os.close(ready_r)
            os.setsid()
            log = os.open(os.path.join(state.container_dir(rec.id), "log"),
                          os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            # the caller of 'pyreg run -d' may be reading our stdout: let go of it now
            stdio = (os.dup(0), os.dup(1), os.dup(2))
            for i in range(3):
                os.dup2(devnull, i)
            for fd in stdio:
                os.close(fd)
            code = _supervise(rec, cg, (devnull, log, log), ready_w)
        except BaseException:
            pass
        finally:
            os._exit(code)
    os.close(ready_w)
    data = _read_to_end(ready_r)
    msg: dict[str, Any] = json.loads(data) if data else {"message": "the supervisor died", "code": EXIT_PYREG}
    if "message" in msg:
        raise ContainerError(msg["message"], int(msg["code"]))
    return 0


def _supervise(rec: Container, cg: Cgroup | None, stdio: tuple[int, int, int] | None,
               ready_w: int | None) -> int:
    rec.supervisor = os.getpid()
    rec.supervisor_start = state.proc_start_time(os.getpid())
    console = None
    if rec.config.tty:
        from runtime import tty

        console = tty.console_pair()
    try:
        pid = start(rec, cg, stdio, console=console[1].fileno() if console else None)
    except ContainerError as e:
        rec.status, rec.exit_code, rec.error, rec.finished_at = "exited", e.code, str(e), state.now()
        state.save(rec)
        cleanup(rec, rec.config.rm)
        if ready_w is not None:
            os.write(ready_w, json.dumps({"message": str(e), "code": e.code}).encode())
            os.close(ready_w)
        raise
    rec.status, rec.pid, rec.pid_start = "running", pid, state.proc_start_time(pid)
    rec.started_at = state.now()
    state.save(rec)
    master = None
    if console is not None:
        from runtime import tty

        console[1].close()
        try:
            master = tty.receive_master(console[0])
        except OSError as e:
            print(f"pyreg: no terminal from the container: {e}", file=sys.stderr)
        console[0].close()
    out = 1
    if ready_w is not None:
        keep = stdio[1] if master is not None and stdio is not None else -1  # the log, for the relay
        for fd in set(stdio or ()) - {keep}:
            os.close(fd)
        out = keep
        os.write(ready_w, b'{"ok": true}')
        os.close(ready_w)
    if master is not None:
        from runtime import tty

        tty.relay(master, 0 if ready_w is None else None, out)  # until the container's side closes
        os.close(master)
    code = wait(rec, pid, cg)
    cleanup(rec, rec.config.rm)
    return code


# --------------------------------------------------------------------------- exec


def _close_fds_except(*keep: int) -> None:
    """Close every descriptor above 2 except ``keep``."""
    top = max(65536, os.sysconf("SC_OPEN_MAX"))
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, top)


def exec_in(rec: Container, argv: list[str], env: list[str] | None = None, workdir: str | None = None,
            user: str | None = None) -> int:
    """Run ``argv`` inside a running container (setns into its namespaces and cgroup)."""
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
        # the helper is in the container's pid namespace from birth, a host Python until it
        # execs: not dumpable, so container root cannot open its /proc/PID/exe, fd/ or mem
        # (CVE-2019-5736); exec makes the command dumpable again
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        child = os.fork()
        if child == 0:
            try:
                _close_fds_except(err_w, *fds.values())  # err_r and all of the caller's: closed
                linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
                confine.prepare(cfg)
                if cg is not None:
                    cg.attach(0)
                for ns in ("ipc", "uts", "net", "cgroup", "mnt"):
                    if ns in fds:
                        linux.setns(fds[ns], 0)
                os.chdir("/")
                for fd in fds.values():
                    os.close(fd)
            except BaseException as e:
                _report(err_w, "setup", e)
            try:
                _exec(cfg, err_w, cfg.hostname)
            except BaseException as e:
                _report(err_w, "setup", e)
            os._exit(EXIT_PYREG)
        os.close(err_w)
        data = _read_to_end(err_r)
        _, status = os.waitpid(child, 0)
        if data:
            err = json.loads(data)
            raise ContainerError(err["message"], int(err["code"]))
        return exit_code_of(status)
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
