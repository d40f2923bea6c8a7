#!/usr/bin/env python3
"""pyreg vs Distribution 2.8 (Debian's docker-registry, s3-aws driver) on the same S3 endpoint.

    python bench/s3_bench.py                # 512 MiB layer, hey 10 s, redirect off and on
    python bench/s3_bench.py --quick        # 64 MiB, 3 s: checks the script works
    python bench/s3_bench.py --append-readme
    python bench/s3_bench.py --base main    # also that git revision of pyreg, in the same rounds

One moto_server process is the S3 endpoint for both registries (a bucket each). For each
redirect setting, both registries run on free loopback ports, one at a time is measured:
push and pull of one random layer with skopeo (OCI layout <-> registry), and GET manifest
requests per second with ``hey -c 16``. With redirect on, blob GETs answer 307 to a presigned
S3 URL that skopeo follows; the pull then measures the S3 endpoint more than the registry.
moto keeps objects in memory and is single-process Python: it bounds both registries alike.
``--base REV`` adds a third server, that git revision of pyreg (extracted with ``git archive``),
measured in the same rounds: a change's before and after on S3 from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from registry_bench import OCI_MANIFEST, Server, hey  # noqa: E402

from tests import images  # noqa: E402
from tests.fixtures.peers import (  # noqa: E402
    DistributionRegistry,
    Skopeo,
    free_port,
    wait_for_http,
)
from tests.fixtures.peers import stop_process as stop_group  # noqa: E402
from tests.fixtures.s3 import (  # noqa: E402
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    MotoServer,
    nginx_config,
    start_moto,
    start_nginx,
    stop_process,
)


def halt(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this script started: its whole group if it leads one (start_new_session)."""
    try:
        leads = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        leads = False
    (stop_group if leads else stop_process)(proc)

MiB = 1024 * 1024


def start_distribution(work: Path, moto: MotoServer, bucket: str, redirect: bool) -> Server:
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "s3": {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY, "region": REGION,
                   "regionendpoint": moto.endpoint, "bucket": bucket, "secure": False, "v4auth": True,
                   "chunksize": 10 * MiB, "rootdirectory": "/registry"},
            "redirect": {"disable": not redirect},
            "cache": {"blobdescriptor": "inmemory"},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "pyreg-bench"},
    }
    path = work / f"distribution-{redirect}.yml"
    path.write_text(json.dumps(config))
    log = open(work / f"distribution-{redirect}.log", "ab")  # noqa: SIM115 - lives with the server
    proc = subprocess.Popen(["docker-registry", "serve", str(path)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={"PATH": os.environ["PATH"], "HOME": str(work)})
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=work / f"distribution-{redirect}.log")

    def stop() -> None:
        halt(proc)
        log.close()

    return Server("distribution", url, f"127.0.0.1:{port}", proc.pid, stop)


def export_tree(rev: str, dest: Path) -> Path:
    """The tree of git revision ``rev`` of this checkout, extracted under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start_pyreg(work: Path, moto: MotoServer, bucket: str, redirect: bool, workers: int,
                cache_ttl: float | None = None, tree: Path = ROOT, name: str = "pyreg") -> Server:
    port = free_port()
    config = {
        "addr": f"127.0.0.1:{port}",
        "workers": workers,
        "log": {"level": "warning", "accesslog": {"disabled": True}},
        "storage": {
            "s3": {"accesskey": ACCESS_KEY, "secretkey": SECRET_KEY, "region": REGION,
                   "regionendpoint": moto.endpoint, "bucket": bucket, "forcepathstyle": True,
                   "chunksize": 10 * MiB, "rootdirectory": "/registry",
                   "redirect": {"enabled": redirect, "expiry": "20m"}},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
            **({"cache": {"ttl": cache_ttl}} if cache_ttl is not None else {}),
        },
    }
    path = work / f"{name}-{redirect}-{cache_ttl}.yml"
    path.write_text(json.dumps(config))
    log = open(work / f"{name}-{redirect}-{cache_ttl}.log", "ab")  # noqa: SIM115 - lives with the server
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYREG_")}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(work / f"pycache-{name}"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # compiled once, as an installed pyreg is
    # revisions before the pyreg.* package (2026-12-05 03:43) start as client.cli
    entry = ["-m", "pyreg"] if (tree / "pyreg").exists() else [
        "-c", "import sys; from client.cli import main; sys.exit(main())"]
    proc = subprocess.Popen([sys.executable, *entry, "serve", "--config", str(path)], cwd=tree,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=work / f"{name}-{redirect}-{cache_ttl}.log")
    time.sleep(1.0)  # every worker up

    def stop() -> None:
        halt(proc)
        log.close()

    return Server(name, url, f"127.0.0.1:{port}", proc.pid, stop)


def measure(server: Server, skopeo: Skopeo, big: images.TestImage, five: images.TestImage, seconds: int,
            work: Path, tag: str, record: Callable[[str, Server, float], None], pulls: int = 1) -> None:
    size_mb = big.layers[-1].size / 1e6
    ref = f"docker://{server.host}/bench/big-{tag}:1"
    t0 = time.perf_counter()
    skopeo.copy(big.oci_ref, ref)
    record("skopeo push MB/s", server, size_mb / (time.perf_counter() - t0))
    for i in range(pulls):  # pulls are cheap next to a push through moto: repeat them
        out = work / f"pull-{server.name}-{tag}-{i}"
        t0 = time.perf_counter()
        skopeo.copy(ref, f"oci:{out}:1")
        record("skopeo pull MB/s", server, size_mb / (time.perf_counter() - t0))
        shutil.rmtree(out)
    skopeo.copy(five.oci_ref, f"docker://{server.host}/bench/five-{tag}:v1")
    record("GET manifest req/s (c=16)", server,
           hey(f"{server.url}/v2/bench/five-{tag}/manifests/v1", seconds, accept=OCI_MANIFEST))


def curl_get_mbps(url: str, size_mb: float, repeats: int) -> float:
    """Median MB/s of ``curl`` fetching ``url`` into /dev/null (redirects not followed)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", url],
                                capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - t0
        assert abs(int(float(result.stdout)) / 1e6 - size_mb) < 0.01, result.stdout
        rates.append(size_mb / elapsed)
    return statistics.median(rates)


