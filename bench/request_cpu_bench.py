"""Server CPU per request: two revisions of pyreg side by side, rounds interleaved.

    python bench/request_cpu_bench.py --base main            # the work tree against main
    python bench/request_cpu_bench.py --base main --rounds 6 --requests 20000 --pulls 2

On a shared machine requests per second move by ±50% between runs; the CPU seconds the server
process spends per request (from /proc, over a fixed ``hey -n`` count) hardly move, and are what
a CPU-bound server's throughput is the inverse of. One ``pyreg serve`` worker per revision (the
worker is the serve process itself), access log off; ``GET manifest`` by tag (OCI Accept) and
``HEAD`` of a 1 MiB blob with ``hey -c 16``, plus ``curl`` pulls of a 256 MiB random blob.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MT = "application/vnd.oci.image.manifest.v1+json"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def export(rev: str | None, dest: Path) -> Path:
    if rev is None:
        return REPO
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start(tree: Path, work: Path, blobs: list[bytes], manifest: bytes) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "PYREG_LOG_ACCESSLOG_DISABLED": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "pyreg", "serve", "--addr", f"127.0.0.1:{port}",
                             "--data-dir", str(work), "--workers", "1"], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/v2/")
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    for blob in blobs:
        r = httpx.post(f"{url}/v2/b/blobs/uploads/?digest={digest(blob)}", content=blob, timeout=300)
        r.raise_for_status()
    httpx.put(f"{url}/v2/b/manifests/v1", content=manifest, headers={"content-type": MT}).raise_for_status()
    return proc, url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare against (git rev)")
    parser.add_argument("--head", help="the new revision (default: the work tree as it is)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000, help="hey -n per measurement")
    parser.add_argument("--pulls", type=int, default=2, help="256 MiB curl pulls per round (0: none)")
    args = parser.parse_args()
    big, small, config = os.urandom(256 << 20), b"z" * (1 << 20), b"{}"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                   "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(small),
                    "size": len(small)}]}).encode()
    results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {"base": export(args.base, work / "base"), "head": export(args.head, work / "head")}
        servers = {label: start(tree, work / f"data-{label}", [big, small, config], manifest)
                   for label, tree in trees.items()}
        try:
            for _ in range(args.rounds):
                for label, (proc, url) in servers.items():
                    manifest_url, blob_url = f"{url}/v2/b/manifests/v1", f"{url}/v2/b/blobs/{digest(small)}"
                    for key, hey_args in (("GET manifest", ["-H", f"Accept: {MT}", manifest_url]),
                                          ("HEAD blob", ["-m", "HEAD", blob_url])):
                        before = cpu_seconds(proc.pid)
                        out = subprocess.run(["hey", "-n", str(args.requests), "-c", "16", *hey_args],
                                             capture_output=True, text=True, check=True).stdout
                        if f"[200]\t{args.requests} responses" not in out:
                            raise SystemExit(f"{label} {key}: not every answer was 200:\n{out[-800:]}")
                        used = cpu_seconds(proc.pid) - before
                        results[label].setdefault(f"{key}, server CPU µs/request", []).append(
                            used / args.requests * 1e6)
                    for _ in range(args.pulls):
                        before, t0 = cpu_seconds(proc.pid), time.perf_counter()
                        subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{url}/v2/b/blobs/{digest(big)}"],
                                       check=True)
                        wall, used = time.perf_counter() - t0, cpu_seconds(proc.pid) - before
                        results[label].setdefault("256 MiB pull, server CPU s", []).append(used)
                        results[label].setdefault("256 MiB pull MB/s", []).append(len(big) / wall / 1e6)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
    print(f"base {args.base} vs head {args.head or 'work tree'}: medians of {args.rounds} interleaved "
          f"rounds, load average {os.getloadavg()[0]:.1f}\n")
    print("| measurement | base | head | head/base | head min-max |")
    print("|---|---:|---:|---:|---:|")
    for key, values in results["base"].items():
        a, b = statistics.median(values), statistics.median(results["head"][key])
        print(f"| {key} | {a:.3f} | {b:.3f} | {b / a:.3f} | {min(results['head'][key]):.3f}-"
              f"{max(results['head'][key]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
