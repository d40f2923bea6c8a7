"""Container lifecycle: create (directory, /etc files, cgroup, state), start and supervise,
clean up.

The modules, one job each: ``spec`` (image config + flags -> what to run), ``record`` (the typed
record in state.json), ``mounts`` (rootfs, /proc, /dev, /sys, volumes, masks), ``identity``
(user and groups from the image), ``confine`` (keyring, capabilities, seccomp), ``process``
(fork PID 1, set it up, exec, ``--init``, wait, exit codes), ``exec`` (``pyreg exec``), and
this one, which runs them in order.

The supervisor stays outside the container: it forwards signals to PID 1, records the exit
status (128+signal when killed; OOMKilled from the cgroup), removes the cgroup and, with
``--rm``, the container. With ``-d`` it is a forked, detached process that writes the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from pyreg.runtime import confine, process, state
from pyreg.runtime.cgroups import Cgroup
from pyreg.runtime.errors import EXIT_PYREG, ContainerError

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container


def prepare(rec: Container) -> Cgroup | None:
    """Create the container's directory, /etc files and cgroup; save its 'created' state."""
    cdir = state.container_dir(rec.id)
    state.ensure_run_root()  # 0700: the upper dir below gets whatever the container makes setuid
    again = rec.status == "exited"  # pyreg start: its directory and upper layer are kept
    if not again:
        os.mkdir(cdir, 0o700)
    scratch = rec.config.extra.get("scratch_dir")  # a build step's upper/work: on disk, not tmpfs
    for sub in ("upper", "work", "rootfs"):
        if not (again and os.path.isdir(os.path.join(cdir, sub))):
            if scratch and sub != "rootfs":
                os.mkdir(os.path.join(scratch, sub), 0o755)
                os.symlink(os.path.join(scratch, sub), os.path.join(cdir, sub))
                continue
            os.mkdir(os.path.join(cdir, sub), 0o755)
    cfg = rec.config
    hostname = cfg.hostname
    with open(os.path.join(cdir, "hostname"), "w") as f:
        f.write(hostname + "\n")
    hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             f"127.0.1.1\t{hostname}\n")
    if cfg.network == "bridge":
        hosts = _allocate_address(rec)
    elif cfg.network in ("slirp4netns", "pasta"):  # the same addresses under both
        from pyreg.runtime.network import slirp

        hosts = slirp.hosts(hostname)
    with open(os.path.join(cdir, "hosts"), "w") as f:
        f.write(hosts)
    resolv = ""
    if cfg.network in ("host", "bridge"):
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            pass
    if cfg.network == "bridge":
        from pyreg.runtime.network import files

        resolv = files.resolv_conf(resolv)
    elif cfg.network in ("slirp4netns", "pasta"):
        resolv = slirp.resolv_conf()
    with open(os.path.join(cdir, "resolv.conf"), "w") as f:
        f.write(resolv)
    if cfg.rootless:
        if any(v is not None for v in (cfg.memory, cfg.cpus, cfg.pids_limit)):
            if not again:
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
        if not again:
            remove_files(rec.id)
        raise ContainerError(f"cgroup: {e}") from None
    rec.cgroup = cg.to_dict()
    rec.status = "created"
    state.save(rec)
    return cg


def _allocate_address(rec: Container) -> str:
    """An address on the bridge, saved in the record under the network lock; the hosts file."""
    from pyreg.runtime.network import ipam, networks

    net = dict(rec.net or {})
    name = str(net.get("network", "bridge"))
    with ipam.locked():
        peers = networks.members(name)
        try:
            ip, gateway, prefixlen = ipam.allocate(str(net.get("subnet")), peers)
        except ValueError as e:
            remove_files(rec.id)
            raise ContainerError(str(e)) from None
        rec.net = {**net, "ip": ip, "gateway": gateway, "prefixlen": prefixlen, "ports": []}
        rec.status = "created"
        state.save(rec)
        if name == "bridge":  # as docker's default network: no names
            peers = []
        text = networks.hosts_text(rec, peers)
        with open(os.path.join(state.container_dir(rec.id), "hosts"), "w") as f:
            f.write(text)
        networks.update_hosts(name)  # the others learn the new name
    return text


STOP_MARK = "stopped-by-user"  # pyreg stop/kill made it: no --restart policy applies


def restart_due(rec: Container, code: int) -> bool:
    """docker's policies: ``always`` / ``unless-stopped`` restart whatever the exit code,
    ``on-failure[:N]`` on a non-zero one (at most N times); never after ``pyreg stop``/``kill``."""
    policy = str(rec.config.extra.get("restart") or "no")
    if policy == "no" or os.path.exists(os.path.join(state.container_dir(rec.id), STOP_MARK)):
        return False
    cur = state.load(rec.id)
    if cur is None or cur.error:  # removed, or it could not even start: no retry loop
        return False
    name, _, limit = policy.partition(":")
    if name == "on-failure":
        return code != 0 and (not limit or int(rec.extra.get("restart_count", 0)) < int(limit))
    return name in ("always", "unless-stopped")


