"""Safe layer extraction: hostile tarballs are refused and nothing outside the root changes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pyreg.runtime.extract import ExtractError, extract_layer

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (device nodes, trusted xattrs, chown)")


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **kw: Any) -> tuple:
    return (name, kind, data, kw)


def make_tar(entries: list[tuple], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data, kw in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = int(kw.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644))
            ti.mtime = int(kw.get("mtime", 1_600_000_000))
            ti.uid = int(kw.get("uid", 0))
            ti.gid = int(kw.get("gid", 0))
            ti.linkname = str(kw.get("linkname", ""))
            ti.devmajor = int(kw.get("devmajor", 0))
            ti.devminor = int(kw.get("devminor", 0))
            ti.pax_headers = dict(kw.get("pax", {}))
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
            else:
                tar.addfile(ti)
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode, size, content hash and link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            extra: object = None
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, extra)
    return out


@pytest.fixture
def arena(tmp_path: Path) -> dict[str, Path]:
    """A sandbox: 'outside' holds sentinels a hostile layer will try to reach; layers go to 'store'."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    (outside / "dir").mkdir()
    store = tmp_path / "store"
    store.mkdir()
    return {"tmp": tmp_path, "outside": outside, "store": store}


def _write_blob(tmp: Path, data: bytes, name: str = "layer.tar") -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


HOSTILE = {
    "dotdot": [_entry("../outside/secret", data=b"pwned")],
    "dotdot-deep": [_entry("a/b/../../../outside/evil", data=b"pwned")],
    "absolute": [_entry("/tmp/pyreg-evil-absolute", data=b"pwned")],
    "write-through-symlink": [
        _entry("link", tarfile.SYMTYPE, linkname="OUTSIDE"),
        _entry("link/secret", data=b"pwned"),
    ],
    "write-through-relative-symlink": [
        _entry("up", tarfile.SYMTYPE, linkname="../../outside"),
        _entry("up/evil", data=b"pwned"),
    ],
    "dir-through-symlink": [
        _entry("link", tarfile.SYMTYPE, linkname="OUTSIDE"),
        _entry("link/newdir", tarfile.DIRTYPE),
    ],
    "hardlink-dotdot": [_entry("hl", tarfile.LNKTYPE, linkname="../outside/secret")],
    "hardlink-absolute": [_entry("hl", tarfile.LNKTYPE, linkname="OUTSIDE/secret")],
    "hardlink-through-symlink": [
        _entry("link", tarfile.SYMTYPE, linkname="OUTSIDE"),
        _entry("hl", tarfile.LNKTYPE, linkname="link/secret"),
    ],
    "symlink-chain-parent": [
        _entry("a", tarfile.SYMTYPE, linkname="b"),
        _entry("b", tarfile.SYMTYPE, linkname="OUTSIDE"),
        _entry("a/x", data=b"pwned"),
    ],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_and_outside_untouched(arena: dict[str, Path], case: str) -> None:
    outside = arena["outside"]
    entries = []
    for name, kind, data, kw in HOSTILE[case]:
        kw = dict(kw)
        if "linkname" in kw:
            kw["linkname"] = str(kw["linkname"]).replace("OUTSIDE", str(outside))
        entries.append((name, kind, data, kw))
    before = snapshot(arena["tmp"] / "outside")
    blob = _write_blob(arena["tmp"], gzip.compress(make_tar(entries)))
    dest = arena["store"] / "layer"
    with pytest.raises(ExtractError) as err:
        extract_layer(blob, dest)
    # the error names the offending entry
    assert err.value.entry in {e[0] for e in entries}
    assert err.value.entry in str(err.value)
    assert snapshot(outside) == before
    assert not Path("/tmp/pyreg-evil-absolute").exists()
    # no partial dir, no leftover temp dir
    assert list(arena["store"].iterdir()) == []


def test_regular_file_replaces_symlink_without_following(arena: dict[str, Path]) -> None:
    outside = arena["outside"]
    before = snapshot(outside)
    entries = [
        _entry("s", tarfile.SYMTYPE, linkname=str(outside / "secret")),
        _entry("s", data=b"mine"),
    ]
    blob = _write_blob(arena["tmp"], make_tar(entries))
    res = extract_layer(blob, arena["store"] / "l")
    assert Path(res.path, "s").read_bytes() == b"mine"
    assert not Path(res.path, "s").is_symlink()
    assert snapshot(outside) == before


def test_absolute_symlink_is_kept_as_is_not_followed(arena: dict[str, Path]) -> None:
    entries = [_entry("bin", tarfile.DIRTYPE), _entry("bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox")]
    res = extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    assert os.readlink(Path(res.path, "bin/sh")) == "/bin/busybox"


def test_hardlink_inside_tree(arena: dict[str, Path]) -> None:
    entries = [
        _entry("a", tarfile.DIRTYPE),
        _entry("a/f", data=b"x" * 10),
        _entry("b/g", tarfile.LNKTYPE, linkname="./a/f"),
    ]
    res = extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    a, b = Path(res.path, "a/f").stat(), Path(res.path, "b/g").stat()
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)


