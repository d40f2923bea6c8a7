"""``pyreg top``: the processes of a running container, in ``ps -ef`` columns as docker shows
them (UID PID PPID C STIME TTY TIME CMD; host pids, as docker's)."""

from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("container", help="container name or id")


def _row(pid: int, clk: int, boot: float, users: dict[int, str]) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().rstrip(b"\0").split(b"\0")
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
    f = stat[stat.rindex(b")") + 2:].split()
    ppid, tty_nr, utime, stime, start = int(f[1]), int(f[4]), int(f[11]), int(f[12]), int(f[19])
    cpu_secs = (utime + stime) // clk
    started = boot + start / clk
    elapsed = max(1.0, time.time() - started)
    c = int((utime + stime) / clk * 100 / elapsed)
    stime_text = time.strftime("%H:%M" if time.time() - started < 86400 else "%b%d", time.localtime(started))
    tty = "?" if tty_nr == 0 else f"pts/{os.minor(tty_nr)}"
    cmd = " ".join(a.decode(errors="replace") for a in argv if a) or f"[{comm}]"
    t = f"{cpu_secs // 3600:02d}:{cpu_secs // 60 % 60:02d}:{cpu_secs % 60:02d}"
    return [users.get(uid, str(uid)), str(pid), str(ppid), str(c), stime_text, tty, t, cmd]


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import state, usage
    from pyreg.runtime.commands._common import find

    rec = find(args.container)
    if rec is None:
        return 1
    if rec.status != "running" or not state.is_alive(rec):
        print(f"pyreg: container {rec.name} is not running", file=sys.stderr)
        return 1
    users: dict[int, str] = {}
    try:
        import pwd

        users = {u.pw_uid: u.pw_name for u in pwd.getpwall()}
    except (ImportError, OSError):
        pass
    clk = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
    rows = [["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]]
    rows += [r for pid in usage.processes(rec) if (r := _row(pid, clk, boot, users)) is not None]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("".join(c.ljust(w + 3) for c, w in zip(r, widths, strict=False)) + r[-1])
    return 0
