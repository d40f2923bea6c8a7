#!/usr/bin/env python3
"""The web UI's list pages on a big registry: server time of the one request each page makes.

    python bench/ui_bench.py            # 10,000 repositories, one with 1,000 tags; 20 rounds
    python bench/ui_bench.py --quick    # 1,000 repositories, 5 rounds: checks the script works

Content is written straight into the registry:2 layout (tests/test_ui.py's seeding), then one
``pyreg serve`` with ``ui.enabled`` on a free loopback port answers, one request at a time:
the first repository page, a search, page 100, and the first page of the 1,000-tag repository.
Reported: the first (cold: the repository walk) and the median of the rest, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.fixtures.registry import free_port  # noqa: E402
from tests.test_ui import V2, seed_image, seed_tags  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repos, rounds = (1_000, 5) if args.quick else (10_000, 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        digest, _ = seed_image(root)
        for i in range(repos):
            name = f"org{i // 100:03d}/repo{i % 100:03d}"
            tag = root / V2 / "repositories" / name / "_manifests/tags/latest/current"
            tag.mkdir(parents=True)
            (tag / "link").write_text(digest)
        seed_tags(root, "big/tags", digest, [f"v{i:04d}" for i in range(1000)])
        port = free_port()
        config = Path(tmp) / "config.yml"
        config.write_text(f"addr: 127.0.0.1:{port}\nstorage: {{filesystem: {{rootdirectory: {root}}}}}\n"
                          "ui: {enabled: true}\nlog: {level: warning, accesslog: {disabled: true}}\n")
        server = subprocess.Popen([sys.executable, "-m", "pyreg", "serve", "--config", str(config)],
                                  cwd=REPO_ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(base + "/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            pages = {"repositories p1": "/ui/api/repositories",
                     "search 'repo042'": "/ui/api/repositories?q=repo042",
                     "repositories p100": "/ui/api/repositories?page=100",
                     "1,000 tags p1": "/ui/api/tags?name=big/tags"}
            print(f"{repos:,} repositories, one with 1,000 tags; {rounds} rounds")
            with httpx.Client(base_url=base) as client:
                for name, path in pages.items():
                    times = []
                    for _ in range(rounds):
                        start = time.perf_counter()
                        client.get(path).raise_for_status()
                        times.append((time.perf_counter() - start) * 1000)
                        time.sleep(0.01)
                    median = statistics.median(times[1:])
                    print(f"  {name:20s} first {times[0]:7.1f} ms   median {median:7.1f} ms")
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
