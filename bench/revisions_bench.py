#!/usr/bin/env python3
"""Two revisions of pyreg side by side in one run: did a change cost speed?

    python bench/revisions_bench.py --base 74b9104              # base commit vs the work tree
    python bench/revisions_bench.py --base main~3 --head HEAD   # two commits
    python bench/revisions_bench.py --base X --only runtime     # just the container start-up

Security checks added to the request path or the container start-up must not make them slower
(issues 9 and 10 allow 5% on `GET manifest`/`HEAD blob` req/s and 5 ms on the median of
``pyreg run --rm busybox true``). A number measured today against one written down last week says
little on a shared 2-CPU machine, so both revisions are exported into temporary trees and measured
in the same run, alternating round by round, so that load from elsewhere hits both alike. Printed:
per revision the median over rounds, the spread (min-max of the round values), and head/base.

Registry: one ``pyreg serve`` per revision (``--workers`` each, access log off), the five-layer test
image pushed with skopeo, then ``hey -c 16 -z Ns`` on GET manifest (by tag) and HEAD blob; only one
server is under load at a time. Runtime (root only): ``pyreg run --rm busybox true`` ``--runs``
times per round per revision, each revision with its own store and run root.

Needs git, skopeo, hey (``tests/run`` installs them); runtime needs root.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import images  # noqa: E402
from tests.fixtures.peers import Skopeo, free_port, stop_process, wait_for_http  # noqa: E402

Results = dict[str, dict[str, list[float]]]


def export_tree(rev: str | None, dest: Path) -> Path:
    """The tree of ``rev`` (None: the work tree as it is, uncommitted changes included)."""
    if rev is None:
        return REPO
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def env_for(tree: Path, work: Path, label: str) -> dict[str, str]:
    """Byte-compiled modules kept (out of the tree), as an installed pyreg has them: with
    PYTHONDONTWRITEBYTECODE every start would compile every module, and a change that adds
    modules would look slower than it is."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONPYCACHEPREFIX": str(work / f"pycache-{label}"),
           "PYREG_LOG_ACCESSLOG_DISABLED": "true"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def hey(url: str, seconds: int, method: str = "GET", accept: str | None = None) -> float:
    cmd = ["hey", "-z", f"{seconds}s", "-c", "16", "-m", method]
    if accept:
        cmd += ["-H", f"Accept: {accept}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "Requests/sec:" in line:
            return float(line.split()[-1])
    raise RuntimeError(f"hey printed no rate: {out[-500:]}")


class Serve:
    """One ``pyreg serve`` of one tree, with the five-layer image pushed."""

    def __init__(self, tree: Path, work: Path, label: str, workers: int, five: images.TestImage) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = work / f"serve-{label}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyreg", "serve", "--addr", f"127.0.0.1:{port}",
                 "--data-dir", str(work / f"data-{label}"), "--workers", str(workers)],
                cwd=tree, env=env_for(tree, work, label), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_http(f"{self.url}/v2/", self.proc, log=self.log)
        time.sleep(1.0)  # every worker up
        Skopeo(work / f"skopeo-{label}").copy(five.oci_ref, f"docker://127.0.0.1:{port}/bench/five:v1")
        self.blob = five.layer_digests[2]

    def measure(self, seconds: int) -> dict[str, float]:
        return {
            "GET manifest req/s": hey(f"{self.url}/v2/bench/five/manifests/v1", seconds,
                                      accept=images.OCI_MANIFEST),
            "HEAD blob req/s": hey(f"{self.url}/v2/bench/five/blobs/{self.blob}", seconds, method="HEAD"),
        }

    def stop(self) -> None:
        stop_process(self.proc)


def registry_rounds(trees: dict[str, Path], work: Path, args: argparse.Namespace,
                    record: Callable[[str, str, float], None]) -> None:
    five = images.build_five_layer_image(work / "img-five")
    servers: dict[str, Serve] = {}
    try:
        for label, tree in trees.items():
            servers[label] = Serve(tree, work, label, args.workers, five)
        for round_ in range(args.rounds):
            order = list(servers.items()) if round_ % 2 == 0 else list(reversed(servers.items()))
            for label, server in order:
                for metric, value in server.measure(args.seconds).items():
                    record(metric, label, value)
    finally:
        for server in servers.values():
            server.stop()