def test_hardlink_to_missing_target(arena: dict[str, Path]) -> None:
    blob = _write_blob(arena["tmp"], make_tar([_entry("hl", tarfile.LNKTYPE, linkname="nope")]))
    with pytest.raises(ExtractError, match="does not exist"):
        extract_layer(blob, arena["store"] / "l")
    assert list(arena["store"].iterdir()) == []


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("declared", [True, False])
def test_compressions_and_diff_id(arena: dict[str, Path], compress: str, declared: bool) -> None:
    from pyreg.storage import mediatypes

    plain = make_tar([_entry("etc", tarfile.DIRTYPE), _entry("etc/hello", data=b"hello\n")])
    if compress == "gzip":
        blob, mt = gzip.compress(plain), mediatypes.OCI_LAYER_GZIP
    elif compress == "zstd":
        import zstandard

        blob, mt = zstandard.ZstdCompressor().compress(plain), mediatypes.OCI_LAYER_ZSTD
    else:
        blob, mt = plain, mediatypes.OCI_LAYER
    res = extract_layer(_write_blob(arena["tmp"], blob), arena["store"] / "l", mt if declared else None)
    assert Path(res.path, "etc/hello").read_text() == "hello\n"
    assert res.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
    assert res.entries == 2


def test_not_a_tar(arena: dict[str, Path]) -> None:
    blob = _write_blob(arena["tmp"], gzip.compress(b"this is not a tarball" * 100))
    with pytest.raises(ExtractError):
        extract_layer(blob, arena["store"] / "l")
    assert list(arena["store"].iterdir()) == []


def test_metadata_kept(arena: dict[str, Path]) -> None:
    owner: dict[str, Any] = {"uid": 1234, "gid": 2345} if os.geteuid() == 0 else {}
    entries = [
        _entry("d", tarfile.DIRTYPE, mode=0o750, mtime=1_000_000_000, **owner),
        _entry("d/suid", data=b"#!/bin/sh\n", mode=0o4755, mtime=1_100_000_000, **owner),
        _entry("d/x", data=b"x", mode=0o600, pax={"SCHILY.xattr.user.pyreg": "v\udcff"}),
        _entry("d/l", tarfile.SYMTYPE, linkname="x", mtime=1_200_000_000),
        _entry("d/fifo", tarfile.FIFOTYPE, mode=0o640),
    ]
    res = extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    d = Path(res.path, "d")
    st = d.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == 1_000_000_000
    st = (d / "suid").stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_mtime == 1_100_000_000
    if owner:
        assert (st.st_uid, st.st_gid) == (1234, 2345)
        assert (d.stat().st_uid, d.stat().st_gid) == (1234, 2345)
    assert os.getxattr(d / "x", "user.pyreg") == b"v\xff"
    assert (d / "l").lstat().st_mtime == 1_200_000_000
    assert stat.S_ISFIFO((d / "fifo").lstat().st_mode)
    assert stat.S_IMODE((d / "fifo").lstat().st_mode) == 0o640


@needs_root
def test_overlay_whiteouts(arena: dict[str, Path]) -> None:
    entries = [
        _entry("etc", tarfile.DIRTYPE),
        _entry("etc/.wh.motd"),
        _entry("opt/.wh..wh..opq"),
        _entry("opt/keep", data=b"k"),
        _entry("x", tarfile.DIRTYPE, pax={"SCHILY.xattr.trusted.overlay.opaque": "y"}),
    ]
    res = extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    st = Path(res.path, "etc/motd").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not Path(res.path, "etc/.wh.motd").exists()
    assert os.getxattr(Path(res.path, "opt"), "trusted.overlay.opaque") == b"y"
    assert Path(res.path, "opt/keep").read_bytes() == b"k"
    # a layer cannot smuggle overlay metadata of its own
    with pytest.raises(OSError):
        os.getxattr(Path(res.path, "x"), "trusted.overlay.opaque")


