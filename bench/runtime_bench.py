#!/usr/bin/env python3
"""Container start-up: ``pyreg run --rm busybox true`` vs ``runc run`` vs ``podman run --rm``.

All three run the same rootfs (the busybox test image of tests/images.py, built from Debian's
busybox-static) in one invocation, so they share the machine's load. Each is run ``--runs`` times
after a warm-up; the minimum and median wall times are printed as a Markdown table, with the
interpreter's own start-up (``python -c pass`` and ``python -S -c pass``) as a floor reference.

    sudo python3 bench/runtime_bench.py [--runs 30]
    sudo python3 bench/runtime_bench.py --runs 30 --interleave --pyreg V-base/bin/pyreg --pyreg V/bin/pyreg
    sudo python3 bench/runtime_bench.py --quiet-start 80 --runs 30 --interleave --pyreg …  # in a quiet moment

With ``--interleave`` the installed pyregs (``--pyreg``, each a regular install's console script),
the bare interpreter of the first one's venv and runc run in turn, one run of each per round, so
load from elsewhere on a shared machine hits them alike; only that table is printed.

Everything (the pyreg store and run root, runc's bundle and state, podman's storage) lives in a
temporary directory that is removed at the end. Needs root. A tool that fails is reported with
its error instead of a time.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, wall times, CPU times, error): CPU is user+sys of the command and everything it waited
# for (children's rusage, and what it left running: reap_orphans), steadier than wall time on
# this shared machine
Result = tuple[str, list[float], list[float], "str | None"]
# cgroup parents of this run only: other benchmarks (network_bench.py's containers) may be running
CGROUP_PARENT = f"pyreg-bench-{os.getpid()}"


def reap_orphans() -> None:
    """Wait for what a command left running (``run --rm``'s keeper finishes the removal after the
    exit status is told): this process is their subreaper (``main``), so their CPU time joins
    the command's in RUSAGE_CHILDREN, and none of it runs into the next command's time."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def become_subreaper() -> None:
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def cpu_idle(seconds: float = 3.0) -> float:
    """Percent of the CPUs' time spent idle (or waiting for I/O) over ``seconds``, from /proc/stat."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(percent: float, timeout: float) -> str:
    """Wait until the CPUs were at least ``percent`` idle over 3 s (on a machine shared with other
    work, a run started in a busy moment measures mostly the others); what was found."""
    deadline = time.monotonic() + timeout
    while True:
        idle = cpu_idle()
        if idle >= percent or time.monotonic() > deadline:
            late = "" if idle >= percent else " (gave up waiting)"
            return f"{idle:.0f}% idle over 3 s before the start{late}"


def timed(cmd: list[str], runs: int,
          env: dict[str, str] | None = None) -> tuple[list[float], list[float], str | None]:
    """Wall and CPU times of ``runs`` runs after one warm-up; (times, cpu, None) or ([], [], error)."""
    times: list[float] = []
    cpu: list[float] = []
    for i in range(runs + 1):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        reap_orphans()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            return [], [], f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
        if i:
            times.append(dt)
            cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return times, cpu, None


def timed_interleaved(cmds: list[tuple[str, list[str], dict[str, str] | None]], runs: int) -> list[Result]:
    """``timed`` for several commands at once: round by round, one run of each (after one
    warm-up round), so that the machine's load moves them alike."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in cmds}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in cmds}
    errors: dict[str, str] = {}
    for i in range(runs + 1):
        for name, cmd, env in cmds:
            if name in errors:
                continue
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            reap_orphans()
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                errors[name] = f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
            elif i:
                times[name].append(dt)
                cpu[name].append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return [(name, [], [], errors[name]) if name in errors else (name, times[name], cpu[name], None)
            for name, _, _ in cmds]


def build_image(tmp: Path) -> tuple[Any, Path]:
    from pyreg.runtime.extract import extract_layer
    from tests import images

    img = images.build_busybox_image(tmp / "layout")
    rootfs = tmp / "rootfs"
    for layer in img.layers:
        extract_layer(img.blob_path(layer.digest), rootfs, whiteouts="apply")
    return img, rootfs