def runtime_rounds(trees: dict[str, Path], work: Path, args: argparse.Namespace,
                   record: Callable[[str, str, float], None]) -> None:
    from pyreg.storage.localstore import LocalStore
    from pyreg.storage.reference import parse

    img = images.build_busybox_image(work / "img-busybox")
    envs: dict[str, dict[str, str]] = {}
    for label, tree in trees.items():
        env = env_for(tree, work, label)
        env.update(PYREG_STORE=str(work / f"store-{label}"), PYREG_RUN_ROOT=str(work / f"run-{label}"),
                   PYREG_REGISTRY="registry.invalid:5000", PYREG_CONFIG=str(work / f"config-{label}.json"),
                   PYREG_CGROUP_PARENT=f"pyreg-revbench-{label}")
        # both revisions alike (their defaults differ); none unless asked: root's default, bridge,
        # would make pyreg0 and NAT rules in the host's namespace (network_bench.py uses its own)
        env["PYREG_NETWORK"] = args.network or "none"
        saved = dict(os.environ)
        os.environ.update(env)  # the default registry the reference "busybox" expands with
        try:
            store = LocalStore(work / f"store-{label}")
            for digest in [*img.blob_digests, img.manifest_digest]:
                store.put_blob_file(img.blob_path(digest), digest)
            store.tag(str(parse("busybox")), img.manifest_digest, images.OCI_MANIFEST, len(img.manifest))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        cmd = [sys.executable, "-m", "pyreg", "run", "--rm", "busybox", "true"]
        warm = subprocess.run(cmd, cwd=trees[label], env=env, capture_output=True, text=True)
        if warm.returncode != 0:
            raise RuntimeError(f"{label}: pyreg run failed: {warm.stderr[-800:]}")
        envs[label] = env
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for label in order:
            times, cpu = [], []
            for _ in range(args.runs):
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pyreg", "run", "--rm", "busybox", "true"],
                               cwd=trees[label], env=envs[label], capture_output=True, check=True)
                times.append((time.perf_counter() - t0) * 1000)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            record("pyreg run --rm busybox true, median ms", label, statistics.median(times))
            # CPU (user+sys of pyreg and what it reaped): steadier than wall time on a busy machine
            record("pyreg run --rm busybox true, median CPU ms", label, statistics.median(cpu))
    for label in trees:
        for root in ("memory", "cpu", "pids", "cpuacct", "unified", "."):
            shutil.rmtree(f"/sys/fs/cgroup/{root}/pyreg-revbench-{label}", ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against (git rev)")
    parser.add_argument("--head", help="the new revision (default: the work tree as it is)")
    parser.add_argument("--only", choices=["registry", "runtime"], help="one half only")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (default 4)")
    parser.add_argument("--seconds", type=int, default=5, help="each hey run (default 5)")
    parser.add_argument("--runs", type=int, default=15, help="container starts per round (default 15)")
    parser.add_argument("--network", help="PYREG_NETWORK for both revisions' containers (default none)")
    parser.add_argument("--workers", type=int, default=1, help="pyreg serve workers (default 1)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pyreg-revbench-"))
    results: Results = {}

    def record(metric: str, label: str, value: float) -> None:
        results.setdefault(metric, {}).setdefault(label, []).append(value)
        print(f"  {metric:42s} {label:5s} {value:10.1f}", flush=True)

    try:
        trees = {"base": export_tree(args.base, work / "tree-base"),
                 "head": export_tree(args.head, work / "tree-head")}
        if args.only in (None, "registry"):
            registry_rounds(trees, work, args, record)
        if args.only in (None, "runtime"):
            if os.geteuid() == 0:
                runtime_rounds(trees, work, args, record)
            else:
                print("runtime: skipped (needs root)", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    head_name = args.head or "work tree"
    print(f"\nbase {args.base} vs head {head_name}: median of {args.rounds} alternating rounds "
          f"(spread = min-max over rounds), load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| measurement | base | base spread | head | head spread | head/base |")
    print("|---|---:|---:|---:|---:|---:|")
    for metric, by_label in results.items():
        base, head = by_label["base"], by_label["head"]
        mb, mh = statistics.median(base), statistics.median(head)
        print(f"| {metric} | {mb:.1f} | {min(base):.1f}-{max(base):.1f} | {mh:.1f} | "
              f"{min(head):.1f}-{max(head):.1f} | {mh / mb:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
