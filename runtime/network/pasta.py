"""``--network pasta``: user-mode networking through pasta (Debian's ``passt``), the rootless
default when it is installed, as in podman 5.

Why pasta first: podman 5 made it its rootless default over slirp4netns. pasta maps the
container's sockets onto the user's own sockets without a TCP/IP stack of its own in between
(slirp4netns runs libslirp's), so it is faster and needs no NAT table; it binds every published
port itself at start (``-t``/``-u``), and it sandboxes itself (a mount namespace of its own,
seccomp) without being asked. slirp4netns stays available (``--network slirp4netns``).

The container sees the same network as under slirp4netns (runtime/network/slirp.py): ``tap0``
10.0.2.100/24, gateway 10.0.2.2, DNS at 10.0.2.3 (``--dns-forward``: pasta relays those queries
to the host's first resolver), and ``--no-map-gw`` keeps the host's 127.0.0.1 services out of
reach through the gateway (slirp4netns's ``--disable-host-loopback``). pasta copies its addresses
from the host's default-route interface; where there is none (a test's namespace) it is given
``lo`` and a MAC of its own as the template, the addresses being ours anyway.

Shape (before PID 1 exists, so a port in use fails before anything of the image runs):

1. the supervisor forks a *watcher* in the host's namespaces that waits on a pipe;
2. the supervisor enters its user namespace (rootless), unshares a network namespace and stays;
3. the watcher, a child subreaper, runs ``pasta ... SUPERVISOR_PID``: pasta joins that user and
   network namespace, makes and configures ``tap0``, binds the published ports, then forks into
   the background; its first process exiting 0 is the "ready" (as podman waits for it), and the
   daemon is reparented to the watcher;
4. the watcher waits for EOF on a pipe only the supervisor holds (its end, or ``kill -9``), then
   stops pasta and reaps it: pasta has no ``--exit-fd`` of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal

from pyreg.runtime import linux
from pyreg.runtime.errors import ContainerError
from pyreg.runtime.network.slirp import ADDRESS, DNS, GATEWAY, enter_new_netns

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container

PASTA = "pasta"
LOG, ERR, PIDFILE = "pasta.log", "pasta.err", "pasta.pid"  # in the container's directory
NETNS_FD = 3  # root: the container's network namespace, as pasta gets it
TEMPLATE_MAC = "02:70:79:72:65:67"  # locally administered; only without a default route


def available() -> bool:
    """pasta on PATH (os.access, no ``import shutil``: this runs on every rootless start)."""
    return any(os.access(os.path.join(d, PASTA), os.X_OK)
               for d in (os.environ.get("PATH") or os.defpath).split(os.pathsep) if d)


def _has_default_route() -> bool:
    """An IPv4 default route in the current network namespace (/proc/net/route: no process)."""
    try:
        with open("/proc/net/route") as f:
            return any(line.split()[1:2] == ["00000000"] for line in f.readlines()[1:])
    except OSError:
        return False


def argv(published: list[dict[str, Any]], target_pid: int, cdir: str) -> list[str]:
    """pasta's command line: our addresses, DNS forwarder, and one ``-t``/``-u`` per port."""
    args = [PASTA, "--config-net", "-q", "-4", "-I", "tap0", "-a", ADDRESS, "-n", "24", "-g", GATEWAY,
            "--dns-forward", DNS, "--no-map-gw", "-T", "none", "-U", "none",
            "-l", os.path.join(cdir, LOG), "-P", os.path.join(cdir, PIDFILE)]
    if not _has_default_route():
        args += ["-i", "lo", "-M", TEMPLATE_MAC]
    for flag, proto in (("-t", "tcp"), ("-u", "udp")):  # [ADDR/]PORT:CTRPORT, comma-separated
        specs = [(f"{p['host_ip']}/" if p.get("host_ip") else "") + f"{p['host_port']}:{p['port']}"
                 for p in published if p["proto"] == proto]
        args += [flag, ",".join(specs) or "none"]
    if os.getuid() == 0:
        # root's pasta has dropped capabilities before it opens the namespace, and may then not
        # open /proc/PID/ns of a process holding more (the supervisor): the watcher opens it and
        # hands it over as fd 3. As nobody (its default --runas) it could not enter a namespace
        # of root's: it stays uid 0, with only CAP_NET_BIND_SERVICE and CAP_SYS_ADMIN left, its
        # own pid and mount namespaces and its seccomp filter (root's default is bridge anyway)
        return [*args, "--runas", "0:0", "--netns", f"/proc/self/fd/{NETNS_FD}", "--no-netns-quit"]
    return [*args, str(target_pid)]


