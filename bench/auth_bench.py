#!/usr/bin/env python3
"""What auth costs: GET manifest requests/s on ``pyreg serve`` with auth off, with token auth
(a Bearer JWT on every request, verified once and then cached per token), and with htpasswd
Basic auth (bcrypt once, then a remembered HMAC of the password).

    python bench/auth_bench.py                  # 10 s per hey run
    python bench/auth_bench.py --quick          # 3 s: checks the script works
    python bench/auth_bench.py --workers 2 --markdown   # also print a table row block for bench/README.md

Three servers (off, token, htpasswd) on free loopback ports over one data directory, measured one
at a time in interleaved rounds (median reported, so a busy moment of a shared machine hits every
variant alike), ``hey -c 16`` with the Authorization header on every request.
Target (issue 6): token auth >= 0.8x the auth-off figure. Needs hey (``tests/run`` installs it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyreg.registry.auth import htpasswd
from tests.fixtures.peers import free_port, stop_process, wait_for_http

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
USER, PASSWORD = "bench", "bench-password"
SERVICE = "pyreg-bench"


def start(
    work: Path, name: str, config: dict[str, object], workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    path = work / f"{name}.json"
    path.write_text(json.dumps(config))  # JSON is YAML
    log = open(work / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyreg.client.cli",
            "serve",
            "--config",
            str(path),
            "--addr",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)),
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/v2/", proc, log=work / f"{name}.log")
    time.sleep(1.0)  # let every worker come up
    return proc, url


def push_tiny_image(url: str, headers: dict[str, str]) -> None:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    )
    blobs = [config.encode(), os.urandom(1024)]
    with httpx.Client(base_url=url, headers=headers) as c:
        for blob in blobs:
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            r = c.post("/v2/bench/app/blobs/uploads/", params={"digest": digest}, content=blob)
            assert r.status_code == 201, r.text
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(blobs[0]).hexdigest(),
                "size": len(blobs[0]),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(blobs[1]).hexdigest(),
                    "size": 1024,
                }
            ],
        }
        r = c.put(
            "/v2/bench/app/manifests/latest",
            content=json.dumps(manifest),
            headers={"Content-Type": MANIFEST_TYPE},
        )
        assert r.status_code == 201, r.text


def hey(url: str, seconds: int, headers: dict[str, str]) -> float:
    cmd = ["hey", "-z", f"{seconds}s", "-c", "16", "-H", f"Accept: {MANIFEST_TYPE}"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    bad = [c for c in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out) if c[0] != "200"]
    if bad:
        raise RuntimeError(f"hey {url}: non-200 replies {bad}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 s per run")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved hey runs per variant (median)")
    ap.add_argument("--markdown", action="store_true", help="print a markdown block for bench/README.md")
    args = ap.parse_args()
    seconds = 3 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="pyreg-auth-bench-") as tmp:
        work = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        (work / "signing.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        htpasswd.set_user(work / "htpasswd", USER, PASSWORD)  # the default bcrypt cost, as in production
        base = {
            "storage": {
                "filesystem": {"rootdirectory": str(work / "data")},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "log": {"level": "warning", "accesslog": {"disabled": True}},
        }
        token_cfg = {
            **base,
            "auth": {
                "token": {"service": SERVICE, "issuer": SERVICE, "signingkey": str(work / "signing.key")},
                "htpasswd": {"path": str(work / "htpasswd")},
            },
        }
        basic_cfg = {**base, "auth": {"htpasswd": {"path": str(work / "htpasswd")}}}
        configs = {"auth off": base, "token auth": token_cfg, "htpasswd basic": basic_cfg}
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        headers: dict[str, dict[str, str]] = {}
        samples: dict[str, list[float]] = {name: [] for name in configs}
        try:
            for name, config in configs.items():  # all up at once (idle ones cost no CPU), one data dir
                servers[name] = start(work, name.replace(" ", "-"), config, args.workers)
            off_url, token_url = servers["auth off"][1], servers["token auth"][1]
            push_tiny_image(off_url, {})
            r = httpx.get(
                f"{token_url}/token",
                params={"service": SERVICE, "scope": "repository:bench/app:pull"},
                auth=(USER, PASSWORD),
            )
            headers["auth off"] = {}
            headers["token auth"] = {"Authorization": f"Bearer {r.json()['token']}"}
            basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            headers["htpasswd basic"] = {"Authorization": f"Basic {basic}"}
            # interleaved rounds, so a busy moment of a shared machine hits every variant alike
            for _ in range(args.rounds):
                for name in configs:
                    url = f"{servers[name][1]}/v2/bench/app/manifests/latest"
                    samples[name].append(hey(url, seconds, headers[name]))
        finally:
            for proc, _url in servers.values():
                stop_process(proc)
        results = {name: statistics.median(values) for name, values in samples.items()}
        for name, value in results.items():
            spread = ", ".join(f"{v:.0f}" for v in samples[name])
            print(f"{name:16s} {value:10.0f} req/s (median of {spread})", flush=True)
        off = results["auth off"]
        for name in ("token auth", "htpasswd basic"):
            print(f"{name} / auth off: {results[name] / off:.2f}x")
        if args.markdown:
            cpu = platform.processor() or platform.machine()
            print(
                f"\n### Auth cost: GET manifest, hey -c 16, median of {args.rounds} x {seconds} s, "
                f"{args.workers} worker(s), "
                f"{os.cpu_count()} cores ({cpu})\n"
            )
            print("| auth | req/s | vs off |\n|---|---:|---:|")
            for name, value in results.items():
                print(f"| {name} | {value:.0f} | {value / off:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
