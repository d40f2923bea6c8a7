"""runtime/build/layers.py: an overlay upper dir as a layer, round-tripped through the extractor.

The changes are made through a real overlay mount (redirect_dir and metacopy off, as a build
mounts it); the layer is committed into a local store, extracted by runtime/extract.py, and the
overlay of (lower, extracted layer) must show the same tree as the overlay of (lower, upper) did.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyreg.runtime.build.layers import OVERLAY_BUILD_OPTIONS, commit_layer
from pyreg.storage.localstore import LocalStore
from tests.fixtures.runtime import require_root_runtime

EPOCH = 1_600_000_000
CAP = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service=ep (v2)


@contextlib.contextmanager
def overlay(lowers: list[Path], upper: Path | None, work: Path | None, target: Path) -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
    if upper is not None:
        opts += f",upperdir={upper},workdir={work},{OVERLAY_BUILD_OPTIONS}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """path -> (type, mode, uid, gid, content or link, xattrs, hardlink group)."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            data: object = None
            if stat.S_ISREG(st.st_mode):
                data = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            xattrs = {}
            if not stat.S_ISLNK(st.st_mode):
                xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)
                          if not k.startswith("trusted.overlay.")}
            group = None
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                group = inodes.setdefault(st.st_ino, rel)
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data,
                        xattrs, group)
    return out


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    require_root_runtime()
    low = tmp_path / "lower"
    (low / "etc").mkdir(parents=True)
    (low / "etc" / "gone").write_text("old\n")
    (low / "etc" / "keep").write_text("keep\n")
    (low / "opq" / "sub").mkdir(parents=True)
    (low / "opq" / "sub" / "x").write_text("x\n")
    (low / "opq" / "y").write_text("y\n")
    (low / "moved").mkdir()
    (low / "moved" / "m").write_text("m\n")
    (low / "chmodded").write_text("same data\n")
    return low


def make_changes(root: Path) -> None:
    (root / "etc" / "gone").unlink()
    subprocess.run(["rm", "-rf", str(root / "opq")], check=True)
    (root / "opq").mkdir()
    (root / "opq" / "new").write_text("new\n")
    (root / "chmodded").chmod(0o4755)
    os.chown(root / "chmodded", 1000, 1000)
    (root / "bin").mkdir(mode=0o750)
    (root / "bin" / "tool").write_bytes(b"\x7fELF pretend")
    os.setxattr(root / "bin" / "tool", "security.capability", CAP)
    os.setxattr(root / "bin" / "tool", "user.note", b"hello")
    os.link(root / "bin" / "tool", root / "bin" / "tool-link")
    os.symlink("../etc/keep", root / "bin" / "link")
    os.mkfifo(root / "bin" / "fifo")
    os.rename(root / "moved", root / "renamed")  # redirect_dir=off: a copy, then a delete


def test_upper_dir_round_trips_through_extract(tmp_path: Path, lower: Path) -> None:
    from pyreg.runtime.extract import extract_layer

    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    with overlay([lower], upper, work, tmp_path / "merged") as merged:
        try:
            make_changes(merged)
        except OSError as e:
            if e.errno == 18:  # EXDEV from rename: mv's fallback is a copy, as a build's mv does
                subprocess.run(["mv", str(merged / "moved"), str(merged / "renamed")], check=True)
        expected = tree(merged)
    assert "renamed/m" in expected and "moved" not in expected and "opq/sub" not in expected

    store = LocalStore(tmp_path / "store")
    with store.writing():
        layer = commit_layer(str(upper), store, source_date_epoch=EPOCH)
    blob = store.blob_path(layer.digest)
    assert layer.size == blob.stat().st_size
    with gzip.open(blob) as f:
        raw = f.read()
    assert "sha256:" + __import__("hashlib").sha256(raw).hexdigest() == layer.diff_id
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert "etc/.wh.gone" in names and "moved" not in names and ".wh.moved" in names
    assert names.index("opq/.wh..wh..opq") == names.index("opq") + 1
    assert names.index(".wh.moved") < names.index("bin")  # whiteouts before their siblings
    assert all(m.mtime <= EPOCH for m in members)
    links = [m for m in members if m.islnk()]
    assert [(m.name, m.linkname) for m in links] == [("bin/tool-link", "bin/tool")]
    tool = next(m for m in members if m.name == "bin/tool")
    assert tool.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    assert not any("overlay" in k for m in members for k in m.pax_headers)

    extracted = extract_layer(blob, tmp_path / "layer", layer.media_type)
    assert extracted.diff_id == layer.diff_id
    with overlay([lower, tmp_path / "layer"], None, None, tmp_path / "check") as check:
        got = tree(check)
    assert got == expected


def test_layer_is_deterministic_and_zstd(tmp_path: Path, lower: Path) -> None:
    digests = []
    for i in range(2):
        upper, work = tmp_path / f"upper{i}", tmp_path / f"work{i}"
        upper.mkdir()
        work.mkdir()
        with overlay([lower], upper, work, tmp_path / f"m{i}") as merged:
            (merged / "etc" / "gone").unlink()
            (merged / "a").write_text("a\n")
            os.utime(merged / "a", (EPOCH + 10**6, EPOCH + 10**6))
        store = LocalStore(tmp_path / "store")
        with store.writing():
            digests.append(commit_layer(str(upper), store, source_date_epoch=EPOCH, compression="zstd"))
    assert digests[0] == digests[1]
    assert digests[0].media_type.endswith("+zstd")
    assert store.blob_path(digests[0].digest).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
