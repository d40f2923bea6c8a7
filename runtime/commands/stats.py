"""``pyreg stats``: CPU %, memory usage / limit, network and block I/O and pids of running
containers, from their cgroups (v1 or v2; runtime/usage.py). Refreshes every second until
interrupted; ``--no-stream`` prints one sample (two readings one second apart, as docker's)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

HEADERS = {"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
           "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O",
           "PIDs": "PIDS"}
DEFAULT = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}"
           "\t{{.PIDs}}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate ids")
    p.add_argument("--format", help="Go template per container ({{.Name}} {{.CPUPerc}} {{.MemUsage}} "
                   "{{.PIDs}} …, 'table …' for a header)")
    p.add_argument("containers", nargs="*", metavar="container", help="containers (default: all running)")


def _sample(recs: list[Any]) -> dict[str, tuple[float, int]]:
    from pyreg.runtime import usage
    from pyreg.runtime.cgroups import Cgroup

    out = {}
    for r in recs:
        cg = Cgroup.from_dict(r.cgroup)
        out[r.id] = (time.monotonic(), usage.cpu_ns(cg) if cg else 0)
    return out


def _rows(recs: list[Any], first: dict[str, tuple[float, int]], no_trunc: bool) -> list[dict[str, str]]:
    from pyreg.runtime import usage
    from pyreg.runtime.cgroups import Cgroup

    rows = []
    for r in recs:
        cg = Cgroup.from_dict(r.cgroup) if r.status == "running" else None
        cpu = mem_pct = 0.0
        mem = limit = npids = 0
        rx = tx = br = bw = 0
        if cg is not None:
            t0, c0 = first.get(r.id, (time.monotonic(), 0))
            wall = max(1e-9, time.monotonic() - t0)
            cpu = (usage.cpu_ns(cg) - c0) / 1e9 / wall * 100
            mem, limit = usage.memory(cg)
            mem_pct = mem / limit * 100 if limit else 0.0
            npids = usage.pids(cg)
            rx, tx = usage.net_io(int(r.pid or 0))
            br, bw = usage.block_io(cg)
        rows.append({
            "ID": r.id if no_trunc else r.id[:12], "Container": r.name, "Name": r.name,
            "CPUPerc": f"{max(0.0, cpu):.2f}%", "MemUsage": f"{usage.human(mem)} / {usage.human(limit)}",
            "MemPerc": f"{mem_pct:.2f}%", "NetIO": f"{usage.human(rx, False)} / {usage.human(tx, False)}",
            "BlockIO": f"{usage.human(br, False)} / {usage.human(bw, False)}", "PIDs": str(npids),
        })
    return rows


def run(args: argparse.Namespace) -> int:
    from pyreg.runtime import state
    from pyreg.runtime.commands._common import find
    from pyreg.storage.gotemplate import TemplateError, render_all

    if args.containers:
        found = [find(ref) for ref in args.containers]
        if any(r is None for r in found):
            return 1
        recs = [r for r in found if r is not None]
    else:
        recs = [r for r in state.all_containers()
                if (args.all or r.status == "running") and not state.is_build(r)]
    try:
        render_all(args.format or DEFAULT, [], HEADERS)
    except TemplateError as e:
        print(f"pyreg: --format: {e}", file=sys.stderr)
        return 1
    while True:
        first = _sample(recs)
        time.sleep(1.0)
        lines = render_all(args.format or DEFAULT, _rows(recs, first, args.no_trunc), HEADERS)
        if not args.no_stream:
            sys.stdout.write("\033[2J\033[H")
        print("\n".join(lines), flush=True)
        if args.no_stream:
            return 0
        recs = [state.refresh(state.load(r.id) or r) for r in recs]
