#!/usr/bin/env python3
"""pyreg next to CNCF Distribution (Debian's docker-registry 2.8), same images, same loopback.

    python bench/registry_bench.py                 # the full run (512 MiB layer, 10 s per hey run)
    python bench/registry_bench.py --quick         # 64 MiB and 3 s: checks the script works
    python bench/registry_bench.py --workers 4 --json bench/results/run.json
    python bench/registry_bench.py --base main     # also that revision of pyreg, in the same rounds
    python bench/registry_bench.py --pull-repeats 3  # curl rows: the median of 3 blobs per round

Both servers run at the same time on free loopback ports with their own data directories, and
every measurement runs against one server at a time, Distribution first, then pyreg, so they never
compete for the CPU. Reported per measurement: Distribution, pyreg, and the pyreg/Distribution
ratio (higher is better for throughput and req/s; for RSS and server CPU seconds lower is better).

Measured: push and pull of one random layer with skopeo (an OCI layout to and from the registry)
and with plain curl (monolithic POST + PUT, then GET twice: the wall time of the curl process,
and curl's own ``-w`` timings beside it; a new blob per round, or ``--pull-repeats N`` of them
with the round's median, each pushed and pulled on one server after the other); GET manifest
(by tag) and HEAD blob requests per second with ``hey -c 16``; 8 parallel skopeo pulls of the
five-layer test image; and peak server RSS (the sum over pyreg's processes, sampled every 20 ms
from /proc while that server is measured, plus the sum of each process's own VmHWM).

pyreg runs from the checkout this script lives in (``python -m pyreg`` with ``PYTHONPATH`` set to
it), whatever ``pyreg`` is installed. ``--base REV`` adds a third server, that git revision of
pyreg (exported with ``git archive``), measured in the same alternating rounds, and a
pyreg/base column: a change's before and after from one run.

Needs skopeo, curl, hey and docker-registry (``tests/run`` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import images  # noqa: E402
from tests.fixtures.peers import (  # noqa: E402
    DistributionRegistry,
    Skopeo,
    free_port,
    stop_process,
    wait_for_http,
)

MiB = 1024 * 1024
OCI_MANIFEST = images.OCI_MANIFEST


# --------------------------------------------------------------------------- servers and RSS


def process_tree(root_pid: int) -> list[int]:
    """root_pid and all its descendants (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process tree so far: what a request costs the server, which
    other load on the machine (the client, other work) does not change the way it changes MB/s."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root_pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def status_kib(pid: int, *keys: str) -> list[int]:
    """The ``keys`` (VmRSS, VmHWM, …) of /proc/PID/status in kiB, in one read; 0 for a gone pid."""
    found = dict.fromkeys(keys, 0)
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in found:
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return [found[k] for k in keys]


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree; remembers the peak and each pid's VmHWM.

    It samples only while ``active`` is set (the caller sets it while its server is measured:
    an idle server's RSS does not grow, and the kernel keeps each VmHWM meanwhile), and it
    lists the tree from /proc once a second, not at every sample: three samplers that scanned
    /proc every 20 ms took a quarter of one of the two CPUs, during transfers that need both.
    """

    def __init__(self, root_pid: int, interval: float = 0.02, rescan: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.rescan = rescan
        self.peak_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.processes = 0
        self.active = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        pids: list[int] = []
        listed = float("-inf")
        while not self._halt.is_set():
            if not self.active.wait(0.2):
                continue
            now = time.monotonic()
            if now - listed >= self.rescan:
                pids, listed = process_tree(self.root_pid), now
            total = 0
            for pid in pids:
                rss, hwm = status_kib(pid, "VmRSS", "VmHWM")
                total += rss
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
            self.processes = max(self.processes, len(pids))
            self.peak_kib = max(self.peak_kib, total)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        for pid in process_tree(self.root_pid):  # the last word on each high-water mark
            self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), status_kib(pid, "VmHWM")[0])

    @property
    def max_worker_hwm_mib(self) -> float:
        return max(self.hwm_kib.values(), default=0) / 1024


@dataclass
class Server:
    name: str
    url: str
    host: str
    pid: int
    stop: Callable[[], None]
    sampler: RssSampler = field(init=False)

    def __post_init__(self) -> None:
        self.sampler = RssSampler(self.pid)
        self.sampler.start()


def start_distribution(work: Path) -> Server:
    reg = DistributionRegistry(work / "distribution-root", work / "distribution", cache=True)
    reg.start()
    assert reg.proc is not None
    return Server("distribution", reg.url, reg.host, reg.proc.pid, reg.stop)


def export_tree(rev: str, dest: Path) -> Path:
    """The tree of git revision ``rev`` of this checkout, extracted under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_pyreg(work: Path, workers: int, extra: list[str], tree: Path = REPO, name: str = "pyreg") -> Server:
    port = free_port()
    data = work / f"{name}-data"
    logfile = work / f"{name}.log"
    log = open(logfile, "ab")  # noqa: SIM115 - lives as long as the server
    cmd = [sys.executable, "-m", "pyreg", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data),
           "--workers", str(workers), *extra]
    env = dict(os.environ, PYREG_LOG_ACCESSLOG_DISABLED="true", PYREG_STORAGE_DELETE_ENABLED="true",
               PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(work / f"pycache-{name}"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed pyreg is
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                            cwd=str(work))
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=logfile)
    time.sleep(1.0)  # let every worker come up

    def stop() -> None:
        stop_process(proc)
        log.close()

    return Server(name, url, f"127.0.0.1:{port}", proc.pid, stop)


# --------------------------------------------------------------------------- measurements


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def curl_push(server: Server, repo: str, path: Path, digest: str) -> None:
    post = run(["curl", "-sS", "-f", "-X", "POST", "-D", "-", "-o", "/dev/null",
                f"{server.url}/v2/{repo}/blobs/uploads/"]).stdout
    location = re.search(r"(?im)^location:\s*(\S+)", post)
    assert location, post
    loc = location.group(1)
    if loc.startswith("/"):
        loc = server.url + loc
    loc += ("&" if "?" in loc else "?") + f"digest={digest}"
    # -T streams the file from disk (--data-binary @file would read it all into memory first).
    run(["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "-T", str(path),
         "-o", "/dev/null", loc])


@dataclass
class Pull:
    """One curl GET: the wall time of the curl process (exec, connect, request, body, exit) and
    curl's own timings (``-w``), which start at its connect and so leave out the fixed cost of
    starting a process, a few ms that compress ratios of a transfer that takes ~0.1 s."""

    wall: float  # seconds, the curl process
    total: float  # curl's time_total: connect to the last byte
    first_byte: float  # curl's time_starttransfer: connect to the first byte of the answer
    speed: float  # curl's speed_download: bytes / time_total


CURL_TIMES = "%{time_total} %{time_starttransfer} %{speed_download}"


def curl_pull(server: Server, repo: str, digest: str) -> Pull:
    t0 = time.perf_counter()
    out = run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", CURL_TIMES,
               f"{server.url}/v2/{repo}/blobs/{digest}"]).stdout
    wall = time.perf_counter() - t0
    total, first, speed = (float(x) for x in out.split())
    return Pull(wall, total, first, speed)


