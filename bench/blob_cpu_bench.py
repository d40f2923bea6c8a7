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
import hashlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from registry_bench import cpu_seconds, export_tree, process_tree, status_kib  # noqa: E402

from tests.fixtures.peers import free_port, stop_process, wait_for_http  # noqa: E402

MiB = 1 << 20


def start(tree: Path, work: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree), PYREG_LOG_ACCESSLOG_DISABLED="true",
               PYTHONPYCACHEPREFIX=str(work / f"pycache-{name}"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "pyreg", "serve", "--addr", f"127.0.0.1:{port}",
                             "--data-dir", str(work / f"{name}-data"), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=work / f"{name}.log")
    return proc, url


def push(url: str, repo: str, blob: Path, digest: str) -> None:
    post = subprocess.run(["curl", "-sS", "-f", "-X", "POST", "-D", "-", "-o", "/dev/null",
                           f"{url}/v2/{repo}/blobs/uploads/"],
                          capture_output=True, text=True, check=True).stdout
    found = re.search(r"(?im)^location:\s*(\S+)", post)
    assert found, post
    loc = found.group(1)
    loc = (url + loc if loc.startswith("/") else loc) + ("&" if "?" in loc else "?") + f"digest={digest}"
    subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream",
                    "-T", str(blob), "-o", "/dev/null", loc], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare the work tree with")
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyreg-blobcpu-"))
    blob = work / "blob.bin"
    hasher = hashlib.sha256()
    with open(blob, "wb") as f:
        for _ in range(args.size_mib):
            chunk = os.urandom(MiB)
            f.write(chunk)
            hasher.update(chunk)
    digest = "sha256:" + hasher.hexdigest()
    mb = args.size_mib * MiB / 1e6
    servers = {"base": start(export_tree(args.base, work / "base-tree"), work, "base"),
               "head": start(REPO, work, "head")}
    results: dict[tuple[str, str], list[float]] = {}

    def record(name: str, metric: str, value: float) -> None:
        results.setdefault((name, metric), []).append(value)

    try:
        time.sleep(1.0)
        for round_ in range(args.rounds):
            for name, (proc, url) in servers.items():
                kind = "push (new blob)" if round_ == 0 else "push (digest stored)"
                t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
                push(url, f"bench/r{round_}", blob, digest)
                record(name, f"{kind} MB/s", mb / (time.perf_counter() - t0))
                record(name, f"{kind}, server CPU s", cpu_seconds(proc.pid) - c0)
                for pull in ("first", "second"):
                    time.sleep(0.2)
                    t0, c0 = time.perf_counter(), cpu_seconds(proc.pid)
                    where = f"{url}/v2/bench/r{round_}/blobs/{digest}"
                    subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", where], check=True)
                    record(name, f"pull ({pull} after the push) MB/s", mb / (time.perf_counter() - t0))
                    record(name, f"pull ({pull} after the push), server CPU s", cpu_seconds(proc.pid) - c0)
                record(name, "max VmHWM of the worker (MiB)",
                       max(status_kib(p, "VmHWM") for p in process_tree(proc.pid)) / 1024)
    finally:
        for proc, _ in servers.values():
            stop_process(proc)
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
