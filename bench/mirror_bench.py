#!/usr/bin/env python3
"""The pull-through cache: a pull through pyreg's mirror vs the same pull straight from upstream,
and the same through Distribution's proxy mode, in one run on one loopback.

    python bench/mirror_bench.py                  # 256 MiB layer, 3 rounds
    python bench/mirror_bench.py --quick          # 32 MiB, 1 round: checks the setup
    python bench/mirror_bench.py --mib 512 --rounds 5 --json bench/results/mirror.json
    python bench/mirror_bench.py --rounds 5 --base /tmp/pyreg-main   # + another checkout's mirror

Upstream is Debian's docker-registry (Distribution 2.8) holding one image (busybox plus one
random layer). Each round: ``skopeo copy`` of the image to an OCI layout directly from upstream;
then through a fresh pyreg mirror (empty storage: the first pull fetches from upstream while it
streams to skopeo), then again through that mirror (served from its storage); then the same two
through a fresh Distribution with ``proxy: {remoteurl: …}``. Reported: median seconds and the
ratio to the direct pull (the target for pyreg's first pull is <= 1.2x). Every pull's manifest
digest is checked against upstream's. With ``--base DIR`` each round also pulls twice through a
mirror run from that checkout (e.g. ``git archive main | tar -x -C DIR``), interleaved with this
one's, so a change is measured against its base under the same load.

Needs skopeo and docker-registry (``tests/run`` installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from tests import images
from tests.fixtures.peers import DistributionRegistry, Skopeo, free_port, stop_process, wait_for_http

MiB = 1024 * 1024
REPO = "bench/app"


class ProxyDistribution(DistributionRegistry):
    """Distribution in proxy mode (its pull-through cache) of ``remoteurl``."""

    def __init__(self, root: Path, workdir: Path, remoteurl: str) -> None:
        super().__init__(root, workdir)
        self.remoteurl = remoteurl

    def write_config(self) -> None:
        super().write_config()
        config = json.loads(self.config_path.read_text())
        config["proxy"] = {"remoteurl": self.remoteurl}
        self.config_path.write_text(json.dumps(config))


CHECKOUT = Path(__file__).resolve().parent.parent


class PyregMirror:
    """``pyreg serve`` with Distribution's ``proxy.remoteurl`` (names at the root), run from
    ``checkout`` (this one by default), never from an installed pyreg."""

    def __init__(self, work: Path, remoteurl: str, workers: int, checkout: Path = CHECKOUT) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        work.mkdir(parents=True)
        config = {"addr": self.host, "workers": workers, "log": {"level": "warning",
                                                                  "accesslog": {"disabled": True}},
                  "storage": {"filesystem": {"rootdirectory": str(work / "data")}},
                  "proxy": {"remoteurl": remoteurl}}
        (work / "config.yml").write_text(yaml.safe_dump(config))
        self.log = open(work / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "pyreg", "serve", "--config",
                                      str(work / "config.yml")], stdout=self.log, stderr=self.log,
                                     cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)},
                                     start_new_session=True)
        wait_for_http(f"http://{self.host}/v2/", self.proc)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (pyreg's workers), from /proc: the
    server's cost of a pull, which other work on the machine moves much less than wall time."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pull(skopeo: Skopeo, host: str, dest: Path, expected: str, server: int | None = None,
         cpu: list[float] | None = None, client_cpu: list[float] | None = None) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    before = cpu_seconds(server) if server else 0.0
    client_before = children_cpu()  # skopeo is the only child that ends during the pull
    start = time.perf_counter()
    skopeo.copy(f"docker://{host}/{REPO}:v1", f"oci:{dest}:v1")
    seconds = time.perf_counter() - start
    if server and cpu is not None:
        cpu.append(cpu_seconds(server) - before)
    if client_cpu is not None:
        client_cpu.append(children_cpu() - client_before)
    index = json.loads((dest / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    if digest != expected:
        raise SystemExit(f"pull from {host} gave {digest}, upstream has {expected}")
    shutil.rmtree(dest, ignore_errors=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the random layer (default 256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="pyreg serve workers (default 1)")
    parser.add_argument("--quick", action="store_true", help="32 MiB, 1 round")
    parser.add_argument("--json", metavar="FILE", help="write the results here too")
    parser.add_argument("--base", metavar="DIR", type=Path,
                        help="also pull through a mirror run from this checkout, interleaved")
    args = parser.parse_args()
    if args.quick:
        args.mib, args.rounds = 32, 1
    for tool in ("skopeo", "docker-registry"):
        if not shutil.which(tool) and not Path(f"/usr/bin/{tool}").exists():
            print(f"mirror_bench: {tool} is not installed", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="pyreg-mirror-bench-") as tmp:
        work = Path(tmp)
        image = images.build_random_image(work / "image", args.mib * MiB)
        skopeo = Skopeo(work / "skopeo")
        upstream = DistributionRegistry(work / "upstream-root", work / "upstream")
        upstream.start()
        keys = ["direct", "pyreg first", "pyreg second"]
        if args.base:
            keys += ["base first", "base second"]
        times: dict[str, list[float]] = {k: [] for k in (
            *keys, "distribution first", "distribution second")}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        client_cpu: dict[str, list[float]] = {k: [] for k in times}
        mirrors = [("pyreg", CHECKOUT)] + ([("base", args.base.resolve())] if args.base else [])
        try:
            skopeo.copy(image.oci_ref, f"docker://{upstream.host}/{REPO}:v1")
            out = work / "out"
            for r in range(args.rounds):
                assert upstream.proc is not None
                times["direct"].append(pull(skopeo, upstream.host, out, image.manifest_digest,
                                            upstream.proc.pid, cpu["direct"], client_cpu["direct"]))
                for label, checkout in (mirrors if r % 2 == 0 else mirrors[::-1]):
                    mirror = PyregMirror(work / f"{label}-{r}", upstream.url, args.workers, checkout)
                    try:
                        for which in ("first", "second"):
                            key = f"{label} {which}"
                            times[key].append(pull(skopeo, mirror.host, out, image.manifest_digest,
                                                   mirror.proc.pid, cpu[key], client_cpu[key]))
                    finally:
                        mirror.stop()
                proxy = ProxyDistribution(work / f"dist-root-{r}", work / f"dist-{r}", upstream.url)
                try:
                    proxy.start()
                    assert proxy.proc is not None
                    for which in ("first", "second"):
                        key = f"distribution {which}"
                        times[key].append(pull(skopeo, proxy.host, out, image.manifest_digest,
                                               proxy.proc.pid, cpu[key], client_cpu[key]))
                finally:
                    proxy.stop()
        finally:
            upstream.stop()
    direct = statistics.median(times["direct"])
    results: dict[str, Any] = {"mib": args.mib, "rounds": args.rounds, "workers": args.workers,
                               "seconds": {k: round(statistics.median(v), 3) for k, v in times.items()}}
    print(f"image: busybox + {args.mib} MiB random layer; {args.rounds} round(s); median seconds of "
          "skopeo copy to an OCI layout;\nper round: its ratio to that round's direct pull; server CPU: "
          "median, of the upstream for direct")
    # Each round's pull over that round's direct pull: load moves between rounds, less within one.
    ratios = {k: sorted(v / d for v, d in zip(values, times["direct"], strict=True))
              for k, values in times.items()}
    results["round_ratios"] = {k: [round(x, 3) for x in v] for k, v in ratios.items()}
    results["server_cpu_seconds"] = {k: round(statistics.median(v), 3) for k, v in cpu.items()}
    results["skopeo_cpu_seconds"] = {k: round(statistics.median(v), 3) for k, v in client_cpu.items()}
    print(f"{'pull':<22}{'seconds':>9}{'x direct':>10}{'MiB/s':>7}   {'per-round x direct':<20}"
          f"server CPU s  skopeo CPU s")
    for key, values in times.items():
        median = statistics.median(values)
        spread = ratios[key]
        print(f"{key:<22}{median:>9.2f}{median / direct:>10.2f}{args.mib / median:>7.0f}"
              f"   {statistics.median(spread):.2f} ({spread[0]:.2f}-{spread[-1]:.2f})   "
              f"{statistics.median(cpu[key]):>12.2f}{statistics.median(client_cpu[key]):>14.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
