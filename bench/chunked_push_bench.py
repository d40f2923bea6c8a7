#!/usr/bin/env python3
"""Chunked blob pushes, pyreg next to CNCF Distribution (Debian's docker-registry 2.8), issue 18.

    python bench/chunked_push_bench.py                       # 256 MiB, 3 rounds
    python bench/chunked_push_bench.py --size-mib 64 --rounds 1
    python bench/chunked_push_bench.py --base main           # also that revision of pyreg

Two ways a client pushes a blob in pieces, each with curl against each server:

- ``oci-chunked``: POST, then ``--parts`` PATCHes (64 MiB each for 256 MiB) with Content-Range and
  Content-Length, then ``PUT ?digest=`` with an empty body (the OCI spec's chunked upload);
- ``te-chunked``: POST, one PATCH with ``Transfer-Encoding: chunked`` (curl -T sends 65524-byte
  chunks after ``Expect: 100-continue``), then ``PUT ?digest=`` with an empty body: docker's and
  containerd's way of pushing a layer;
- ``docker`` (with ``--docker-host unix:///…/docker.sock``, a running dockerd of your own):
  ``docker push`` of a new one-layer image (``docker import`` of a tar holding one random file of
  the blob's size; docker gzips the layer as it pushes, so its MB/s are the client's, the server
  CPU seconds are the number to read).

Every round writes a new random blob per way (the same file for every server in that round, each
server stores it for the first time), and the servers take turns, which one goes first alternating
by round. Reported: server CPU seconds (user + system of the server's process tree from /proc,
over the whole POST..PUT), MB/s (blob bytes / wall time of the same), the median over rounds and
each round's value. pyreg runs with one worker from this checkout (PYTHONPATH), Distribution
with its in-memory blob descriptor cache. Hold ``flock /work/wt/bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
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

from benchservers import (  # noqa: E402
    MiB,
    curl_headers,
    location,
    start_distribution,
    start_pyreg_tree,
    with_digest,
)
from registry_bench import cpu_seconds, export_tree  # noqa: E402


def push_oci_chunked(url: str, repo: str, parts: list[Path], digest: str) -> None:
    loc = location(url, curl_headers("-X", "POST", f"{url}/v2/{repo}/blobs/uploads/"))
    start = 0
    for part in parts:
        size = part.stat().st_size
        loc = location(url, curl_headers("-X", "PATCH", "-T", str(part),
                                  "-H", "Content-Type: application/octet-stream",
                                  "-H", f"Content-Range: {start}-{start + size - 1}", loc))
        start += size
    curl_headers("-X", "PUT", "-H", "Content-Length: 0", with_digest(loc, digest))


def push_te_chunked(url: str, repo: str, blob: Path, digest: str) -> None:
    loc = location(url, curl_headers("-X", "POST", f"{url}/v2/{repo}/blobs/uploads/"))
    loc = location(url, curl_headers("-X", "PATCH", "-T", str(blob), "-H", "Transfer-Encoding: chunked",
                              "-H", "Content-Type: application/octet-stream", loc))
    curl_headers("-X", "PUT", "-H", "Content-Length: 0", with_digest(loc, digest))


def new_docker_image(work: Path, size: int, tag: str, env: dict[str, str]) -> None:
    layer = work / "layer"
    layer.mkdir(exist_ok=True)
    with open(layer / "big", "wb") as f:
        for _ in range(0, size, 16 * MiB):
            f.write(os.urandom(min(16 * MiB, size - f.tell())))
    subprocess.run(["tar", "-C", str(layer), "-cf", str(work / "layer.tar"), "big"], check=True)
    subprocess.run(["docker", "import", str(work / "layer.tar"), tag], check=True, env=env,
                   capture_output=True)
    (layer / "big").unlink()
    (work / "layer.tar").unlink()


def push_docker(url: str, image: str, repo: str, env: dict[str, str]) -> None:
    target = url.removeprefix("http://") + "/" + repo + ":1"
    subprocess.run(["docker", "tag", image, target], check=True, env=env)
    subprocess.run(["docker", "push", "-q", target], check=True, env=env, capture_output=True)


def new_blob(work: Path, size: int, parts: int) -> tuple[Path, list[Path], str]:
    blob = work / "blob"
    hasher = hashlib.sha256()
    piece = size // parts
    files = []
    with open(blob, "wb") as whole:
        for i in range(parts):
            data = os.urandom(piece if i < parts - 1 else size - piece * (parts - 1))
            hasher.update(data)
            whole.write(data)
            path = work / f"part{i}"
            path.write_bytes(data)
            files.append(path)
    return blob, files, "sha256:" + hasher.hexdigest()


def fmt(values: list[float], digits: int) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f} ({' '.join(f'{v:.{digits}f}' for v in values)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", type=int, default=4, help="PATCHes of the oci-chunked push")
    ap.add_argument("--base", help="also this git revision of pyreg")
    ap.add_argument("--ways", default="oci-chunked,te-chunked", help="also: docker")
    ap.add_argument("--docker-host", help="a dockerd of your own for the docker way (DOCKER_HOST)")
    args = ap.parse_args()
    denv = dict(os.environ, DOCKER_HOST=args.docker_host or "")
    size = args.size_mib * MiB
    ways = args.ways.split(",")
    results: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="chunked-push-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        targets = [start_distribution(work), start_pyreg_tree(work, REPO, "pyreg")]
        if args.base:
            targets.append(start_pyreg_tree(work, export_tree(args.base, work / "base-tree"), "base"))
        try:
            time.sleep(1.0)
            for rnd in range(args.rounds):
                order = targets if rnd % 2 == 0 else targets[::-1]
                for way in ways:
                    image = f"bench/chunked-push-{os.getpid()}:{rnd}"
                    if way == "docker":
                        new_docker_image(work, size, image, denv)
                    else:
                        blob, parts, digest = new_blob(work, size, args.parts)
                    for t in order:
                        repo = f"bench/{way}-{rnd}"
                        cpu0, t0 = cpu_seconds(t.pid), time.perf_counter()
                        if way == "docker":
                            push_docker(t.url, image, repo, denv)
                        elif way == "oci-chunked":
                            push_oci_chunked(t.url, repo, parts, digest)
                        else:
                            push_te_chunked(t.url, repo, blob, digest)
                        wall = time.perf_counter() - t0
                        cpu = cpu_seconds(t.pid) - cpu0
                        results.setdefault((way, "cpu", t.name), []).append(cpu)
                        results.setdefault((way, "mbs", t.name), []).append(size / wall / 1e6)
                        print(f"round {rnd + 1} {way:12} {t.name:12} server CPU {cpu:5.2f} s  "
                              f"{size / wall / 1e6:7.1f} MB/s", flush=True)
                    if way == "docker":
                        subprocess.run(["docker", "rmi", "-f", image], env=denv, capture_output=True)
        finally:
            for t in targets:
                t.stop()
    names = [t.name for t in targets]
    print()
    print("| push | measurement | " + " | ".join(names) + " | pyreg/distribution |")
    print("|---|---|" + "---:|" * (len(names) + 1))
    for way in ways:
        for metric, label, digits in (("cpu", "server CPU s", 2), ("mbs", "MB/s", 0)):
            cells = [fmt(results[(way, metric, n)], digits) for n in names]
            ratio = (statistics.median(results[(way, metric, "pyreg")])
                     / statistics.median(results[(way, metric, "distribution")]))
            print(f"| {way} | {label} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
