#!/usr/bin/env python3
"""Blob push and pull, two revisions of pyreg side by side: MB/s, server CPU seconds, worker RSS.

    python bench/blob_cpu_bench.py --base d7c2b9a                    # 512 MiB, 3 rounds
    python bench/blob_cpu_bench.py --base main --size-mib 256 --rounds 5

One ``pyreg serve`` worker per revision (the work tree, and ``--base`` exported with git archive),
each on its own data directory; rounds alternate the revisions. Per round and revision: a
monolithic ``curl -T`` push of one random blob to a new repository (round 1: a new blob; later
rounds: the digest is already stored, as when an image is pushed to a second name), then two
``curl`` pulls of it. Server CPU seconds (from /proc) move far less with the machine's load than
MB/s do, so both are printed, with every round's values (the noise) beside the medians.
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
sys.path.insert(0, str(REPO / "bench"))

from benchservers import MiB, push_monolithic, random_blob, start_pyreg_tree  # noqa: E402
from registry_bench import cpu_seconds, export_tree, process_tree, status_kib  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare the work tree with")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyreg-blobcpu-"))
    blob = work / "blob.bin"
    digest = random_blob(blob, args.size_mib * MiB)
    mb = args.size_mib * MiB / 1e6
    servers = {"base": start_pyreg_tree(work, export_tree(args.base, work / "base-tree"), "base"),
               "head": start_pyreg_tree(work, REPO, "head")}
    results: dict[tuple[str, str], list[float]] = {}

    def record(name: str, metric: str, value: float) -> None:
        results.setdefault((name, metric), []).append(value)

    try:
        time.sleep(1.0)
        for round_ in range(args.rounds):
            for name, server in servers.items():
                kind = "push (new blob)" if round_ == 0 else "push (digest stored)"
                t0, c0 = time.perf_counter(), cpu_seconds(server.pid)
                push_monolithic(server.url, f"bench/r{round_}", blob, digest)
                record(name, f"{kind} MB/s", mb / (time.perf_counter() - t0))
                record(name, f"{kind}, server CPU s", cpu_seconds(server.pid) - c0)
                for pull in ("first", "second"):
                    time.sleep(0.2)
                    t0, c0 = time.perf_counter(), cpu_seconds(server.pid)
                    where = f"{server.url}/v2/bench/r{round_}/blobs/{digest}"
                    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", where], check=True)
                    record(name, f"pull ({pull} after the push) MB/s", mb / (time.perf_counter() - t0))
                    record(name, f"pull ({pull} after the push), server CPU s", cpu_seconds(server.pid) - c0)
                record(name, "max VmHWM of the worker (MiB)",
                       max(status_kib(p, "VmHWM")[0] for p in process_tree(server.pid)) / 1024)
    finally:
        for server in servers.values():
            server.stop()
    print(f"{args.size_mib} MiB blob, {args.rounds} rounds, one worker each, {os.cpu_count()} CPUs; "
          f"medians (every round's values)")
    print(f"| measurement | base {args.base} | this tree | tree/base |")
    print("|---|---:|---:|---:|")
    for metric in dict.fromkeys(m for _, m in results):
        base, head = results.get(("base", metric), []), results.get(("head", metric), [])
        b, h = statistics.median(base), statistics.median(head)
        print(f"| {metric} | {b:.2f} ({' '.join(f'{v:.2f}' for v in base)}) | "
              f"{h:.2f} ({' '.join(f'{v:.2f}' for v in head)}) | {h / b if b else float('nan'):.2f} |")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