def test_apply_mode_whiteouts(arena: dict[str, Path]) -> None:
    root = arena["store"] / "rootfs"
    lower = make_tar([
        _entry("etc", tarfile.DIRTYPE),
        _entry("etc/motd", data=b"hi"),
        _entry("etc/keep", data=b"k"),
        _entry("opt", tarfile.DIRTYPE),
        _entry("opt/old", data=b"o"),
        _entry("opt/sub", tarfile.DIRTYPE),
        _entry("opt/sub/deep", data=b"o"),
    ])
    extract_layer(_write_blob(arena["tmp"], lower, "lower.tar"), root, whiteouts="apply")
    upper = make_tar([
        _entry("etc/.wh.motd"),
        _entry("opt/new", data=b"n"),
        _entry("opt/.wh..wh..opq"),
    ])
    extract_layer(_write_blob(arena["tmp"], upper, "upper.tar"), root, whiteouts="apply")
    assert sorted(os.listdir(root / "etc")) == ["keep"]
    assert sorted(os.listdir(root / "opt")) == ["new"]


def test_unprivileged_device_node_refused() -> None:
    """Run the extractor as nobody in a child: a char device entry must be refused by name."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pyreg-extract-"))  # pytest's tmp is 0700: nobody can't enter
    try:
        os.chmod(base, 0o755)
        blob = _write_blob(base, make_tar([_entry("dev", tarfile.DIRTYPE),
                                           _entry("dev/sda", tarfile.CHRTYPE, devmajor=8)]))
        os.chmod(blob, 0o644)
        store = base / "store"
        store.mkdir()
        os.chown(store, 65534, 65534)
        msg = _as_nobody(lambda: extract_layer(blob, store / "l"))
        assert b"dev/sda" in msg and b"not privileged" in msg, msg
        assert list(store.iterdir()) == []
    finally:
        shutil.rmtree(base)


def test_existing_dest_is_kept(arena: dict[str, Path]) -> None:
    """Two extractions of the same layer: the first one's directory wins, no temp dirs remain."""
    blob = _write_blob(arena["tmp"], make_tar([_entry("f", data=b"1")]))
    dest = arena["store"] / "l"
    extract_layer(blob, dest)
    res = extract_layer(blob, dest)
    assert res.path == str(dest)
    assert os.listdir(arena["store"]) == ["l"]


def _as_nobody(fn: Any) -> bytes:
    """Run fn() in a child that is uid/gid 65534; return what it reports (repr of an error)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                fn()
                msg = b"ok"
            except Exception as e:
                msg = repr(e).encode()
            os.write(w, msg)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read()
    os.waitpid(pid, 0)
    return msg


def test_unprivileged_overlay_whiteouts_use_user_xattrs() -> None:
    """A rootless store: whiteouts as user.overlay.* xattrs (overlay mounted with userxattr)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pyreg-extract-"))
    try:
        os.chmod(base, 0o755)
        blob = _write_blob(base, make_tar([
            _entry("etc", tarfile.DIRTYPE),
            _entry("etc/.wh.motd"),
            _entry("opt/.wh..wh..opq"),
            _entry("opt/.wh.x"),
            _entry("var/.wh.y"),
            _entry("var/.wh..wh..opq"),
            _entry("f", data=b"x", pax={"SCHILY.xattr.user.overlay.opaque": "y"}),
        ]))
        os.chmod(blob, 0o644)
        store = base / "store"
        store.mkdir()
        os.chown(store, 65534, 65534)
        assert _as_nobody(lambda: extract_layer(blob, store / "l")) == b"ok"
        root = store / "l"
        wh = root / "etc" / "motd"
        assert wh.is_file() and wh.stat().st_size == 0
        assert os.getxattr(wh, "user.overlay.whiteout") == b"y"
        assert os.getxattr(root / "etc", "user.overlay.opaque") == b"x"  # holds xattr whiteouts
        assert os.getxattr(root / "opt", "user.overlay.opaque") == b"y"  # opaque stays opaque
        assert os.getxattr(root / "var", "user.overlay.opaque") == b"y"
        with pytest.raises(OSError):  # the layer's own overlay xattrs are not taken
            os.getxattr(root / "f", "user.overlay.opaque")
    finally:
        shutil.rmtree(base)


def test_kernel_refusals_name_the_entry(arena: dict[str, Path]) -> None:
    entries = [_entry("d", tarfile.DIRTYPE), _entry("hl", tarfile.LNKTYPE, linkname="d")]  # no dir hardlinks
    with pytest.raises(ExtractError) as err:
        extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    assert err.value.entry == "hl"
    assert list(arena["store"].iterdir()) == []


def test_file_used_as_directory_is_refused(arena: dict[str, Path]) -> None:
    entries = [_entry("a", data=b"file"), _entry("a/b", data=b"x")]
    with pytest.raises(ExtractError, match="not a directory") as err:
        extract_layer(_write_blob(arena["tmp"], make_tar(entries)), arena["store"] / "l")
    assert err.value.entry == "a/b"
