"""``pyreg run -t``: the container's stdio is a pseudo-terminal; the supervisor relays it.

As runc does with its console socket: PID 1 opens ``/dev/ptmx`` of the container's own devpts
instance (so ``tty`` inside names a ``/dev/pts/N`` that exists there), makes the slave its
stdin/stdout/stderr and controlling terminal (Ctrl-C typed into it signals the container's
foreground process group, as with docker), and passes the master to the supervisor over a unix
socket. The supervisor copies our stdin to the master and the master to our stdout (or to the
container's log when detached), and keeps the window size. Only imported when ``-t`` is given.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import termios
import tty

TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431


def console_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, container end) of the socket the master fd travels over."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def setup_in_container(console_fd: int) -> None:
    """In PID 1 after pivot_root: a pty from the container's devpts becomes our stdio and
    controlling terminal; the master goes to the supervisor."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
    slave = os.open(f"/dev/pts/{number}", os.O_RDWR | os.O_CLOEXEC)
    for i in range(3):
        os.dup2(slave, i)
    os.close(slave)
    fcntl.ioctl(0, TIOCSCTTY, 0)
    with socket.socket(fileno=console_fd) as sock:
        socket.send_fds(sock, [b"m"], [master])
    os.close(master)


def receive_master(sock: socket.socket) -> int:
    _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise OSError(errno.EPROTO, "the container sent no terminal")
    os.set_inheritable(fds[0], False)
    return fds[0]


def copy_winsize(src: int, dst: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def relay(master: int, stdin: int | None, out: int) -> None:
    """Copy ``stdin`` to the pty and the pty to ``out`` until the container side is closed."""
    saved = None
    terminal = stdin if stdin is not None and os.isatty(stdin) else None
    if terminal is not None:
        saved = termios.tcgetattr(terminal)
        tty.setraw(terminal)
        copy_winsize(terminal, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(terminal, master))
    try:
        sources = [master] + ([stdin] if stdin is not None else [])
        while True:
            try:
                ready = select.select(sources, [], [])[0]
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno == errno.EIO:  # every slave fd is closed: the container is gone
                        return
                    raise
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
            if stdin is not None and stdin in ready:
                data = os.read(stdin, 65536)
                if not data:  # end of our input: an end-of-file character for the terminal
                    sources.remove(stdin)
                    stdin = None
                    os.write(master, b"\x04")
                    continue
                os.write(master, data)
    finally:
        if saved is not None and terminal is not None:
            termios.tcsetattr(terminal, termios.TCSADRAIN, saved)