def pyreg_env(tmp: Path, img: Any) -> dict[str, str]:
    env = {**os.environ, "PYREG_STORE": str(tmp / "store"), "PYREG_RUN_ROOT": str(tmp / "run"),
           "PYREG_REGISTRY": "registry.invalid:5000", "PYREG_CONFIG": str(tmp / "config.json"),
           "PYREG_CGROUP_PARENT": CGROUP_PARENT, "PYTHONPATH": str(REPO),
           # not root's default (bridge: pyreg0 and NAT in the host's namespace); network_bench.py
           # times bridge in a namespace of its own
           "PYREG_NETWORK": os.environ.get("PYREG_NETWORK") or "none",
           # byte-compiled modules as an installed pyreg has them, kept out of the work tree
           "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from pyreg.storage.localstore import LocalStore
        from pyreg.storage.reference import parse

        store = LocalStore(tmp / "store")
        for digest in [*img.blob_digests, img.manifest_digest]:
            store.put_blob_file(img.blob_path(digest), digest)
        store.tag(str(parse("busybox")), img.manifest_digest, "application/vnd.oci.image.manifest.v1+json",
                  len(img.manifest))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return env


def runc_result(tmp: Path, rootfs: Path, runs: int) -> Result:
    return ("runc run (same rootfs)", *timed(runc_command(tmp, rootfs), runs))


def runc_command(tmp: Path, rootfs: Path) -> list[str]:
    """``runc run`` of an OCI bundle made from ``rootfs`` (copied), as pyreg runs it: no terminal,
    a writable root, ``true``, in a cgroup of this benchmark."""
    bundle = tmp / "bundle"
    bundle.mkdir()
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    spec["root"]["readonly"] = False
    spec["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}-runc"
    (bundle / "config.json").write_text(json.dumps(spec))
    return ["runc", "--root", str(tmp / "runc-state"), "run", "--bundle", str(bundle), "bench"]


def podman_result(tmp: Path, runs: int) -> Result:
    """podman with every setting in a temp dir (the tests' wrapper): vfs storage, cgroupfs."""
    from tests.fixtures.peers import Podman

    podman = Podman(tmp / "podman-home")
    try:
        pulled = podman.run("pull", "-q", f"oci:{tmp / 'layout'}:latest", check=False)
        if pulled.returncode != 0:
            return "podman run --rm", [], [], f"pull failed: {pulled.stderr.strip()[-300:]}"
        image_id = pulled.stdout.strip().splitlines()[-1]
        cmd = ["podman", *podman.global_args(), "run", "--rm", "--network", "none", image_id, "true"]
        return ("podman run --rm --network none", *timed(cmd, runs, env=podman.env()))
    finally:
        podman.run("system", "reset", "--force", check=False)
        podman.close()


def remove_bench_cgroups() -> None:
    """This run's parents in every hierarchy (v1 ones, cpuacct too where it is mounted apart
    from cpu, and v2's root)."""
    base = "/sys/fs/cgroup"
    roots = [base] + [os.path.join(base, d) for d in sorted(os.listdir(base))
                      if os.path.isdir(os.path.join(base, d)) and not os.path.islink(os.path.join(base, d))]
    for root in roots:
        for name in (CGROUP_PARENT, f"{CGROUP_PARENT}-runc"):
            p = os.path.join(root, name)
            if os.path.isdir(p):
                for sub in os.listdir(p):
                    if os.path.isdir(os.path.join(p, sub)):
                        os.rmdir(os.path.join(p, sub))
                os.rmdir(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--pyreg", action="append", default=[], metavar="PATH",
                    help="also time this pyreg console script, e.g. a regular install's "
                         "(python -m venv V && V/bin/pip install .); repeatable")
    ap.add_argument("--interleave", action="store_true",
                    help="time only the --pyreg installs, their venv's bare python and runc, in turn")
    ap.add_argument("--quiet-start", type=float, default=0, metavar="PERCENT",
                    help="first wait (up to --quiet-wait seconds) for the CPUs to be this idle over 3 s")
    ap.add_argument("--quiet-wait", type=float, default=900, metavar="SECONDS")
    args = ap.parse_args()
    if args.interleave and not args.pyreg:
        ap.error("--interleave needs at least one --pyreg")
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    become_subreaper()
    # a name podman accepts as an image name (no "__" from mkdtemp's random suffix)
    tmp = Path(tempfile.gettempdir()) / f"pyreg-rtbench-{os.getpid()}"
    tmp.mkdir(mode=0o700)
    results: list[Result] = []
    try:
        img, rootfs = build_image(tmp)
        env = pyreg_env(tmp, img)
        if args.quiet_start:
            print(wait_quiet(args.quiet_start, args.quiet_wait))
        if args.interleave:
            results = interleaved(tmp, rootfs, env, args.pyreg, args.runs)
            return report(results, args.runs)
        py = sys.executable
        results.append(("python -c pass (interpreter + site floor)", *timed([py, "-c", "pass"], args.runs)))
        results.append(("python -S -c pass (no site)", *timed([py, "-S", "-c", "pass"], args.runs)))
        script = shutil.which("pyreg", path=os.path.dirname(py))  # the console script, not a shim
        entry = [script] if script else [py, "-m", "pyreg"]
        results.append(("pyreg --help", *timed([*entry, "--help"], args.runs, env=env)))
        subprocess.run([*entry, "run", "--rm", "busybox", "true"], env=env, capture_output=True)  # cache
        results.append(("pyreg run --rm busybox true",
                        *timed([*entry, "run", "--rm", "busybox", "true"], args.runs, env=env)))
        # the same without site's .pth imports (this machine's site adds ~30 ms to every python):
        # what pyreg itself costs; the run path needs nothing from site-packages once cached
        results.append(("python -S -m pyreg run --rm busybox true (no site)",
                        *timed([py, "-S", "-m", "pyreg", "run", "--rm", "busybox", "true"], args.runs,
                               env=env)))
        for other in args.pyreg:  # an installed pyreg: its own modules and .pyc, not this tree's
            installed = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")}
            subprocess.run([other, "run", "--rm", "busybox", "true"], env=installed, capture_output=True)
            results.append((f"{other} run --rm busybox true",
                            *timed([other, "run", "--rm", "busybox", "true"], args.runs, env=installed)))
        results.append(("pyreg run --rm --network host busybox true",
                        *timed([*entry, "run", "--rm", "--network", "host", "busybox", "true"], args.runs,
                               env=env)))
        if shutil.which("runc"):
            results.append(runc_result(tmp, rootfs, args.runs))
        if shutil.which("podman"):
            results.append(podman_result(tmp, args.runs))
    finally:
        remove_bench_cgroups()
        shutil.rmtree(tmp, ignore_errors=True)
    return report(results, args.runs)


def interleaved(tmp: Path, rootfs: Path, env: dict[str, str], installs: list[str], runs: int) -> list[Result]:
    """The installs as a user runs them (their own modules and byte code, not this tree's)."""
    installed = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")}
    venv_python = os.path.join(os.path.dirname(installs[0]), "python")
    cmds: list[tuple[str, list[str], dict[str, str] | None]] = [
        (f"{venv_python} -c pass (the venv's interpreter)", [venv_python, "-c", "pass"], installed)]
    for other in installs:
        cmds.append((f"{other} run --rm busybox true", [other, "run", "--rm", "busybox", "true"], installed))
    if shutil.which("runc"):
        cmds.append(("runc run (same rootfs)", runc_command(tmp, rootfs), None))
    return timed_interleaved(cmds, runs)


def report(results: list[Result], runs: int) -> int:
    load = os.getloadavg()[0]
    print(f"\n{runs} runs each, load average {load:.1f} on {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| command | min ms | median ms | quartiles ms | CPU median ms | CPU quartiles ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, times, cpu, err in results:
        if err:
            print(f"| {name} | failed | {err.replace('|', '/').replace(chr(10), ' ')} | | | |")
        else:
            q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
            c = statistics.quantiles(cpu, n=4) if len(cpu) > 1 else [cpu[0]] * 3
            print(f"| {name} | {min(times) * 1000:.1f} | {statistics.median(times) * 1000:.1f} "
                  f"| {q[0] * 1000:.0f}-{q[2] * 1000:.0f} | {statistics.median(cpu) * 1000:.1f} "
                  f"| {c[0] * 1000:.1f}-{c[2] * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