def xaccel_bench(work: Path, big: images.TestImage, repeats: int) -> list[str]:
    """Blob GET on the filesystem driver: pyreg direct, behind nginx, and with X-Accel-Redirect
    (nginx sends the file with sendfile), next to Distribution direct; same layer, same disk."""
    data = work / "fs-data"
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    dist = DistributionRegistry(work / "fs-distribution-root", work / "fs-distribution", cache=True).start()
    try:
        for name, xaccel in (("plain", False), ("xaccel", True)):
            port = free_port()
            config = {"addr": f"127.0.0.1:{port}",
                      "log": {"level": "warning", "accesslog": {"disabled": True}},
                      "storage": {"filesystem": {"rootdirectory": str(data)}},
                      "proxy": {"trustforwarded": True, "xaccelredirect": {"enabled": xaccel}}}
            path = work / f"fs-{name}.yml"
            path.write_text(json.dumps(config))
            log = open(work / f"fs-{name}.log", "ab")  # noqa: SIM115 - lives with the server
            cmd = [sys.executable, "-m", "pyreg", "serve", "--config", str(path)]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
            log.close()
            wait_for_http(f"http://127.0.0.1:{port}/v2/", procs[-1], log=work / f"fs-{name}.log")
            nport = free_port()
            conf = nginx_config(str(work / f"nginx-{name}"), {
                "PYREG1_ADDR": f"127.0.0.1:{port}", "PYREG2_ADDR": f"127.0.0.1:{port}",
                "NGINX_LISTEN": f"127.0.0.1:{nport}", "PYREG_BLOB_ROOT": str(data)})
            procs.append(start_nginx(conf, nport))
            urls[name] = f"http://127.0.0.1:{nport}"
            urls[f"{name}-direct"] = f"http://127.0.0.1:{port}"
        skopeo = Skopeo(work / "skopeo-fs")
        skopeo.copy(big.oci_ref, f"docker://{urls['plain-direct'][7:]}/bench/fs:1")
        skopeo.copy(big.oci_ref, f"docker://{dist.host}/bench/fs:1")
        digest = big.layers[-1].digest
        size_mb = big.layers[-1].size / 1e6
        blob = f"/v2/bench/fs/blobs/{digest}"
        rows = [("Distribution, direct", dist.url + blob), ("pyreg, direct", urls["plain-direct"] + blob),
                ("pyreg behind nginx (proxied stream)", urls["plain"] + blob),
                ("pyreg behind nginx, X-Accel-Redirect", urls["xaccel"] + blob)]
        results = [(label, curl_get_mbps(url, size_mb, repeats)) for label, url in rows]
    finally:
        for p in procs:
            halt(p)
        dist.stop()
    base = results[0][1]
    lines = [f"Blob GET, filesystem driver, {size_mb:.0f} MB layer, curl, median of {repeats}", "",
             f"| {'server':38s} | {'MB/s':>8s} | {'vs Distribution':>15s} |",
             f"|{'-' * 40}|{'-' * 10}|{'-' * 17}|"]
    for label, rate in results:
        lines.append(f"| {label:38s} | {rate:8.1f} | {rate / base:15.2f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pulls", type=int, default=3, help="pulls per round (the median is reported)")
    parser.add_argument("--workers", type=int, default=2, help="pyreg worker processes")
    parser.add_argument("--quick", action="store_true", help="64 MiB and 3 s runs")
    parser.add_argument("--redirect", choices=["off", "on", "both"], default="both")
    parser.add_argument("--xaccel", action="store_true",
                        help="also the filesystem X-Accel-Redirect blob GET comparison behind nginx")
    parser.add_argument("--only-xaccel", action="store_true", help="just that comparison")
    parser.add_argument("--append-readme", action="store_true", help="append the table to bench/README.md")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--base", help="also measure this git revision of pyreg (column pyreg-base)")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.seconds = 64, 3
    for tool in ("skopeo", "hey", "docker-registry", "moto_server"):
        if not shutil.which(tool):
            print(f"{tool} not found", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="pyreg-s3-bench-"))
    print(f"work dir {work}; building a {args.size_mib} MiB random layer ...", flush=True)
    big = images.build_random_image(work / "img-big", args.size_mib * MiB, with_busybox=False, seed=512)
    five = images.build_five_layer_image(work / "img-five")
    results: dict[str, dict[str, list[float]]] = {}
    if args.only_xaccel:
        lines = xaccel_bench(work, big, args.pulls)
        print("\n".join(lines))
        if args.append_readme:
            append_readme(lines)
        shutil.rmtree(work, ignore_errors=True)
        return 0
    base_tree = export_tree(args.base, work / "base-tree") if args.base else None
    moto = start_moto(str(work / "moto.log"))
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.redirect]
    try:
        for redirect in settings:
            label = "redirect on" if redirect else "redirect off"

            def record(metric: str, server: Server, value: float, label: str = label) -> None:
                results.setdefault(f"{metric}, {label}", {}).setdefault(server.name, []).append(value)
                print(f"  {metric + ', ' + label:58s} {server.name:13s} {value:10.1f}", flush=True)

            servers: list[Server] = []
            try:
                servers.append(start_distribution(work, moto, moto.new_bucket(), redirect))
                servers.append(start_pyreg(work, moto, moto.new_bucket(), redirect, args.workers))
                if base_tree is not None:
                    servers.append(start_pyreg(work, moto, moto.new_bucket(), redirect, args.workers,
                                               tree=base_tree, name="pyreg-base"))
                for round_ in range(args.rounds):
                    for server in servers:
                        print(f"{label}, round {round_ + 1}: {server.name} at {server.url}", flush=True)
                        skopeo = Skopeo(work / f"skopeo-{server.name}-{redirect}-{round_}")
                        measure(server, skopeo, big, five, args.seconds, work, f"{int(redirect)}{round_}",
                                record, args.pulls)
                if not redirect:
                    # pyreg's lookup cache off (storage.cache.ttl 0, as deploy/config.yml has it for
                    # replicas): every manifest GET reads the tag link from S3, as Distribution does.
                    nocache = start_pyreg(work, moto, moto.new_bucket(), False, args.workers, cache_ttl=0)
                    try:
                        for server in (servers[0], nocache):  # the base: no such row (same code path)
                            skopeo = Skopeo(work / f"skopeo-nocache-{server.name}")
                            skopeo.copy(five.oci_ref, f"docker://{server.host}/bench/five-nocache:v1")
                            record("GET manifest req/s (c=16), pyreg cache off", server,
                                   hey(f"{server.url}/v2/bench/five-nocache/manifests/v1", args.seconds,
                                       accept=OCI_MANIFEST))
                    finally:
                        nocache.sampler.stop()
                        nocache.stop()
            finally:
                for server in servers:
                    server.sampler.stop()
                    server.stop()
    finally:
        halt(moto.proc)

    base = f"base {args.base[:12]}" if args.base else None
    lines = [
        f"pyreg ({args.workers} workers, S3 driver) vs Distribution 2.8 (s3-aws driver), both on one "
        f"moto_server, {args.size_mib} MiB layer, hey -c 16 -z {args.seconds}s, median of {args.rounds} "
        f"round(s) ({args.pulls} pulls each), {os.cpu_count()} CPUs",
        "",
        f"| {'measurement':58s} | {'Distribution':>12s} | {'pyreg':>10s} | {'ratio':>6s} |"
        + (f" {base:>18s} | {'/base':>6s} |" if base else ""),
        f"|{'-' * 60}|{'-' * 14}|{'-' * 12}|{'-' * 8}|" + (f"{'-' * 20}|{'-' * 8}|" if base else ""),
    ]
    for metric, values in results.items():
        dist, mine = statistics.median(values["distribution"]), statistics.median(values["pyreg"])
        ratio = mine / dist if dist else float("nan")
        row = f"| {metric:58s} | {dist:12.1f} | {mine:10.1f} | {ratio:6.2f} |"
        if base:
            before = statistics.median(values.get("pyreg-base", [float("nan")]))
            row += f" {before:18.1f} | {mine / before if before else float('nan'):6.2f} |"
        lines.append(row)
    if args.xaccel:
        lines += ["", *xaccel_bench(work, big, args.pulls)]
    print()
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    if args.append_readme:
        append_readme(lines)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def append_readme(lines: list[str]) -> None:
    readme = ROOT / "bench" / "README.md"
    day = time.strftime("%Y-%m-%d")
    with open(readme, "a", encoding="utf-8") as f:
        f.write(f"\n### S3 and X-Accel-Redirect: pyreg vs Distribution (`bench/s3_bench.py`, {day})\n\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
