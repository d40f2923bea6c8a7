#!/usr/bin/env python3
"""Networking: ``pyreg run --rm busybox true`` with ``--network bridge`` vs ``none`` (``--base
REV``: and another revision's, interleaved), and TCP throughput into a container through a
published port (pyreg's proxy and its DNAT, docker-proxy, slirp4netns, pasta) vs straight to its
bridge address.

Everything runs in a network namespace this script makes and removes (``ip netns add``): the
bridge, the NAT chains and all traffic stay in it. Needs root, iproute2, iptables, nsenter.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from runtime_bench import build_image, pyreg_env, remove_bench_cgroups  # noqa: E402

SENDER = """
import socket, sys, time
host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = b"x" * (1 << 20)
for _ in range(300):
    try:
        s = socket.create_connection((host, port)); break
    except OSError:
        time.sleep(0.1)
t0 = time.perf_counter()
for _ in range(total):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the receiver closes once it has read everything
print(total / (time.perf_counter() - t0))
"""


def _startup(pyreg_of: dict[str, list[str]], env_of: dict[str, dict[str, str]], runs: int,
             nets: tuple[str, ...] = ("none", "bridge")) -> None:
    """``run --rm busybox true`` with none and bridge, for every tree, interleaved (one run of
    each combination per round, after a warm-up), so that load on a shared machine hits all alike."""
    import resource

    combos = [(tree, net) for tree in pyreg_of for net in nets]
    times: dict[tuple[str, str], list[float]] = {c: [] for c in combos}
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in combos}
    for round_ in range(runs + 1):
        for tree, net in combos:
            cmd = [*pyreg_of[tree], "run", "--rm", "--network", net, "busybox", "true"]
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env=env_of[tree], capture_output=True, text=True,
                               cwd=env_of[tree]["PYTHONPATH"])  # -m: the tree's own modules first
            dt = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                print(f"{tree} --network {net}: exit {p.returncode}: {p.stderr.strip()[-300:]}")
                return
            if round_:
                times[(tree, net)].append(dt)
                # user+sys of every process waited for (pyreg, its supervisor, ip, iptables...):
                # steadier than wall time on a shared machine
                cpu[(tree, net)].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    for tree in pyreg_of:
        med, mcpu = {}, {}
        for net in nets:
            t = sorted(times[(tree, net)])
            med[net], mcpu[net] = statistics.median(t), statistics.median(cpu[(tree, net)])
            q1, q3 = t[len(t) // 4], t[(3 * len(t)) // 4]
            print(f"{tree:6} start-up --network {net:6}: wall median {med[net] * 1000:.1f} ms "
                  f"(min {t[0] * 1000:.1f}, quartiles {q1 * 1000:.1f}-{q3 * 1000:.1f}, {runs} runs), "
                  f"CPU median {mcpu[net] * 1000:.1f} ms")
        for net in nets[1:]:
            print(f"{tree:6} {net} over {nets[0]}: wall {(med[net] - med[nets[0]]) * 1000:+.1f} ms, "
                  f"CPU {(mcpu[net] - mcpu[nets[0]]) * 1000:+.1f} ms (medians)")


OTHER_ADDRESS = "192.0.2.10"  # TEST-NET-1 on a veth pair inside the bench's namespace


def _throughput(pyreg: list[str], enter: list[str], env: dict[str, str], mib: int, rounds: int) -> None:
    """One TCP stream of ``mib`` MiB into ``nc -l`` in a container: through pyreg's -p proxy
    (127.0.0.1), through pyreg's DNAT (-p on a non-loopback address of the namespace), through
    Debian's docker-proxy (run by hand against the same kind of container, as dockerd would),
    straight to the container's bridge address, and through slirp4netns's and pasta's -p (the
    rootless paths, here run as root). Rounds alternate the paths; the median is shown."""
    import shutil

    # label: (network, -p, host to connect to, its port); None: the container's own address
    setups: dict[str, tuple[str, list[str], str | None, int]] = {
        "pyreg -p (proxy)": ("bridge", ["-p", "127.0.0.1:19090:9000"], "127.0.0.1", 19090),
        "pyreg -p (DNAT)": ("bridge", ["-p", f"{OTHER_ADDRESS}:19093:9000"], OTHER_ADDRESS, 19093),
        "pyreg -p [::1] (proxy)": ("bridge", ["-p", "[::1]:19095:9000"], "::1", 19095),
        "docker-proxy": ("bridge", [], None, 9000),
        "container address": ("bridge", [], None, 9000),
        "slirp4netns -p": ("slirp4netns", ["-p", "127.0.0.1:19092:9000"], "127.0.0.1", 19092),
        "pasta -p": ("pasta", ["-p", "127.0.0.1:19094:9000"], "127.0.0.1", 19094),
    }
    for label, tool in (("docker-proxy", "docker-proxy"), ("slirp4netns -p", "slirp4netns"),
                        ("pasta -p", "pasta")):
        if shutil.which(tool) is None:
            del setups[label]
    paths = list(setups)
    got: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(rounds):
        for label in paths:
            net, publish, host, port = setups[label]
            cid = subprocess.run([*pyreg, "run", "-d", "--network", net, *publish, "busybox", "sh", "-c",
                                  "nc -l -p 9000 > /dev/null"], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip()
            helper = None
            try:
                # nc listening before the first byte: a proxy accepts at once and would reset the
                # connection it cannot pass on (9000 = 0x2328 in /proc/net/tcp, tcp6)
                subprocess.run([*pyreg, "exec", cid, "sh", "-c",
                                "until cat /proc/net/tcp* | grep -q ':2328 '; do sleep 0.05; done"],
                               env=env, capture_output=True, check=True, timeout=60)
                if host is None:
                    addr = subprocess.run([*pyreg, "exec", cid, "ip", "-o", "-4", "addr", "show", "eth0"],
                                          env=env, capture_output=True, text=True, check=True).stdout
                    host = addr.split()[3].split("/")[0]
                if label == "docker-proxy":
                    # fd 3: where docker-proxy reports to dockerd (it closes fd 3, which would
                    # otherwise be its Go runtime's epoll fd)
                    helper = subprocess.Popen([*enter, "sh", "-c", 'exec "$@" 3>/dev/null', "sh",
                                               "docker-proxy", "-proto", "tcp", "-host-ip", "127.0.0.1",
                                               "-host-port", "19091", "-container-ip", host,
                                               "-container-port", "9000"])
                    host, port = "127.0.0.1", 19091
                out = subprocess.run([*enter, sys.executable, "-c", SENDER, host, str(port), str(mib)],
                                     capture_output=True, text=True, timeout=600)
                if out.returncode == 0:
                    got[label].append(float(out.stdout))
                else:
                    print(f"throughput {label}: failed {out.stderr[-300:]}")
            finally:
                if helper is not None:
                    helper.terminate()
                    helper.wait()
                subprocess.run([*pyreg, "rm", "-f", cid], env=env, capture_output=True)
    for label in paths:
        v = sorted(got[label])
        if v:
            print(f"throughput {label:22}: median {statistics.median(v):.0f} MiB/s "
                  f"(min {v[0]:.0f}, max {v[-1]:.0f}, {len(v)} runs of {mib} MiB)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mib", type=int, default=512, help="MiB sent per throughput run")
    ap.add_argument("--rounds", type=int, default=3, help="throughput runs per path")
    ap.add_argument("--only", choices=("startup", "throughput"), help="one of the two parts")
    ap.add_argument("--networks", default="none,bridge", help="start-up: these networks, compared "
                    "with the first (e.g. none,bridge,pasta,slirp4netns)")
    ap.add_argument("--base", metavar="REV", help="also time start-up of this git revision (git archive), "
                                                  "interleaved with the work tree's")
    args = ap.parse_args()
    ns = f"pyregbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    enter = ["nsenter", f"--net=/run/netns/{ns}"]
    subprocess.run([*enter, "ip", "link", "set", "lo", "up"], check=True)
    # a non-loopback address for -p through DNAT: a veth pair with both ends in the namespace
    subprocess.run([*enter, "ip", "-batch", "-"], check=True, text=True,
                   input=f"link add pxa type veth peer name pxb\naddr add {OTHER_ADDRESS}/24 dev pxa\n"
                         "link set pxa up\nlink set pxb up\n")
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            img, _ = build_image(tmp)
            env = pyreg_env(tmp, img)
            env.pop("PYREG_NETWORK", None)
            pyreg = [*enter, sys.executable, "-m", "pyreg"]
            pyreg_of, env_of = {"this": pyreg}, {"this": env}
            if args.base:
                base = tmp / "base"
                base.mkdir()
                archive = subprocess.run(["git", "-C", str(REPO), "archive", args.base], capture_output=True,
                                         check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
                pyreg_of = {"base": pyreg, **pyreg_of}
                env_of = {"base": {**env, "PYTHONPATH": str(base)}, **env_of}
            if args.only in (None, "startup"):
                _startup(pyreg_of, env_of, args.runs, tuple(args.networks.split(",")))
            if args.only in (None, "throughput"):
                _throughput(pyreg, enter, env, args.mib, args.rounds)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
        remove_bench_cgroups()
    return 0


if __name__ == "__main__":
    sys.exit(main())
