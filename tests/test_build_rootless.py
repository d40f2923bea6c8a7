"""Rootless ``pyreg build``: an unprivileged user (``nobody``) builds as rootless ``pyreg run`` runs,
in a user namespace where only its uid is 0: overlays with ``userxattr``, RUN containers nested in
it, and the layer diff read from ``user.overlay.*`` whiteouts. The layers say root (0:0) owns
what the build made, not the host uid of the user.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests import images
from tests.test_runtime_rootless import NOBODY, rootless_env

pytestmark = pytest.mark.root


def _layers(store: Path, name: str) -> tuple[dict[str, object], list[list[tarfile.TarInfo]]]:
    """(config, members of each layer) of ``name``, read from the files (the store is nobody's)."""
    index = json.loads((store / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name", "").endswith(name))

    def blob(digest: str) -> bytes:
        return (store / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()

    manifest = json.loads(blob(entry["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    out = []
    for desc in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(desc["digest"])))) as tar:
            out.append(tar.getmembers())
    return config, out


def _builds_of_nobody() -> list[Path]:
    out = []
    for p in Path(tempfile.gettempdir()).glob("pyreg-build-*"):
        with contextlib.suppress(FileNotFoundError):  # another test's build, just removed
            if p.lstat().st_uid == NOBODY:
                out.append(p)
    return out


def test_rootless_build_copy_run_whiteouts(five_layer_image: images.TestImage) -> None:
    with rootless_env(five_layer_image) as env:
        ctx = env.base / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("""\
FROM five-layer
COPY hello.txt /srv/hello.txt
RUN echo made > /made && rm /data/a.txt && mkdir -p /data/new && id -u > /data/new/uid
RUN rm -rf /data/opaque && mkdir /data/opaque && echo fresh > /data/opaque/only
WORKDIR /work
CMD ["cat", "/made"]
""")
        (ctx / "hello.txt").write_text("hello\n")
        for p in (ctx, ctx / "Dockerfile", ctx / "hello.txt"):
            os.chown(p, NOBODY, NOBODY)

        r = env.run("build", "-t", "rl:1", str(ctx), timeout=300)
        assert r.returncode == 0, r.stderr
        assert env.states() == []
        steps = env.base / "store" / "buildcache" / "steps"  # the RUN upper dirs: none left
        assert not steps.is_dir() or list(steps.iterdir()) == []
        assert _builds_of_nobody() == []  # its work dir (overlay's work/work included) is gone
        r = env.run("run", "--rm", "rl:1")
        assert (r.returncode, r.stdout) == (0, "made\n"), r.stderr
        r = env.run("run", "--rm", "rl:1", "sh", "-c",
                    "cat /srv/hello.txt /data/new/uid; test -e /data/a.txt || echo gone; "
                    "ls -A /data/opaque; pwd")
        assert r.stdout.split() == ["hello", "0", "gone", "only", "/work"], r.stdout + r.stderr

        config, layers = _layers(env.base / "store", "rl:1")
        added = layers[-4:]  # COPY, RUN, RUN, WORKDIR (the base has five)
        assert len(config["rootfs"]["diff_ids"]) == len(layers) == 9  # type: ignore[index]
        copy_layer, run1, run2, workdir = ({m.name: m for m in layer} for layer in added)
        assert copy_layer["srv/hello.txt"].uid == 0 and copy_layer["srv/hello.txt"].gid == 0
        assert "data/.wh.a.txt" in run1 and run1["made"].uid == 0 and run1["data/new/uid"].uid == 0
        assert "data/opaque/.wh..wh..opq" in run2 and "data/opaque/only" in run2
        assert workdir["work"].isdir() and workdir["work"].uid == 0
        for layer in added:  # overlay's own xattrs never reach a layer
            assert not any(k.startswith("SCHILY.xattr.user.overlay") for m in layer for k in m.pax_headers)


def test_rootless_build_says_what_it_cannot_map(five_layer_image: images.TestImage) -> None:
    with rootless_env(five_layer_image) as env:
        ctx = env.base / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM five-layer\nCOPY --chown=1000:1000 f /f\n")
        (ctx / "f").write_text("f\n")
        for p in (ctx, ctx / "Dockerfile", ctx / "f"):
            os.chown(p, NOBODY, NOBODY)
        r = env.run("build", str(ctx))
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "only root (0:0) is mapped, files cannot belong to 1000:1000" in r.stderr
        assert env.states() == []
