"""``pyreg pull`` before and after a change, in one run: a fresh busybox pull (new store, layers
extracted), a pull of an image the store already has, and a push that the registry mounts from
another repository — each tree's runs interleaved, against one Debian ``docker-registry``.

    python bench/graph_copy_bench.py --before /tmp/old-tree            # this tree is "after"
    python bench/graph_copy_bench.py --before /tmp/old --runs 15 --json out.json

``--before`` is another checkout of pyreg (``git archive REV | tar -x -C DIR``). Wall time of
the whole command, medians; the machine is shared, so compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.client_bench import lean_env, run, timed  # noqa: E402
from tests.fixtures.peers import DistributionRegistry  # noqa: E402
from tests.images import build_busybox_image  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a checkout of the code to compare with")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    trees = {"before": Path(args.before).resolve(), "after": REPO}
    work = Path(tempfile.mkdtemp(prefix="pyreg-graph-bench-"))
    reg = DistributionRegistry(work / "registry" / "root", work / "registry" / "work").start()
    try:
        image = build_busybox_image(work / "busybox")
        env0 = lean_env()
        policy = work / "policy.json"
        policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        run(["skopeo", "--policy", str(policy), "copy", "-q", "--dest-tls-verify=false",
             f"oci:{image.layout}:{image.tag}", f"docker://{reg.host}/bench/busybox:1"],
            {**env0, "HOME": str(work)})
        ref = f"{reg.host}/bench/busybox:1"
        counter = iter(range(1_000_000))

        def pyreg(tree: Path, store: Path, *argv: str) -> Callable[[], object]:
            env = {**env0, "PYTHONPATH": str(tree), "PYREG_STORE": str(store),
                   "PYREG_CONFIG": str(work / "none.json"), "HOME": str(work / "home")}
            # cwd too: ``python -m`` puts the working directory first on sys.path
            return lambda: subprocess.run([sys.executable, "-m", "pyreg", *argv], env=env, cwd=tree,
                                          check=True, capture_output=True)

        def fresh_pull(tree: Path) -> float:
            store = work / f"store-{next(counter)}"
            t = timed(pyreg(tree, store, "pull", "-q", ref))
            shutil.rmtree(store, ignore_errors=True)
            return t

        present = {name: work / f"present-{name}" for name in trees}
        for name, tree in trees.items():
            pyreg(tree, present[name], "pull", "-q", ref)()

        def present_pull(tree: Path, name: str) -> float:
            return timed(pyreg(tree, present[name], "pull", "-q", ref))

        def mounted_push(tree: Path, name: str) -> float:
            return timed(pyreg(tree, present[name], "push", "-q", ref,
                               f"{reg.host}/bench/copy-{name}-{next(counter)}:1"))

        rows: dict[str, dict[str, list[float]]] = {}
        for _ in range(args.runs):
            for name, tree in trees.items():  # interleaved: both see the same machine load
                rows.setdefault("fresh busybox pull (with extraction)", {}).setdefault(name, []).append(
                    fresh_pull(tree))
                rows.setdefault("pull of a present image", {}).setdefault(name, []).append(
                    present_pull(tree, name))
                rows.setdefault("push to a new repository (mounts)", {}).setdefault(name, []).append(
                    mounted_push(tree, name))
        print(f"{'measurement':<40} {'before':>9} {'after':>9}  (median of {args.runs}, wall s)")
        out = []
        for label, by_tree in rows.items():
            b, a = statistics.median(by_tree["before"]), statistics.median(by_tree["after"])
            print(f"{label:<40} {b:9.3f} {a:9.3f}")
            out.append({"label": label, "before_s": by_tree["before"], "after_s": by_tree["after"]})
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
