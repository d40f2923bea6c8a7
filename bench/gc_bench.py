"""Garbage collection: ``pyreg gc`` vs Distribution's ``garbage-collect`` on the same store.

Builds a filesystem store in Distribution's layout (``--repos`` repositories with ``--images``
tagged images each, small blobs: GC cost is metadata, not bytes), deletes one image per repository
so that its manifest, config and layer become garbage, copies the store, and times each collector
on its own copy: Debian's ``docker-registry garbage-collect`` (needs the server stopped) and
``pyreg gc --grace 0 --settle 0`` (safe beside a live server; no settle wait here). Both must free
the same blobs.

    python bench/gc_bench.py                     # 200 repositories x 5 images
    python bench/gc_bench.py --repos 1000 --images 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyreg.registry.layout import Layout  # noqa: E402
from pyreg.storage.digest import Digest  # noqa: E402
from pyreg.storage.filesystem import FilesystemDriver  # noqa: E402
from pyreg.storage.manifest import parse_manifest  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def build(root: Path, repos: int, images: int) -> set[str]:
    """Write the store; returns the digests that deleting one image per repository made garbage."""
    layout = Layout(FilesystemDriver(str(root)), cache_ttl=0)
    garbage: set[str] = set()
    for r in range(repos):
        name = f"team{r % 10}/app{r}"
        for i in range(images):
            config = json.dumps({"repo": r, "image": i}).encode()
            layer = f"layer {r} {i}".encode() * 10
            descs = []
            for blob in (config, layer):
                d = Digest.of(blob)
                await layout.put_blob_bytes(d, blob)
                await layout.link_blob(name, d)
                descs.append({"mediaType": "application/octet-stream", "digest": str(d), "size": len(blob)})
            config_desc = {**descs[0], "mediaType": "application/vnd.oci.image.config.v1+json"}
            layer_desc = {**descs[1], "mediaType": "application/vnd.oci.image.layer.v1.tar"}
            body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                               "layers": [layer_desc]}).encode()
            digest = Digest.of(body)
            await layout.put_manifest(name, digest, body, parse_manifest(body))
            await layout.tag(name, f"v{i}", digest)
            if i == 0:
                await layout.delete_manifest(name, digest)
                garbage |= {str(digest), descs[0]["digest"], descs[1]["digest"]}
    return garbage


def distribution_gc(root: Path, work: Path) -> tuple[float, str]:
    config = work / "dist.yml"
    config.write_text(json.dumps({"version": 0.1, "log": {"level": "error"},
                                  "storage": {"filesystem": {"rootdirectory": str(root)}},
                                  "http": {"addr": "127.0.0.1:0"}}))
    start = time.perf_counter()
    out = subprocess.run(["docker-registry", "garbage-collect", str(config)], capture_output=True, text=True,
                         check=True)
    return time.perf_counter() - start, out.stdout + out.stderr


def pyreg_gc(root: Path) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pyreg", "gc", "--data-dir", str(root), "--grace", "0",
                          "--settle", "0", "--json"], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - start, json.loads(out.stdout)


def remaining(root: Path) -> set[str]:
    return {"sha256:" + p.parent.name for p in (root / "docker/registry/v2/blobs/sha256").glob("*/*/data")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        work = Path(tmp)
        base = work / "base"
        t = time.perf_counter()
        garbage = asyncio.run(build(base, args.repos, args.images))
        before = remaining(base)
        print(f"store: {args.repos} repositories, {args.repos * args.images} manifests, {len(before)} blobs, "
              f"{len(garbage)} garbage (built in {time.perf_counter() - t:.1f}s)")
        for name in ("dist", "pyreg"):
            shutil.copytree(base, work / name)
        d_time, d_out = distribution_gc(work / "dist", work)
        d_freed = before - remaining(work / "dist")
        p_time, report = pyreg_gc(work / "pyreg")
        p_freed = before - remaining(work / "pyreg")
        print(f"distribution garbage-collect: {d_time:6.2f}s, freed {len(d_freed)} blobs")
        print(f"pyreg gc:                     {p_time:6.2f}s, freed {len(p_freed)} blobs "
              f"({report['bytes_freed']} bytes, {report['seconds']}s inside)")
        eligible = set(re.findall(r"blob eligible for deletion: (sha256:[0-9a-f]{64})", d_out))
        ok = d_freed == p_freed == garbage == eligible
        print("same blobs freed, exactly the garbage:", ok)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
