"""``--network slirp4netns``: user-mode networking, the rootless default where pasta is not
installed (runtime/network/pasta.py).

A user cannot make a veth or a bridge, but it can make a network namespace in its own user
namespace and hand a TAP device of it to ``slirp4netns`` (Debian's package), which runs in the
host's namespace and turns the container's packets into ordinary sockets of the user: outbound
TCP/UDP, a DNS forwarder at 10.0.2.3 (the host's resolvers), and ``-p`` through its API socket's
``add_hostfwd`` (slirp4netns itself listens on the host port).

Shape, all before PID 1 exists (so a port in use fails before anything of the image runs):

1. the supervisor forks a child in the host's namespaces that waits on a pipe;
2. the supervisor enters its user namespace (rootless) and unshares a network namespace, and
   stays in it (a user cannot ``setns`` back into the host's);
3. the child execs ``slirp4netns --configure`` on the supervisor's pid, which joins that user and
   network namespace only to open ``tap0``; its ``--ready-fd`` says when ``tap0`` is up;
4. the supervisor asks for each published port over the API socket.

Clean-up: ``--exit-fd`` is a pipe only the supervisor holds, so slirp4netns exits when the
supervisor closes it or dies (``kill -9`` included) — no host state is left but the API socket
file in the container's directory, which goes with it (``release`` removes it on a sweep).
``--disable-host-loopback`` keeps the container away from the host's 127.0.0.1 services through
the gateway; ``--enable-sandbox`` and ``--enable-seccomp`` confine slirp4netns itself (a mount
namespace with little in it, a syscall filter), as podman runs it: it parses the container's
packets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Callable

from pyreg.runtime import linux
from pyreg.runtime.errors import ContainerError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pyreg.runtime.record import Container

SLIRP = "slirp4netns"
ADDRESS, GATEWAY, DNS = "10.0.2.100", "10.0.2.2", "10.0.2.3"  # slirp4netns's defaults, --configure
API_SOCKET = "slirp4netns.sock"
LOG = "slirp4netns.log"  # in the container's directory


def available() -> bool:
    """slirp4netns on PATH (os.access, no ``import shutil``: this runs on every rootless start)."""
    return any(os.access(os.path.join(d, SLIRP), os.X_OK)
               for d in (os.environ.get("PATH") or os.defpath).split(os.pathsep) if d)


def hosts(hostname: str) -> str:
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{ADDRESS}\t{hostname}\n")


def resolv_conf() -> str:
    return f"nameserver {DNS}\n"


def _api(cdir_fd: int, request: dict[str, Any]) -> dict[str, Any]:
    """One request on the API socket, reached through the directory's fd (no 108-byte path
    limit): one JSON object each way, the reply ending at EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(f"/proc/self/fd/{cdir_fd}/{API_SOCKET}")
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    reply = json.loads(data or b"{}")
    return reply if isinstance(reply, dict) else {}


def enter_new_netns(rootless: bool, go_w: int, before_go: Callable[[], None] | None = None) -> int:
    """Move this process into a new network namespace (inside its user namespace first when
    ``rootless``) and tell the user-mode stack's process, waiting on ``go_w``'s pipe, that the
    namespace is there to attach to; returns an fd of it. ``go_w`` is closed whatever happens,
    so the waiting process never hangs; ``before_go`` runs just before the word (pasta: let go of
    the ports it is about to bind)."""
    from pyreg.runtime import process

    try:
        if rootless:
            process.enter_user_namespace()
        linux.unshare(linux.CLONE_NEWNET)
        netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if before_go is not None:
                before_go()
            os.write(go_w, b"g")
        except BaseException:
            os.close(netns)
            raise
        return netns
    finally:
        os.close(go_w)