def _watch(cmd: list[str], cdir: str, go_r: int, ready_w: int, exit_r: int) -> None:
    """The watcher (a child of the supervisor, never returns): run pasta, report, wait, stop it."""
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)
        keep = sorted((go_r, ready_w, exit_r))
        low = 3
        for fd in keep:  # no exec here: the supervisor's other fds (pipes its caller reads to
            os.closerange(low, fd)  # EOF, ``run -d``'s among them) must not stay open with us
            low = fd + 1
        os.closerange(low, 65536)
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)  # pasta's daemon becomes ours to reap
        if os.read(go_r, 1) != b"g":
            os._exit(0)
        os.chdir(cdir)
        for name in (PIDFILE, LOG, ERR):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
        netns = -1
        if os.getuid() == 0:
            netns = os.open(f"/proc/{os.getppid()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        first = os.fork()
        if first == 0:
            try:
                if netns >= 0:
                    os.dup2(netns, NETNS_FD, inheritable=True) if netns != NETNS_FD else \
                        os.set_inheritable(netns, True)
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                # what it says before it opens its log file (-l), for our error message
                os.dup2(os.open(ERR, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
                os.closerange(NETNS_FD + 1 if netns >= 0 else 3, 65536)
                # Debian 12's pasta (2023-03) refuses to start when SIGPIPE is already ignored
                # (it tests signal()'s old handler as an error), and Python ignores it
                for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                    signal.signal(sig, signal.SIG_DFL)
                os.execvp(PASTA, cmd)
            finally:
                os._exit(127)
        if netns >= 0:
            os.close(netns)
        _, status = os.waitpid(first, 0)
        daemon, exited = 0, os.waitstatus_to_exitcode(status)
        if exited == 0:
            with contextlib.suppress(OSError, ValueError), open(PIDFILE) as f:
                daemon = int(f.read().strip())
        os.write(ready_w, f"{daemon} {exited}\n".encode())
        os.close(ready_w)
        if daemon:
            os.read(exit_r, 1)  # returns at EOF: the supervisor closed it, or died
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(daemon, 0)
    except BaseException as e:
        code = 1
        with contextlib.suppress(OSError), open(os.path.join(cdir, LOG), "a") as f:
            f.write(f"ERROR: pyreg's watcher: {e!r}\n")
    finally:
        os._exit(code)


def start(rec: Container, cdir: str, rootless: bool) -> tuple[int, tuple[int, int]]:
    """As slirp.start: (an fd of the container's network namespace, (exit fd, watcher pid)); the
    calling process is left in that namespace (and its user namespace when ``rootless``)."""
    from pyreg.runtime.network import ports

    published = rec.config.publish
    for p in published:
        if ":" in (p.get("host_ip") or ""):
            raise ContainerError(f"-p {ports.format_port(p)}: pasta is run for IPv4 here (-4): "
                                 "give an IPv4 host address")
    # bound first so that a port in use (and a random one) is answered by the kernel here; let go
    # of just before pasta binds the same ports
    proxy = ports.Proxy(published)
    published = proxy.published
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    cmd = argv(published, os.getpid(), cdir)
    pid = os.fork()
    if pid == 0:
        proxy.close()
        for fd in (exit_w, ready_r, go_w):
            os.close(fd)
        _watch(cmd, cdir, go_r, ready_w, exit_r)
    for fd in (exit_r, ready_w, go_r):
        os.close(fd)
    handle = (exit_w, pid)
    netns = -1
    try:
        netns = enter_new_netns(rootless, go_w, before_go=proxy.close)
        ready = b""
        while chunk := os.read(ready_r, 64):
            ready += chunk
        daemon, exited = (int(w) for w in [*ready.split(), b"0", b"0"][:2])
        if not daemon:
            why = []
            for name in (LOG, ERR):
                with contextlib.suppress(OSError), open(os.path.join(cdir, name), errors="replace") as f:
                    why += [ln for ln in f.read().splitlines()
                            if ln.strip() and "syslog" not in ln and "version" not in ln]
            reason = why[-1].split("ERROR:", 1)[-1].strip() if why else f"exit status {exited}"
            raise ContainerError(f"network: {PASTA} failed: {reason}")
    except BaseException as e:
        proxy.close()
        if netns >= 0:
            os.close(netns)
        from pyreg.runtime.network import janitor

        janitor.finish(handle)
        if isinstance(e, ContainerError):
            raise
        raise ContainerError(f"network: {PASTA}: {e}") from None
    finally:
        os.close(ready_r)
    if rec.net is not None:
        rec.net.update({"ip": ADDRESS, "gateway": GATEWAY, "ports": published, "pasta": daemon,
                        "janitor": pid})
    return netns, handle


def release(rec: Container, cdir: str) -> None:
    """What a ``kill -9`` of the supervisor and its watcher both can leave: pasta itself, known
    by its recorded pid still being a pasta whose pid file is this container's."""
    pid = int((rec.net or {}).get("pasta") or 0)
    if pid:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            args = []
        if args and args[0].endswith(b"pasta") and os.path.join(cdir, PIDFILE).encode() in args:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(cdir, PIDFILE))