def record_pull(record: Callable[[str, Server, float], None], server: Server, name: str, size: int,
                pulls: list[Pull], cpu: list[float]) -> None:
    """The rows of one kind of pull, each the median of this round's ``pulls``: the wall-time row
    (as before), the server's CPU, and curl's own figures beside them."""
    mb = size / 1e6
    record(f"{name} MB/s", server, statistics.median(mb / p.wall for p in pulls))
    record(f"{name}, server CPU s", server, statistics.median(cpu))
    record(f"{name}, curl's MB/s", server, statistics.median(p.speed / 1e6 for p in pulls))
    record(f"{name}, body MB/s", server,  # first byte to last: the transfer itself
           statistics.median(mb / max(p.total - p.first_byte, 1e-6) for p in pulls))
    record(f"{name}, first byte ms", server, statistics.median(p.first_byte * 1e3 for p in pulls))


def hey(url: str, seconds: int, method: str = "GET", accept: str | None = None) -> float:
    cmd = ["hey", "-z", f"{seconds}s", "-c", "16", "-m", method]
    if accept:
        cmd += ["-H", f"Accept: {accept}"]
    out = run([*cmd, url]).stdout
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    bad = [c for c in codes if c[0] != "200"]
    if bad:
        raise RuntimeError(f"hey {method} {url}: non-200 replies {bad}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def random_blob(path: Path, size: int, seed: int) -> tuple[Path, str]:
    """Write ``size`` random bytes (from ``seed``) to ``path``; the path and their digest."""
    hasher = hashlib.sha256()
    with open(path, "wb") as f:
        reader = images._RandomReader(size, seed=seed)
        while chunk := reader.read(4 * MiB):
            f.write(chunk)
            hasher.update(chunk)
    return path, "sha256:" + hasher.hexdigest()


def measure_skopeo(server: Server, skopeo: Skopeo, big: images.TestImage, work: Path,
                   record: Callable[[str, Server, float], None], round_: int) -> None:
    """skopeo push and pull of the big image; new repositories each round, so nothing is skipped
    as already there (skopeo gets a fresh home, hence no blob-info cache, from the caller)."""
    size_mb = big.layers[-1].size / 1e6
    pushed = f"docker://{server.host}/bench/big-{round_}:1"
    t0 = time.perf_counter()
    skopeo.copy(big.oci_ref, pushed)
    record("skopeo push MB/s", server, size_mb / (time.perf_counter() - t0))
    out = work / f"pull-{server.name}"
    t0 = time.perf_counter()
    skopeo.copy(pushed, f"oci:{out}:1")
    record("skopeo pull MB/s", server, size_mb / (time.perf_counter() - t0))
    shutil.rmtree(out)


def measure_curl(servers: list[Server], curl_blobs: list[tuple[Path, str]],
                 record: Callable[[str, Server, float], None], round_: int) -> None:
    """Each of ``curl_blobs`` (new digests) pushed with curl to one server and pulled twice, then
    the same on the next server (who goes first rotates): the servers' pulls of one blob lie
    seconds apart, so a burst of load from elsewhere hits them alike. The curl rows of the round
    are medians over the blobs (``--pull-repeats``)."""
    size = curl_blobs[0][0].stat().st_size
    push_mb: dict[str, list[float]] = {s.name: [] for s in servers}
    push_cpu: dict[str, list[float]] = {s.name: [] for s in servers}
    pulls: dict[str, dict[str, tuple[list[Pull], list[float]]]] = {
        s.name: {"curl pull": ([], []), "curl pull again": ([], [])} for s in servers}
    for i, (curl_blob, curl_digest) in enumerate(curl_blobs):
        repo = f"bench/curl-{round_}" + (f"-{i}" if i else "")
        turn = (round_ + i) % len(servers)  # each server in each place in turn: no place is favoured
        for server in servers[turn:] + servers[:turn]:
            server.sampler.active.set()
            try:
                t0, cpu0 = time.perf_counter(), cpu_seconds(server.pid)
                curl_push(server, repo, curl_blob, curl_digest)
                push_mb[server.name].append(size / 1e6 / (time.perf_counter() - t0))
                push_cpu[server.name].append(cpu_seconds(server.pid) - cpu0)
                for name, (done, cpu) in pulls[server.name].items():
                    # "again": a registry serves each layer many times, so the same blob once more
                    # (pyreg hashes a blob until it has verified it at a settled version, then
                    # trusts it: registry/layout.py VerifiedBlobs).
                    if name == "curl pull again":
                        time.sleep(0.1)
                    cpu0 = cpu_seconds(server.pid)
                    done.append(curl_pull(server, repo, curl_digest))
                    cpu.append(cpu_seconds(server.pid) - cpu0)
            finally:
                server.sampler.active.clear()
    for server in servers:
        record("curl push MB/s", server, statistics.median(push_mb[server.name]))
        record("curl push, server CPU s", server, statistics.median(push_cpu[server.name]))
        for name, (done, cpu) in pulls[server.name].items():
            record_pull(record, server, name, size, done, cpu)


def measure_requests(server: Server, skopeo: Skopeo, five: images.TestImage, seconds: int, work: Path,
                     record: Callable[[str, Server, float], None]) -> None:
    """Requests per second (hey) and eight parallel skopeo pulls of the five-layer image."""
    skopeo.copy(five.oci_ref, f"docker://{server.host}/bench/five:v1")
    record("GET manifest req/s (c=16)", server,
           hey(f"{server.url}/v2/bench/five/manifests/v1", seconds, accept=OCI_MANIFEST))
    record("HEAD blob req/s (c=16)", server,
           hey(f"{server.url}/v2/bench/five/blobs/{five.layer_digests[2]}", seconds, method="HEAD"))

    src = f"docker://{server.host}/bench/five:v1"
    outs = [work / f"five-{server.name}-{i}" for i in range(8)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda o: skopeo.copy(src, f"oci:{o}:v1"), outs))
    record("8 parallel pulls, 5 layers (s)", server, time.perf_counter() - t0)
    for o in outs:
        shutil.rmtree(o)