def start(rec: Container, cdir: str, rootless: bool) -> tuple[int, tuple[int, int]]:
    """(an fd of the container's network namespace, (exit fd, slirp4netns pid)): the calling
    process is left in that namespace (and its user namespace when ``rootless``). Closing the
    exit fd and reaping the pid (runtime/network/janitor.py ``finish``) stops slirp4netns."""
    from pyreg.runtime.network import ports

    published = rec.config.publish
    for p in published:
        if ":" in (p.get("host_ip") or ""):
            raise ContainerError(f"-p {ports.format_port(p)}: slirp4netns forwards IPv4 host addresses only")
    # bound first so that a port in use (and a random one) is answered by the kernel here; let go
    # of just before slirp4netns binds the same port
    proxy = ports.Proxy(published)
    published = proxy.published
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(cdir, API_SOCKET))  # a previous run's (pyreg start)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            proxy.close()
            if os.read(go_r, 1) != b"g":
                os._exit(0)
            os.chdir(cdir)
            # above 9 first: dup2 onto the same number would keep close-on-exec
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (exit_r, ready_w)]
            os.dup2(high[0], 3, inheritable=True)
            os.dup2(high[1], 4, inheritable=True)
            log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.dup2(log, 1)  # it talks for the whole run: never to the container's output, nor to
            os.dup2(log, 2)  # a pipe whose reader may be gone (SIGPIPE)
            os.closerange(5, 65536)
            if os.getuid() == 0:
                # its --enable-sandbox unmounts the old root of a mount namespace it makes: as
                # root that namespace is a plain copy of ours, and the unmounts would propagate
                # to shared mounts of the host's (``ip netns``'s /run/netns bind mounts among
                # them). A namespace of our own whose mounts are slaves first: nothing goes back.
                # (Rootless, the kernel makes the copies slaves itself: another user namespace.)
                linux.unshare(linux.CLONE_NEWNS)
                linux.mount(None, "/", None, linux.MS_SLAVE | linux.MS_REC)
            os.execvp(SLIRP, [SLIRP, "--configure", "--mtu=65520", "--disable-host-loopback",
                              "--enable-sandbox", "--enable-seccomp",
                              "--exit-fd=3", "--ready-fd=4", f"--api-socket={API_SOCKET}",
                              str(supervisor), "tap0"])
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(2, f"cannot run {SLIRP}: {e}\n".encode())  # the log, once redirected
        os._exit(127)
    for fd in (exit_r, ready_w, go_r):
        os.close(fd)
    handle = (exit_w, pid)
    netns = -1
    try:
        netns = enter_new_netns(rootless, go_w)
        ready = os.read(ready_r, 1)
        if ready != b"1":
            os.close(exit_w)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            handle = (-1, 0)
            try:
                with open(os.path.join(cdir, LOG), errors="replace") as f:
                    why = f.read().strip().splitlines()
            except OSError:
                why = []
            raise ContainerError(f"network: {SLIRP} failed: {why[-1] if why else 'no reason given'}")
        proxy.close()
        cdir_fd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for p in published:
                reply = _api(cdir_fd, {"execute": "add_hostfwd", "arguments": {
                    "proto": p["proto"], "host_addr": p.get("host_ip") or "0.0.0.0",
                    "host_port": int(p["host_port"]), "guest_addr": ADDRESS, "guest_port": int(p["port"])}})
                if "return" not in reply:
                    desc = (reply.get("error") or {}).get("desc", "no reply")
                    raise ContainerError(f"-p {ports.format_port(p)}: {SLIRP}: {desc}")
        finally:
            os.close(cdir_fd)
    except BaseException as e:
        proxy.close()
        if netns >= 0:
            os.close(netns)
        if handle[1]:
            from pyreg.runtime.network import janitor

            janitor.finish(handle)
        if isinstance(e, ContainerError):
            raise
        raise ContainerError(f"network: {SLIRP}: {e}") from None
    finally:
        os.close(ready_r)
    if rec.net is not None:
        rec.net.update({"ip": ADDRESS, "gateway": GATEWAY, "ports": published, "slirp": pid})
    return netns, handle


def release(rec: Container, cdir: str) -> None:
    """What a ``kill -9`` can leave: the API socket file (slirp4netns itself has exited)."""
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(cdir, API_SOCKET))
