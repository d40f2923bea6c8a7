#!/usr/bin/env python3
"""Monolithic blob push (curl POST + ``PUT ?digest=``) with the page allocator warm or cold:
pyreg next to Distribution, server CPU seconds and MB/s per round, then the first pull.

    python bench/push_cold_bench.py                         # cold and warm, 256 MiB, 3 rounds
    python bench/push_cold_bench.py --base main --rounds 5  # also that revision of pyreg
    python bench/push_cold_bench.py --condition cold --hold-order 3   # "deep cold": see below

Why: on this project's VM (Firecracker, Linux 6.18, virtio_balloon with free page reporting) the
guest hands free blocks of order >= 9 (2 MiB) back to the host, and the first touch of each of
their 4 KiB pages costs a host fault. Smaller free blocks are never reported. A page-cache folio
of order k (Linux sizes it by the length of the write call) can only come from a free block of
order >= k, so whether a push pays those faults depends on what small free blocks the machine
has left: usually plenty, after some big writes none of the orders the writer asks for.

"cold" makes that state on purpose before every push: a holder file of ours (in the work dir) is
grown with writes of 2^hold-order pages until the free movable blocks of orders hold-order..8
(from /proc/pagetypeinfo) are nearly gone; its page cache stays (reclaimable, so it takes memory
from nobody) until the round's cold pushes are done, then the file is removed. Each round pushes
warm first (the machine as it is, no holder), then cold. ``--hold-order 6`` (the default)
leaves the orders a 32 KiB writer (Distribution; pyreg since 2026-12-05) asks for and takes the
ones a 256 KiB writer asks for; ``--hold-order 3`` takes both, a state no writer through the page
cache escapes. Rounds alternate the servers' order. Needs root (pagetypeinfo), curl and
docker-registry.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchservers import (  # noqa: E402
    MiB,
    Target,
    curl_headers,
    push_monolithic,
    random_blob,
    start_distribution,
    start_pyreg_tree,
)
from registry_bench import cpu_seconds  # noqa: E402

REPORTING = "/sys/module/page_reporting/parameters/reported_kib"


def free_blocks_mib() -> list[int]:
    """Free movable memory of the Normal zone per block order 0..10, in MiB."""
    with open("/proc/pagetypeinfo") as f:
        for line in f:
            if "Normal" in line and "Movable" in line and "type" in line:
                counts = [int(x) for x in line.split()[-11:]]
                return [(n << order) * 4 // 1024 for order, n in enumerate(counts)]
    raise RuntimeError("no Normal zone in /proc/pagetypeinfo")


def reported_mib() -> int:
    try:
        with open(REPORTING) as f:
            return int(f.read()) >> 10
    except OSError:
        return -1


def hold(path: Path, order: int, limit_mib: int) -> int:
    """Grow the holder file until free blocks of orders ``order``..8 are under 48 MiB; MiB added."""
    piece = 4096 << order
    data = memoryview(os.urandom(MiB))
    added = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    try:
        while sum(free_blocks_mib()[order:9]) > 48 and path.stat().st_size < limit_mib * MiB:
            for _ in range(16):
                for off in range(0, MiB, piece):
                    os.write(fd, data[off:off + piece])
            added += 16
    finally:
        os.close(fd)
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--condition", choices=["cold", "warm", "both"], default="both")
    parser.add_argument("--hold-order", type=int, default=6, help="cold: take free blocks of this order..8")
    parser.add_argument("--hold-limit-mib", type=int, default=8192, help="largest holder file")
    parser.add_argument("--base", help="also this git revision of pyreg")
    args = parser.parse_args()
    conditions = ["warm", "cold"] if args.condition == "both" else [args.condition]

    work = Path(tempfile.mkdtemp(prefix="push-cold-"))
    holder = work / "holder.bin"
    servers: list[Target] = []
    holder_mib = 0
    rows: dict[tuple[str, str, str], list[float]] = {}

    def record(condition: str, metric: str, server: Target, value: float) -> None:
        rows.setdefault((condition, metric, server.name), []).append(value)

    try:
        servers.append(start_distribution(work))
        if args.base:
            base = work / "base-tree"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.base], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            servers.append(start_pyreg_tree(work, base, "pyreg-base", args.workers))
        servers.append(start_pyreg_tree(work, REPO, "pyreg", args.workers))
        for round_ in range(args.rounds):
            order = servers if round_ % 2 == 0 else servers[::-1]
            for condition in conditions:
                for server in order:
                    blob = work / "blob.bin"
                    digest = random_blob(blob, args.size_mib * MiB)
                    added = hold(holder, args.hold_order, args.hold_limit_mib) if condition == "cold" else 0
                    free = free_blocks_mib()
                    rep0 = reported_mib()
                    repo = f"bench/{condition}-{round_}"
                    t0, cpu0 = time.perf_counter(), cpu_seconds(server.pid)
                    push_monolithic(server.url, repo, blob, digest)
                    wall, cpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
                    record(condition, "push MB/s", server, args.size_mib * MiB / 1e6 / wall)
                    record(condition, "push, server CPU s", server, cpu)
                    t0, cpu0 = time.perf_counter(), cpu_seconds(server.pid)
                    curl_headers(f"{server.url}/v2/{repo}/blobs/{digest}")
                    pwall, pcpu = time.perf_counter() - t0, cpu_seconds(server.pid) - cpu0
                    record(condition, "first pull MB/s", server, args.size_mib * MiB / 1e6 / pwall)
                    record(condition, "first pull, server CPU s", server, pcpu)
                    print(f"round {round_ + 1} {condition:4s} {server.name:12s} push {cpu:5.2f} s CPU "
                          f"{args.size_mib * MiB / 1e6 / wall:6.0f} MB/s | pull {pcpu:5.2f} s CPU "
                          f"{args.size_mib * MiB / 1e6 / pwall:6.0f} MB/s | free MiB by order 0-2 "
                          f"{sum(free[:3])}, 3-5 {sum(free[3:6])}, 6-8 {sum(free[6:9])}, 9-10 "
                          f"{sum(free[9:])}; holder +{added} MiB; reported during push "
                          f"{reported_mib() - rep0} MiB", flush=True)
            if holder.exists():  # let the memory go: the next round's warm pushes run without it
                holder_mib = max(holder_mib, holder.stat().st_size // MiB)
                holder.unlink()
    finally:
        for server in servers:
            server.stop()
        holder_mib = max(holder_mib, holder.stat().st_size // MiB if holder.exists() else 0)
        subprocess.run(["rm", "-rf", str(work)], check=False)
        print(f"(holder file at its largest: {holder_mib} MiB; removed with {work})")

    print()
    names = [s.name for s in servers]
    print(f"{args.size_mib} MiB new blob, curl POST + PUT ?digest=, pyreg --workers {args.workers}, "
          f"median of {args.rounds} rounds (every round in brackets), hold order {args.hold_order}")
    print("| condition | measurement | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for (condition, metric) in dict.fromkeys((c, m) for c, m, _ in rows):
        cells = []
        for name in names:
            values = rows.get((condition, metric, name), [])
            each = " ".join(f"{v:.2f}" if "CPU" in metric else f"{v:.0f}" for v in values)
            med = statistics.median(values) if values else float("nan")
            cells.append(f"{med:.2f} ({each})" if "CPU" in metric else f"{med:.0f} ({each})")
        print(f"| {condition} | {metric} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
