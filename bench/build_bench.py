"""``pyreg build`` vs ``docker build`` (classic builder) vs ``buildah bud``: a 10-step Dockerfile,
cold (empty cache) and fully cached, wall time of the command, median of the rounds.

    python bench/build_bench.py               # 5 rounds
    python bench/build_bench.py --rounds 1    # a quick check of the setup
    python bench/build_bench.py --hello       # examples/hello, warm cache, pyreg vs docker classic
    python bench/build_bench.py --hello --baseline /tmp/old   # and an older pyreg checkout beside
    python bench/build_bench.py --hello --copy-mib 256        # plus a COPY of a 256 MiB file

``--hello`` builds the repository's ``examples/hello`` (``FROM busybox``: the test suite's busybox
image, put in pyreg's store and ``docker load``-ed from ``pyreg save``) once with each builder to
warm its cache, then times the fully cached rebuild, the two builders interleaved (the order
rotated every round, so the machine's load falls on both alike): median and best wall time, and
CPU time (user + system of the command; for docker, the CLI's and dockerd's, which does the work).

Needs root, Debian's buildah and docker.io (``tests/run`` installs them). Everything lives under
one temporary directory: pyreg's store and run root, buildah's vfs root (chroot isolation, with
``--layers`` so it caches), and a dockerd of its own (its own data root, exec root and socket, vfs
storage, no iptables, no bridge), stopped at the end, driven by Debian's docker CLI 20.10 with
its classic builder and with BuildKit (``DOCKER_BUILDKIT=1``). The Dockerfile starts
``FROM scratch`` + a static busybox, so no builder pulls anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Debian's docker.io CLI (20.10) drives the daemon's BuildKit itself; a newer CLI wants buildx
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
sys.path.insert(0, str(REPO))

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV APP=/app
WORKDIR /app
COPY a.txt .
RUN echo one > one && mkdir -p /var/lib/x && echo state > /var/lib/x/state
RUN echo two > two && rm /app/a.txt
LABEL org.example.bench=1
USER 1000
CMD ["cat", "/app/one"]
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.monotonic() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{r.stderr[-2000:]}")
    return took


def timed_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and the command's CPU time (user + system, its children included)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = timed(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds a running process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_dockerd(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A dockerd of its own under ``root`` (vfs, no iptables, no bridge) and the CLI's environment."""
    short = Path(tempfile.mkdtemp(prefix="pyreg-bb-"))
    sock = short / "d.sock"
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "docker"), "--exec-root", str(short / "exec"),
         "-H", f"unix://{sock}", "--pidfile", str(short / "pid"), "--iptables=false", "--bridge=none",
         "--storage-driver", "vfs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    denv = {**env, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0",
            "DOCKER_CONFIG": str(root / "docker-config")}
    deadline = time.monotonic() + 60
    while subprocess.run([DOCKER, "version"], env=denv, capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.terminate()
            raise SystemExit("dockerd did not start")
        time.sleep(0.2)
    return proc, denv


def hello(rounds: int, baseline: Path | None, copy_mib: int = 0) -> None:
    """examples/hello rebuilt with a warm cache: pyreg vs docker's classic builder, interleaved;
    with ``baseline`` (another pyreg checkout, e.g. ``git worktree``/``git archive`` of an older
    commit) that one too, on a store of its own."""
    import json

    from tests.images import build_busybox_image

    root = Path(tempfile.mkdtemp(prefix="pyreg-bench-hello-"))
    ctx = REPO / "examples" / "hello"
    if copy_mib:  # examples/hello plus a COPY of a big file: what re-reading the context costs
        ctx = Path(shutil.copytree(ctx, root / "ctx"))
        with open(ctx / "big.bin", "wb") as f:
            for _ in range(copy_mib):
                f.write(os.urandom(1 << 20))
        with open(ctx / "Dockerfile", "a") as f:
            f.write("COPY big.bin /big.bin\n")
        time.sleep(2.1)  # older than pyreg's racy window (runtime/build/hashcache.py), as a checkout is
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYREG_CGROUP_PARENT": "pyreg-build-bench",
           "PYREG_NETWORK": "none", "PYREG_STORE": str(root / "store"), "PYREG_RUN_ROOT": str(root / "run"),
           "PYREG_REGISTRY": "localhost:5000"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed pyreg has its .pyc files
    dockerd = None
    pyregs = {"pyreg": env}
    if baseline is not None:
        pyregs["pyreg baseline"] = {**env, "PYTHONPATH": str(baseline), "PYREG_STORE": str(root / "store-b"),
                                    "PYREG_RUN_ROOT": str(root / "run-b")}
    # ``python -m`` looks in the working directory first: run each pyreg from one that has none
    here = os.getcwd()
    os.chdir(root)
    walls: dict[str, list[float]] = {name: [] for name in [*pyregs, "docker"]}
    cpu: dict[str, list[float]] = {name: [] for name in walls}
    try:
        image = build_busybox_image(root / "layout")
        from pyreg.storage import mediatypes
        from pyreg.storage.localstore import LocalStore
        from pyreg.storage.reference import parse

        media_type = json.loads(image.manifest).get("mediaType") or mediatypes.OCI_MANIFEST
        for e in pyregs.values():
            os.environ.update({k: e[k] for k in ("PYREG_STORE", "PYREG_REGISTRY")})
            store = LocalStore(Path(e["PYREG_STORE"]))
            for digest in [*image.blob_digests, image.manifest_digest]:
                store.put_blob_file(image.blob_path(digest), digest)
            store.tag(str(parse("busybox")), image.manifest_digest, media_type, len(image.manifest))
        pyreg = [sys.executable, "-m", "pyreg", "build", "-q", "-t", "hello", str(ctx)]
        subprocess.run([sys.executable, "-m", "pyreg", "save", "-o", str(root / "busybox.tar"), "busybox"],
                       env=env, check=True, capture_output=True)
        dockerd, denv = start_dockerd(root, env)
        loaded = subprocess.run([DOCKER, "load", "-i", str(root / "busybox.tar")], env=denv, check=True,
                                capture_output=True, text=True).stdout
        name = loaded.strip().splitlines()[-1].split(": ", 1)[1]
        subprocess.run([DOCKER, "tag", name, "busybox:latest"], env=denv, check=True, capture_output=True)
        docker = [DOCKER, "build", "-q", "--network", "none", "-t", "hello", str(ctx)]
        for e in pyregs.values():  # warm every cache
            timed(pyreg, e)
        timed(docker, denv)
        names = list(walls)
        for rnd in range(rounds):
            for who in names[rnd % len(names):] + names[:rnd % len(names)]:  # each goes first in turn
                if who in pyregs:
                    took, used = timed_cpu(pyreg, pyregs[who])
                else:
                    assert dockerd is not None
                    daemon = _proc_cpu(dockerd.pid)
                    took, used = timed_cpu(docker, denv)  # the CLI's
                    used += _proc_cpu(dockerd.pid) - daemon  # and the daemon's, which does the build
                cpu[who].append(used)
                walls[who].append(took)
    finally:
        os.chdir(here)
        if dockerd is not None:
            dockerd.terminate()
            dockerd.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        with_cg = Path("/sys/fs/cgroup/pyreg-build-bench")
        if with_cg.is_dir():
            with_cg.rmdir()
    extra = f" + COPY of a {copy_mib} MiB file" if copy_mib else ""
    print(f"examples/hello{extra}, cached rebuild, {rounds} interleaved rounds")
    print(f"{'builder':15} {'median s':>9} {'best s':>8} {'CPU median s':>13}")
    for who, w in walls.items():
        print(f"{who:15} {statistics.median(w):9.3f} {min(w):8.3f} {statistics.median(cpu[who]):13.3f}")
    print("CPU: user + system of the command; docker's includes dockerd's (its threads, not containerd's)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hello", action="store_true", help="examples/hello's cached rebuild vs docker classic")
    ap.add_argument("--baseline", type=Path, help="with --hello: another pyreg checkout to time beside")
    ap.add_argument("--copy-mib", type=int, default=0, help="with --hello: add a COPY of a file this big")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    if args.hello:
        return hello(args.rounds, args.baseline, args.copy_mib)
    from tests.images import BUSYBOX

    root = Path(tempfile.mkdtemp(prefix="pyreg-build-bench-"))
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "a.txt").write_text("a\n")
    shutil.copy(BUSYBOX, ctx / "busybox")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYREG_CGROUP_PARENT": "pyreg-build-bench",
           "PYREG_NETWORK": "none"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed pyreg has its .pyc files
    dockerd = None
    results: dict[str, dict[str, list[float]]] = {}
    try:
        def pyreg(n: int) -> tuple[list[str], dict[str, str]]:
            e = {**env, "PYREG_STORE": str(root / f"pyreg-{n}" / "store"),
                 "PYREG_RUN_ROOT": str(root / f"pyreg-{n}" / "run")}
            return [sys.executable, "-m", "pyreg", "build", "-q", "-t", "bench", str(ctx)], e

        def buildah(n: int) -> tuple[list[str], dict[str, str]]:
            home = root / f"bh-{n}"
            return ["buildah", "--root", str(home / "root"), "--runroot", str(home / "run"),
                    "--storage-driver", "vfs", "bud", "--isolation", "chroot", "--layers", "-q",
                    "-t", "bench", str(ctx)], env

        builders = {"pyreg": pyreg}
        if shutil.which("buildah"):
            builders["buildah"] = buildah
        if shutil.which("dockerd") and shutil.which(DOCKER):
            short = Path(tempfile.mkdtemp(prefix="pyreg-bb-"))
            sock = short / "d.sock"
            dockerd = subprocess.Popen(
                ["dockerd", "--data-root", str(root / "docker"), "--exec-root", str(short / "exec"),
                 "-H", f"unix://{sock}", "--pidfile", str(short / "pid"), "--iptables=false", "--bridge=none",
                 "--storage-driver", "vfs"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            denv = {**env, "DOCKER_HOST": f"unix://{sock}", "DOCKER_BUILDKIT": "0",
                    "DOCKER_CONFIG": str(root / "docker-config")}
            deadline = time.monotonic() + 60
            while subprocess.run([DOCKER, "version"], env=denv, capture_output=True).returncode != 0:
                if time.monotonic() > deadline:
                    raise SystemExit("dockerd did not start")
                time.sleep(0.2)

            def docker(n: int) -> tuple[list[str], dict[str, str]]:
                return [DOCKER, "build", "-q", "--network", "none", "-t", f"bench{n}", str(ctx)], denv

            def buildkit(n: int) -> tuple[list[str], dict[str, str]]:
                return ([DOCKER, "build", "-q", "--network", "none", "-t", f"bk{n}", str(ctx)],
                        {**denv, "DOCKER_BUILDKIT": "1"})

            builders["docker"] = docker
            if DOCKER == "/usr/bin/docker":
                builders["buildkit"] = buildkit
        for rnd in range(args.rounds):
            for name, make in builders.items():
                cmd, e = make(rnd)
                # one dockerd for all rounds: its cold build is --no-cache (the others get new roots)
                daemon = name in ("docker", "buildkit")
                cold = timed([*cmd[:2], "--no-cache", *cmd[2:]] if daemon else cmd, e)
                cached = timed(cmd, e)
                r = results.setdefault(name, {"cold": [], "cached": []})
                r["cold"].append(cold)
                r["cached"].append(cached)
    finally:
        if dockerd is not None:
            dockerd.terminate()
            dockerd.wait(timeout=60)
        subprocess.run(["rm", "-rf", str(root)], check=False)
        with_cg = Path("/sys/fs/cgroup/pyreg-build-bench")
        if with_cg.is_dir():
            with_cg.rmdir()
    print(f"{'builder':10} {'cold s':>8} {'cached s':>9}   (median of {args.rounds})")
    for name, r in results.items():
        print(f"{name:10} {statistics.median(r['cold']):8.3f} {statistics.median(r['cached']):9.3f}")


if __name__ == "__main__":
    main()