@contextlib.contextmanager
def active(server: Server) -> Iterator[None]:
    """The server's RSS is sampled while it is measured."""
    server.sampler.active.set()
    try:
        yield
    finally:
        server.sampler.active.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, help="random layer size (default 512)")
    parser.add_argument("--seconds", type=int, help="duration of each hey run (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="pyreg worker processes")
    parser.add_argument("--rounds", type=int, help="rounds, alternating the servers (default 3); medians")
    parser.add_argument("--pyreg-arg", action="append", default=[], help="extra pyreg serve argument")
    parser.add_argument("--quick", action="store_true", help="defaults of 64 MiB, 3 s, 1 round")
    parser.add_argument("--workdir", type=Path, help="keep data here instead of a temp dir")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--base", help="also measure this git revision of pyreg (column pyreg-base)")
    parser.add_argument("--pull-repeats", type=int, default=1, metavar="N",
                        help="curl push + pulls of N new blobs per round; the curl rows of a round are "
                             "their medians (default 1)")
    args = parser.parse_args()
    defaults = (64, 3, 1) if args.quick else (512, 10, 3)
    for name, default in zip(("size_mib", "seconds", "rounds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    for tool in ("skopeo", "curl", "hey", "docker-registry"):
        if not shutil.which(tool):
            print(f"{tool} not found (tests/run installs the Debian peers)", file=sys.stderr)
            return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pyreg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; building images ({args.size_mib} MiB random layer) ...", flush=True)
    big = images.build_random_image(work / "img-big", args.size_mib * MiB, with_busybox=False, seed=512)
    five = images.build_five_layer_image(work / "img-five")
    servers: list[Server] = []
    results: dict[str, dict[str, list[float]]] = {}

    def record(metric: str, server: Server, value: float) -> None:
        results.setdefault(metric, {}).setdefault(server.name, []).append(value)
        print(f"  {metric:34s} {server.name:13s} {value:10.4g}", flush=True)

    try:
        servers.append(start_distribution(work))
        if args.base:
            base_tree = export_tree(args.base, work / "base-tree")
            servers.append(start_pyreg(work, args.workers, args.pyreg_arg, base_tree, "pyreg-base"))
        servers.append(start_pyreg(work, args.workers, args.pyreg_arg))
        # Rounds alternate the servers, so a burst of load from elsewhere hits both alike.
        for round_ in range(args.rounds):
            # A new blob each round, so every round's curl push stores a new digest and its curl
            # pull is the first read of a blob just published (one blob for all rounds made the
            # later rounds measure a digest each server had stored and verified already).
            curl_blobs = [random_blob(work / f"curl-{i}.bin", args.size_mib * MiB, 1024 + round_ + 7919 * i)
                          for i in range(args.pull_repeats)]
            skopeos = {s.name: Skopeo(work / f"skopeo-{s.name}-{round_}") for s in servers}
            for server in servers:
                print(f"round {round_ + 1}/{args.rounds}: {server.name} at {server.url}, skopeo", flush=True)
                with active(server):
                    measure_skopeo(server, skopeos[server.name], big, work, record, round_)
            print(f"round {round_ + 1}/{args.rounds}: curl, servers in turn for each blob", flush=True)
            measure_curl(servers, curl_blobs, record, round_)
            for server in servers:
                print(f"round {round_ + 1}/{args.rounds}: {server.name}, requests", flush=True)
                with active(server):
                    measure_requests(server, skopeos[server.name], five, args.seconds, work, record)
    finally:
        for server in servers:
            try:
                server.sampler.stop()
            finally:
                server.stop()

    for server in servers:
        record("peak RSS, all processes (MiB)", server, server.sampler.peak_kib / 1024)
        record("sum of VmHWM (MiB)", server, sum(server.sampler.hwm_kib.values()) / 1024)
        record("max VmHWM of one process (MiB)", server, server.sampler.max_worker_hwm_mib)
        record("processes", server, server.sampler.processes)

    print()
    print(f"pyreg ({args.workers} workers) vs Distribution 2.8, {args.size_mib} MiB layer, hey -c 16 -z "
          f"{args.seconds}s, median of {args.rounds} rounds, {os.cpu_count()} CPUs")
    base = "pyreg-base" if args.base else None
    head = f"| {'measurement':34s} | {'Distribution':>12s} |"
    rule = f"|{'-' * 36}|{'-' * 14}|"
    if base:
        head += f" {'base ' + args.base[:12]:>18s} |"
        rule += f"{'-' * 20}|"
    head += f" {'pyreg':>10s} | {'ratio':>6s} |"
    rule += f"{'-' * 12}|{'-' * 8}|"
    if base:
        head += f" {'/base':>6s} |"
        rule += f"{'-' * 8}|"
    print(head)
    print(rule)
    for metric, values in results.items():
        dist, mine = statistics.median(values.get("distribution", [0.0])), statistics.median(values["pyreg"])
        ratio = mine / dist if dist else float("nan")
        line = f"| {metric:34s} | {dist:12.2f} |"
        if base:
            before = statistics.median(values.get(base, [0.0]))
            line += f" {before:18.2f} |"
        line += f" {mine:10.2f} | {ratio:6.2f} |"
        if base:
            line += f" {mine / before if before else float('nan'):6.2f} |"
        print(line)
    print("(seconds and MiB: lower is better; MB/s and req/s: higher is better)")
    print()
    print("per round, the curl rows (Distribution, [base,] pyreg: pyreg/Distribution [pyreg/base]):")
    for metric, values in results.items():
        if not metric.startswith("curl "):
            continue
        cells = []
        for i, mine in enumerate(values["pyreg"]):
            dist = values.get("distribution", [])[i] if i < len(values.get("distribution", [])) else 0.0
            cell = f"{dist:.4g}, "
            before = values.get(base, [])[i] if base and i < len(values.get(base, [])) else 0.0
            if base:
                cell += f"{before:.4g}, "
            cell += f"{mine:.4g}: {mine / dist if dist else float('nan'):.2f}x"
            if base:
                cell += f" [{mine / before if before else float('nan'):.2f}x]"
            cells.append(cell)
        print(f"  {metric:34s} " + " | ".join(cells))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
