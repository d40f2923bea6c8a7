"""Client benchmark: ``pyreg pull``/``pyreg push`` against ``skopeo copy`` of the same images, in one run,
against the same registry (Debian's Distribution, a neutral peer), plus ``pyreg --help`` and
``pyreg images`` start-up.

    python bench/client_bench.py                  # five-layer + 512 MiB image, 3 runs each
    python bench/client_bench.py --big-mib 64 --runs 1 --json out.json
    python bench/client_bench.py --base main --rounds 9   # small commands: main vs this tree
    python bench/client_bench.py --base main --rounds 9 --bare   # the same, started as a wheel is

``--base REV`` measures the small, start-up-bound commands of two trees side by side in one run,
round by round alternating (``git archive REV`` vs the work tree; skopeo's copy as the yardstick):
``--help``, the pull of a present image, a fresh busybox pull, a five-layer pull and push. Wall
and CPU (user + system of the child, ``getrusage``) medians, with the min-max spread of the wall.
``--bare`` starts pyreg with ``python -S`` and site-packages on ``PYTHONPATH``: what a wheel
install costs without this machine's site-wide ``.pth`` hooks (~29 ms of every interpreter here).

Every measurement starts from a fresh registry (push) or a fresh local store / layout (pull), so
no tool gets a HEAD-skip or mount the other did not. ``pyreg pull`` is timed with and without
layer extraction (skopeo does not extract); the ratio that the issue's target (<= 1.0x) is about is
``pyreg pull --no-extract`` / ``skopeo copy docker:// oci:`` and ``pyreg push`` / ``skopeo copy oci:
docker://``. Medians are reported; the machine is shared, so look at the ratios.
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
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.peers import DistributionRegistry  # noqa: E402
from tests.images import build_five_layer_image, build_random_image  # noqa: E402


def lean_env() -> dict[str, str]:
    """The environment for the tools: no PYREG_ settings, and bytecode caching on (an installed
    pyreg has its .pyc files; PYTHONDONTWRITEBYTECODE would recompile every module every run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYREG_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


class Bench:
    def __init__(self, work: Path, runs: int) -> None:
        self.work = work
        self.runs = runs
        self.counter = 0
        self.skopeo_home = work / "skopeo"
        (self.skopeo_home / "tmp").mkdir(parents=True)
        self.policy = self.skopeo_home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        base = lean_env()
        self.skopeo_env = {**base, "HOME": str(self.skopeo_home), "TMPDIR": str(self.skopeo_home / "tmp")}
        self.pyreg_env = {**base, "PYTHONPATH": str(REPO), "PYREG_CONFIG": str(work / "none.json"),
                          "DOCKER_CONFIG": str(work / "docker"), "HOME": str(work / "home")}

    def fresh(self, name: str) -> Path:
        self.counter += 1
        path = self.work / f"{name}-{self.counter}"
        return path

    def registry(self) -> DistributionRegistry:
        d = self.fresh("registry")
        return DistributionRegistry(d / "root", d / "work").start()

    def skopeo(self, src: str, dest: str) -> None:
        run(["skopeo", "--policy", str(self.policy), "copy", "-q", "--src-tls-verify=false",
             "--dest-tls-verify=false", src, dest], self.skopeo_env)

    def pyreg(self, *args: str, store: Path | None = None) -> None:
        env = dict(self.pyreg_env)
        env["PYREG_STORE"] = str(store or self.fresh("store"))
        run([sys.executable, "-m", "pyreg", *args], env)

    def measure(self, label: str, setup: Callable[[], Callable[[], object]]) -> dict[str, object]:
        """``setup`` prepares fresh state and returns the timed action; teardown is not timed."""
        times = []
        for _ in range(self.runs):
            action = setup()
            times.append(timed(action))
            self.cleanup()
        result = {"label": label, "median_s": statistics.median(times), "runs_s": times}
        print(f"  {label:<44} {statistics.median(times):8.2f} s   runs: "
              + " ".join(f"{t:.2f}" for t in times), flush=True)
        return result

    def cleanup(self) -> None:
        for reg in getattr(self, "_registries", []):
            reg.stop()
            shutil.rmtree(reg.root, ignore_errors=True)
        self._registries: list[DistributionRegistry] = []
        for path in self.work.glob("store-*"):
            shutil.rmtree(path, ignore_errors=True)
        for path in self.work.glob("oci-*"):
            shutil.rmtree(path, ignore_errors=True)

    def started(self) -> DistributionRegistry:
        reg = self.registry()
        self._registries = [*getattr(self, "_registries", []), reg]
        return reg

    def image(self, name: str, layout: Path, tag: str) -> list[dict[str, object]]:
        results = []
        oci = f"oci:{layout}:{tag}"

        def push_skopeo() -> Callable[[], object]:
            reg = self.started()
            return lambda: self.skopeo(oci, f"docker://{reg.host}/bench/{name}:1")

        def push_pyreg() -> Callable[[], object]:
            reg = self.started()
            return lambda: self.pyreg("push", "-q", str(layout), f"{reg.host}/bench/{name}:1")

        def seeded() -> DistributionRegistry:
            reg = self.started()
            self.skopeo(oci, f"docker://{reg.host}/bench/{name}:1")
            return reg

        def pull_skopeo() -> Callable[[], object]:
            reg = seeded()
            dest = self.fresh("oci")
            return lambda: self.skopeo(f"docker://{reg.host}/bench/{name}:1", f"oci:{dest}:1")

        def pull_pyreg(extract: bool) -> Callable[[], Callable[[], object]]:
            def setup() -> Callable[[], object]:
                reg = seeded()
                store = self.fresh("store")
                extra = [] if extract else ["--no-extract"]
                return lambda: self.pyreg("pull", "-q", *extra, f"{reg.host}/bench/{name}:1", store=store)
            return setup

        print(f"{name}:", flush=True)
        results.append(self.measure(f"{name} push: skopeo copy oci: docker://", push_skopeo))
        results.append(self.measure(f"{name} push: pyreg push", push_pyreg))
        results.append(self.measure(f"{name} pull: skopeo copy docker:// oci:", pull_skopeo))
        results.append(self.measure(f"{name} pull: pyreg pull --no-extract", pull_pyreg(False)))
        results.append(self.measure(f"{name} pull: pyreg pull (with extraction)", pull_pyreg(True)))
        return results


def startup(runs: int, work: Path) -> list[dict[str, object]]:
    env = lean_env()
    env.update({"PYTHONPATH": str(REPO), "PYREG_STORE": str(work / "startup-store"),
                "PYREG_CONFIG": str(work / "none.json")})
    # the console script next to this interpreter (a pyenv shim would add its own start-up)
    entry = str(Path(sys.executable).parent / "pyreg") if (Path(sys.executable).parent / "pyreg").exists() \
        else shutil.which("pyreg")
    cases = [("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
             ("python -m pyreg --help", [sys.executable, "-m", "pyreg", "--help"]),
             ("python -m pyreg images", [sys.executable, "-m", "pyreg", "images"])]
    if entry:
        cases += [("pyreg --help (console script)", [entry, "--help"]),
                  ("pyreg images (console script)", [entry, "images"])]
    out = []
    print("start-up:", flush=True)
    for label, cmd in cases:
        subprocess.run(cmd, env=env, capture_output=True)  # warm the page cache
        action = partial(subprocess.run, cmd, env=env, capture_output=True, check=True)
        times, cpu = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            times.append(timed(action))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        med = statistics.median(times)
        print(f"  {label:<44} {med * 1000:8.0f} ms wall (min {min(times) * 1000:.0f}), "
              f"{statistics.median(cpu) * 1000:.0f} ms CPU", flush=True)
        out.append({"label": label, "median_s": med, "min_s": min(times), "cpu_s": statistics.median(cpu)})
    return out


def revisions(base: str, rounds: int, json_out: str | None, bare: bool = False) -> int:
    """``--base``: the small commands of ``base`` and of this tree, alternating round by round."""
    work = Path(tempfile.mkdtemp(prefix="pyreg-client-rev-"))
    trees = {"base": work / "tree-base", "head": REPO}
    trees["base"].mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", base], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(trees["base"])], input=archive, check=True)
    reg = DistributionRegistry(work / "registry" / "root", work / "registry" / "work").start()
    try:
        from tests.images import build_busybox_image

        busybox = build_busybox_image(work / "img-busybox")
        five = build_five_layer_image(work / "img-five")
        bench = Bench(work, 1)
        for image, name in ((busybox, "busybox"), (five, "five")):
            bench.skopeo(f"oci:{image.layout}:{image.tag}", f"docker://{reg.host}/bench/{name}:1")
        counter = iter(range(1_000_000))
        rows: dict[str, dict[str, list[tuple[float, float]]]] = {}

        def timed_cpu(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

        def pyreg(label: str, store: Path, *argv: str) -> tuple[float, float]:
            tree = trees[label]
            env = {**bench.pyreg_env, "PYTHONPATH": str(tree), "PYREG_STORE": str(store),
                   "PYTHONPYCACHEPREFIX": str(work / f"pycache-{label}")}
            if bare:  # no site: site-packages by hand, as a wheel's console script would find them
                import site

                env["PYTHONPATH"] = os.pathsep.join([str(tree), *site.getsitepackages()])
            # cwd too: ``python -m`` puts the working directory first on sys.path
            return timed_cpu([sys.executable, *(["-S"] if bare else []), "-m", "pyreg", *argv], env, tree)

        def skopeo(src: str, dest: str) -> tuple[float, float]:
            return timed_cpu(["skopeo", "--policy", str(bench.policy), "copy", "-q", "--src-tls-verify=false",
                              "--dest-tls-verify=false", src, dest], bench.skopeo_env)

        def add(row: str, who: str, value: tuple[float, float]) -> None:
            rows.setdefault(row, {}).setdefault(who, []).append(value)

        present = {label: work / f"present-{label}" for label in trees}
        for label in trees:
            pyreg(label, present[label], "pull", "-q", f"{reg.host}/bench/busybox:1")
            pyreg(label, present[label], "--help")  # byte-compile into the cache prefix
        for round_ in range(rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            n = next(counter)
            add("skopeo: fresh busybox pull (oci: layout)", "skopeo",
                skopeo(f"docker://{reg.host}/bench/busybox:1", f"oci:{work / f'oci-{n}'}:1"))
            add("skopeo: five-layer pull (oci: layout)", "skopeo",
                skopeo(f"docker://{reg.host}/bench/five:1", f"oci:{work / f'oci5-{n}'}:1"))
            add("skopeo: five-layer push (new repository)", "skopeo",
                skopeo(f"oci:{five.layout}:{five.tag}", f"docker://{reg.host}/bench/sk{n}:1"))
            floor = [sys.executable, *(["-S"] if bare else []), "-c", "pass"]
            add("python -c pass (interpreter floor)", "python", timed_cpu(floor, bench.pyreg_env))
            for label in order:
                store = work / f"store-{label}-{n}"
                add("pyreg --help", label, pyreg(label, present[label], "--help"))
                add("pull of a present image (busybox)", label,
                    pyreg(label, present[label], "pull", "-q", f"{reg.host}/bench/busybox:1"))
                add("fresh busybox pull --no-extract", label,
                    pyreg(label, store, "pull", "-q", "--no-extract", f"{reg.host}/bench/busybox:1"))
                add("fresh busybox pull (with extraction)", label,
                    pyreg(label, work / f"store-x-{label}-{n}", "pull", "-q", f"{reg.host}/bench/busybox:1"))
                add("five-layer pull --no-extract", label,
                    pyreg(label, work / f"store-5-{label}-{n}", "pull", "-q", "--no-extract",
                          f"{reg.host}/bench/five:1"))
                add("five-layer push (new repository)", label,
                    pyreg(label, store, "push", "-q", str(five.layout), f"{reg.host}/bench/{label}{n}:1"))
            for path in work.glob("store-*"):
                shutil.rmtree(path, ignore_errors=True)
            for path in work.glob("oci*-*"):
                shutil.rmtree(path, ignore_errors=True)
        print(f"{'median of ' + str(rounds) + ' rounds, ms':<44} {'base wall':>10} {'base CPU':>9} "
              f"{'head wall':>10} {'head CPU':>9}  head wall spread")
        out = []
        for row, by in rows.items():
            cells = []
            for who in ("base", "head") if "base" in by else list(by):
                walls = [w for w, _ in by[who]]
                cpus = [c for _, c in by[who]]
                cells.append((statistics.median(walls) * 1000, statistics.median(cpus) * 1000,
                              min(walls) * 1000, max(walls) * 1000))
            text = " ".join(f"{w:10.0f} {c:9.0f}" for w, c, _, _ in cells)
            spread = f"{cells[-1][2]:.0f}-{cells[-1][3]:.0f}"
            print(f"{row:<44} {text}  {spread}", flush=True)
            out.append({"row": row, **{who: by[who] for who in by}})
        # each round's pyreg wall over the same round's skopeo wall: a busy moment of the shared
        # machine hits both sides of a ratio, so these move less than a ratio of two medians
        yardsticks = {"fresh busybox pull --no-extract": "skopeo: fresh busybox pull (oci: layout)",
                      "five-layer pull --no-extract": "skopeo: five-layer pull (oci: layout)",
                      "five-layer push (new repository)": "skopeo: five-layer push (new repository)"}
        for row, stick in yardsticks.items():
            sk = [w for w, _ in rows[stick]["skopeo"]]
            texts: list[str] = []
            for who in ("base", "head"):
                ratios = [w / s for (w, _), s in zip(rows[row][who], sk, strict=True)]
                texts.append(f"{who} {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")
            print(f"{'per-round x skopeo: ' + row:<44} {'  '.join(texts)}", flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        if json_out:
            Path(json_out).write_text(json.dumps(out, indent=2))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="compare the small commands of this git revision with the work tree")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of --base (default 9)")
    parser.add_argument("--bare", action="store_true", help="--base with python -S (a wheel's start-up)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    if args.base:
        return revisions(args.base, args.rounds, args.json, args.bare)
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="pyreg-client-bench-") as tmp:
        work = Path(tmp)
        results["startup"] = startup(args.startup_runs, work)
        bench = Bench(work, args.runs)
        five = work / "images" / "five"
        build_five_layer_image(five)
        results["five-layer"] = bench.image("five-layer", five, "latest")
        if not args.skip_big:
            big = work / "images" / "big"
            print(f"building the {args.big_mib} MiB image...", flush=True)
            build_random_image(big, args.big_mib << 20, name="big")
            results[f"big-{args.big_mib}mib"] = bench.image(f"big-{args.big_mib}mib", big, "latest")
        bench.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
