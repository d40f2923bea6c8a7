"""A small process that runs a container's port proxy (``-p`` on a bridge) and ends it, and what
the container leaves on its network, when its supervisor ends, however it ends.

Why a process of its own: the supervisor has unshared a pid namespace whose PID 1 is the
container, so it cannot start a thread (``clone(CLONE_THREAD)`` across pid namespaces) for the
proxy, and after ``kill -9`` it runs nothing at all. The janitor is forked before that, in the
host's pid namespace, and waits on a pipe only the supervisor holds: EOF (a normal end or
SIGKILL) means close the published ports and take the container's name out of its network's
/etc/hosts files. Without ``-p`` there is no janitor: the veth dies with the container's
namespace and the bridge stays up (runtime/network/bridge.py), so nothing needs a fork."""

from __future__ import annotations

import contextlib
import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.network.ports import Proxy
    from pyreg.runtime.record import Container


def spawn(rec: Container, proxy: Proxy) -> tuple[int, int]:
    """(pipe write end, janitor pid): close the one and reap the other to release now. The DNAT
    rules of ports on other addresses than loopback (runtime/network/dnat.py) are made here,
    before the fork, so that a failure is the supervisor's to report."""
    from pyreg.runtime.errors import ContainerError
    from pyreg.runtime.network import dnat

    if rec.net and dnat.rules(rec, proxy.published):
        rec.net["dnat"] = True  # first: a half-made set is removed by release as well
        try:
            dnat.add(rec, proxy.published)
        except (OSError, RuntimeError) as e:
            proxy.close()
            raise ContainerError(f"-p: {e}") from None
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN)
            devnull = os.open("/dev/null", os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            keep = sorted({r, *(s.fileno() for s, _ in proxy.socks)})
            low = 3
            for fd in keep:
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 65536)
            if rec.net:
                proxy.start(rec.net["ip"])
            os.read(r, 1)  # returns at EOF: the supervisor closed it, or died
            from pyreg.runtime.container import release_network

            release_network(rec)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(r)
    proxy.close()  # the janitor's now
    return w, pid


def finish(handle: tuple[int, int]) -> None:
    """Let the janitor release the network, and wait until it has."""
    w, pid = handle
    os.close(w)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
