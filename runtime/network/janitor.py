"""A small process that undoes a container's network when its supervisor ends, however it ends.

Why a process of its own: the supervisor has unshared a pid namespace whose PID 1 is the
container, so once the container is gone it can fork nothing (the kernel answers ENOMEM) and
cannot run ``iptables``; and after ``kill -9`` it runs nothing at all. The janitor is forked
before that, in the host's pid namespace, and waits on a pipe only the supervisor holds: EOF
(a normal end or SIGKILL) means release the veth, and the bridge and NAT if it was the last.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runtime.record import Container


def spawn(rec: Container) -> tuple[int, int]:
    """(pipe write end, janitor pid): close the one and reap the other to release now."""
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
            os.closerange(3, r)
            os.closerange(r + 1, 65536)
            os.read(r, 1)  # returns at EOF: the supervisor closed it, or died
            from runtime.container import release_network

            release_network(rec)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(r)
    return w, pid


def finish(handle: tuple[int, int]) -> None:
    """Let the janitor release the network, and wait until it has."""
    w, pid = handle
    os.close(w)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