def _restart(rec: Container) -> int:
    """One restart from the detached supervisor: the record reset, its directory kept; the
    container's exit code."""
    import time

    count = int(rec.extra.get("restart_count", 0))
    time.sleep(min(0.1 * 2 ** count, 5.0))  # docker's back-off: 100 ms, doubling
    rec.extra["restart_count"] = count + 1
    for key in ("pid", "pid_start", "exit_code", "oom_killed", "finished_at", "error", "cgroup"):
        setattr(rec, key, None)
    rec.status = "exited"  # prepare(): the directory is there already
    cg = prepare(rec)
    log = os.open(os.path.join(state.container_dir(rec.id), "log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    return _in_child(rec, cg, (devnull, log, log), None)


def _in_child(rec: Container, cg: Cgroup | None, stdio: tuple[int, int, int], ready_w: int | None) -> int:
    """``_supervise`` in a new process (a process unshares a pid namespace for its children only
    once, so each run needs a fresh supervisor); the container's exit code."""
    child = os.fork()
    if child == 0:
        code = EXIT_PYREG
        try:
            code = _supervise(rec, cg, stdio, ready_w)
        finally:
            os._exit(code & 0xFF)
    for fd in {*stdio, *([ready_w] if ready_w is not None else [])}:
        with contextlib.suppress(OSError):
            os.close(fd)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else EXIT_PYREG


def _collect_again() -> None:
    """The garbage collector back on for the supervision, however long, if ``pyreg run``'s
    start-up turned it off (client/cli.py); what start-up made is frozen first, so the first
    collection does not go through all of it."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def start(rec: Container) -> None:
    """``pyreg start``: run an exited container again, detached, with its filesystem as it left
    it (docker keeps the upper layer); the log goes on."""
    for key in ("pid", "pid_start", "exit_code", "oom_killed", "finished_at", "error", "cgroup"):
        setattr(rec, key, None)
    rec.detached = True
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state.container_dir(rec.id), STOP_MARK))
    run(rec, detach=True)


def remove_files(cid: str) -> None:
    """Remove a container's directory, including overlay's mode-000 ``work/work`` when rootless."""
    remove_tree(state.container_dir(cid))


def remove_tree(path: str) -> None:
    """``rmtree`` that also removes what overlay leaves unreadable (a mode-000 ``work/work``):
    a container's directory, a build step's scratch dir."""
    if _remove_shallow(path):
        return
    import shutil

    def retry(func: Any, p: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, ignore_errors=True)
            else:
                func(p)

    shutil.rmtree(path, onerror=retry)


def _remove_shallow(path: str) -> bool:
    """The usual container directory (a few files, ``upper``, ``rootfs``, ``work/work``, all
    empty after ``run --rm true``) removed without shutil, whose import (bz2, lzma, zlib) costs
    ~2 ms of ``run``'s start-up; False as soon as it finds more (shutil.rmtree does the rest).
    Only names relative to directory fds opened with O_NOFOLLOW, only unlink and rmdir: nothing
    a container put in its upper dir (a symlink, say) is followed."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        top = os.open(path, flags)
    except OSError:
        return False
    try:
        with os.scandir(top) as entries:
            for entry in list(entries):
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=top)
                    continue
                sub = os.open(entry.name, flags, dir_fd=top)
                try:
                    with os.scandir(sub) as inner:
                        for child in list(inner):  # overlay's work/work; anything else: rmtree
                            os.rmdir(child.name, dir_fd=sub)
                finally:
                    os.close(sub)
                os.rmdir(entry.name, dir_fd=top)
    except OSError:
        return False
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def cleanup(rec: Container, remove: bool) -> None:
    """Remove the cgroup, and with ``remove`` the container's directory; safe to call twice."""
    cg = Cgroup.from_dict(rec.cgroup)
    if cg is not None:
        try:
            cg.kill_all()
            cg.remove()
        except Exception as e:
            print(f"pyreg: warning: {e}", file=sys.stderr)
    if _janitor:  # the supervisor: it can fork nothing any more, the janitor releases
        from pyreg.runtime.network import janitor

        janitor.finish(_janitor.pop())
    elif rec.net:
        release_network(rec)
    if remove:
        remove_files(rec.id)


def release_network(rec: Container) -> None:
    """What the container leaves on its network (runtime/network/bridge.py ``release``)."""
    try:
        if rec.config.network in ("slirp4netns", "pasta"):
            from pyreg.runtime.network import pasta, slirp

            (pasta if rec.config.network == "pasta" else slirp).release(rec, state.container_dir(rec.id))
        else:
            from pyreg.runtime.network import bridge

            bridge.release(rec)
    except Exception as e:
        print(f"pyreg: warning: network: {e}", file=sys.stderr)


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
            if str(rec.config.extra.get("restart") or "no") == "no":
                code = _supervise(rec, cg, (devnull, log, log), ready_w)
            else:  # --restart: this process keeps the policy, a child supervises each run
                code = _in_child(rec, cg, (devnull, log, log), ready_w)
                while restart_due(rec, code):
                    code = _restart(rec)
        except BaseException:
            pass
        finally:
            os._exit(code)
    os.close(ready_w)
    data = process.read_to_end(ready_r)
    msg: dict[str, Any] = json.loads(data) if data else {"message": "the supervisor died", "code": EXIT_PYREG}
    if "message" in msg:
        raise ContainerError(msg["message"], int(msg["code"]))
    return 0


def _network(rec: Container) -> int:
    """Bind the published ports (a port in use fails here), wire the namespace, and hand the
    ports to the janitor (runtime/network/janitor.py), which forwards them."""
    if rec.config.network in ("slirp4netns", "pasta"):  # they forward the ports themselves
        from pyreg.runtime.network import pasta, slirp

        usermode = pasta if rec.config.network == "pasta" else slirp
        netns, handle = usermode.start(rec, state.container_dir(rec.id), rec.config.rootless)
        _janitor.append(handle)  # closing its exit fd stops slirp4netns / pasta
        return netns
    from pyreg.runtime.network import bridge

    if not rec.config.publish:  # nothing to forward, and nothing to undo that needs a fork
        return bridge.create(rec)
    from pyreg.runtime.network import janitor, ports

    proxy = ports.Proxy(rec.config.publish, dual_stack=True)  # IPv4 bridge, [::] too: as docker
    try:
        netns = bridge.create(rec)
    except BaseException:
        proxy.close()
        raise
    if rec.net:
        rec.net["ports"] = proxy.published
    _janitor.append(janitor.spawn(rec, proxy))
    if rec.net:
        rec.net["janitor"] = _janitor[-1][1]
    return netns


_janitor: list[tuple[int, int]] = []  # the supervisor's (runtime/network/janitor.py)

# Set by the CLI when ``pyreg run`` is the whole process (runtime/api.py ``run_as_program``): a
# foreground ``--rm`` may then finish its removal in a detached process (``_remove_after_exit``).
background_removal = False
REMOVING = "removing"  # <run root>/removing/<id>: containers on their way out, seen by no command
STALE_REMOVAL = 60.0  # seconds: an entry of REMOVING this old lost its cleaner (killed): swept


def _start_keeper() -> int | None:
    """The process that finishes a foreground ``--rm`` after the exit status is told (``_keeper``);
    the write end of its pipe, or None. Forked before the supervisor's pid namespace is made: a
    fork after its PID 1 exits fails (ENOMEM), one while it runs would join the container."""
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:
        try:
            os.close(w)
            _keeper(r)
        finally:
            os._exit(0)
    os.close(r)
    return w


def _keeper(r: int) -> None:
    """Told by the supervisor (``process.start``) PID 1's pid, it holds the container's mount
    namespace, so PID 1's exit does not wait for its unmounting; told ``rm PATH`` once the
    container is reaped, renamed to PATH and its cgroup removed, and its exit status about to be
    told, it lets go of the namespace (the unmounting happens here), removes PATH and sweeps
    ``removing/``. EOF alone (the supervisor died or took the slow way): it lets go and ends."""
    _detach(r)
    held = None
    data = b""
    while b"\n" not in data and (chunk := os.read(r, 4096)):
        data += chunk
    line, _, rest = data.partition(b"\n")
    if line.isdigit():
        with contextlib.suppress(OSError):
            held = os.open(f"/proc/{int(line)}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    else:
        rest = data
    rest += process.read_to_end(r)
    if held is not None:
        os.close(held)
    if rest.startswith(b"rm ") and rest.endswith(b"\n"):
        gone = os.fsdecode(rest[3:-1])
        remove_tree(gone)
        _sweep(os.path.dirname(gone))


def _remove_after_exit(rec: Container, cg: Cgroup | None, keeper: int) -> bool:
    """A foreground ``--rm`` container, once its PID 1 is reaped, removed as docker's daemon
    does it, after its exit status is known: False if it cannot be (the caller removes it).

    What any command can see goes first, here: its directory is renamed out of
    ``containers/`` in one step (``ps -a``, ``rm``, ``inspect``, ``--name`` see it whole or not
    at all, never half-removed), and its cgroup is removed. What no command sees, the renamed
    directory's files and the unmounting of its mount namespace, is left to the keeper, in a
    session of its own with /dev/null for stdio (a caller reading our output sees its end when
    we exit); one that was killed leaves an entry in ``removing/`` that the next one sweeps."""
    trash = os.path.join(state.run_root(), REMOVING)
    gone = os.path.join(trash, rec.id)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(trash, 0o700)  # in the run root, which is ours and private (ensure_run_root)
        os.rename(state.container_dir(rec.id), gone)
    except OSError:
        return False
    if cg is not None:
        try:
            cg.remove()  # empty: its processes went with the pid namespace's PID 1
        except Exception as e:
            print(f"pyreg: warning: {e}", file=sys.stderr)
    try:
        os.write(keeper, b"rm " + os.fsencode(gone) + b"\n")
    except OSError:  # the keeper is gone: here and now
        remove_tree(gone)
    return True


def _detach(keep: int) -> None:
    """The keeper: its own session (no signal of the caller's terminal or process group), and
    none of the supervisor's files but ``keep`` (a copy of the caller's stdout or of a ``-t``
    console socket would keep its reader waiting for an end)."""
    os.setsid()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)
    devnull = os.open("/dev/null", os.O_RDWR)
    for i in range(3):
        os.dup2(devnull, i)
    if devnull > 2:
        os.close(devnull)


def _sweep(trash: str) -> None:
    """Entries of ``removing/`` whose cleaner died (their cgroup too, from their state)."""
    import time

    try:
        names = os.listdir(trash)
    except OSError:
        return
    for name in names:
        path = os.path.join(trash, name)
        try:
            if time.time() - os.lstat(path).st_ctime < STALE_REMOVAL:
                continue
            claimed = f"{path}.{os.getpid()}.sweep"
            os.rename(path, claimed)  # one sweeper per entry
        except OSError:
            continue
        with contextlib.suppress(Exception):
            with open(os.path.join(claimed, "state.json")) as f:
                old = Cgroup.from_dict(json.load(f).get("cgroup"))
            if old is not None:
                old.remove()
        remove_tree(claimed)


def _supervise(rec: Container, cg: Cgroup | None, stdio: tuple[int, int, int] | None,
               ready_w: int | None) -> int:
    rec.supervisor = os.getpid()
    rec.supervisor_start = state.proc_start_time(os.getpid())
    console = None
    if rec.config.tty:
        from pyreg.runtime import tty

        console = tty.console_pair()
    netns = None
    relay = None
    keeper = None  # a foreground --rm of the CLI: removed after its exit is told (_keeper)
    try:
        if rec.net:
            netns = _network(rec)
        if stdio is not None:  # detached: output goes through runtime/logfile.py (line times)
            from pyreg.runtime.logfile import Relay

            relay = Relay(state.container_dir(rec.id), stdio[1])
            relay.start()
            stdio = (stdio[0], relay.write_fd, relay.write_fd)
        if (rec.config.rm and background_removal and ready_w is None and stdio is None
                and not rec.net and not _janitor):
            keeper = _start_keeper()
        pid = process.start(rec, cg, stdio, console=console[1].fileno() if console else None,
                            netns=netns, keeper=keeper)
    except ContainerError as e:
        if keeper is not None:
            os.close(keeper)
        rec.status, rec.exit_code, rec.error, rec.finished_at = "exited", e.code, str(e), state.now()
        state.save(rec)
        cleanup(rec, rec.config.rm)
        if ready_w is not None:
            os.write(ready_w, json.dumps({"message": str(e), "code": e.code}).encode())
            os.close(ready_w)
        raise
    if netns is not None:
        os.close(netns)
    _collect_again()
    rec.status, rec.pid, rec.pid_start = "running", pid, state.proc_start_time(pid)
    rec.started_at = state.now()
    state.save(rec)
    master = None
    if console is not None:
        from pyreg.runtime import tty

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
    if relay is not None:
        if master is not None:  # the terminal's output goes to the relay (after a restart too)
            out = relay.write_fd
        elif ready_w is None:  # a restart: the supervisor's copy must go for the relay to end
            os.close(relay.write_fd)
    if master is not None:
        from pyreg.runtime import tty

        tty.relay(master, 0 if ready_w is None else None, out)  # until the container's side closes
        os.close(master)
        if relay is not None:
            os.close(out)
    if relay is not None:
        relay.join()  # every line is logged before the container is recorded as exited
    code = process.wait(rec, pid, cg, record=keeper is None)
    if keeper is not None:
        done = _remove_after_exit(rec, cg, keeper)
        os.close(keeper)
        if done:
            return code
    cleanup(rec, rec.config.rm)
    return code
