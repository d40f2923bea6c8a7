"""Helpers shared by the container commands: find a container, act on each named one, wait for
its end."""

from __future__ import annotations

import os
import sys
import time

from pyreg.runtime import state

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable

    from pyreg.runtime.record import Container


def find(ref: str) -> Container | None:
    rec = state.lookup(ref)
    if rec is None:
        print(f"pyreg: no such container: {ref}", file=sys.stderr)
    return rec


def each(refs: list[str], act: Callable[[str, Container], bool]) -> int:
    """``act(ref, record)`` on every named container; exit status 1 if one is unknown or an act
    returned False (the others are still done)."""
    rc = 0
    for ref in refs:
        rec = find(ref)
        if rec is None or not act(ref, rec):
            rc = 1
    return rc


def kill_and_wait(rec: Container) -> None:
    """SIGKILL the container's PID 1 and wait until its supervisor recorded the end."""
    import signal

    from pyreg.runtime.commands.kill import send

    send(rec, signal.SIGKILL)
    wait_exit(rec, None)


def wait_exit(rec: Container, timeout: float | None) -> bool:
    """Wait until the container's PID 1 is gone and its supervisor recorded it; True if it ended."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pid = rec.pid
    if pid and state.is_alive(rec):
        try:
            pidfd = os.pidfd_open(int(pid))
        except OSError:
            pidfd = -1
        if pidfd >= 0:
            import select

            try:
                if state.proc_start_time(int(pid)) == rec.pid_start:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if not select.select([pidfd], [], [], left)[0]:
                        return False
            finally:
                os.close(pidfd)
    # PID 1 has exited (a zombie until the supervisor reaps it): wait for the record to say so
    while True:
        cur = state.load(rec.id)
        if cur is None or cur.status != "running":
            return True
        if deadline is not None and time.monotonic() > deadline + 5:
            return False
        time.sleep(0.01)
