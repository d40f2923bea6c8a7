"""The diff of an overlay upper dir as a layer tar, compressed straight into the local store.

What a ``RUN`` changed is exactly its overlay upper dir, in overlay's own notation; a layer says
the same in the OCI notation, so this module translates one into the other:

- a 0/0 character device (or, rootless, an empty file with ``user.overlay.whiteout``) is a
  deleted name: ``.wh.NAME``;
- a directory with ``trusted.overlay.opaque=y`` (rootless: ``user.overlay.opaque=y``) hides
  everything below it: ``DIR/.wh..wh..opq``;
- overlay's own xattrs (``*.overlay.*``: origin, impure, …) are dropped, every other xattr
  (``security.capability``, ``user.*``) is kept as a PAX ``SCHILY.xattr.`` record;
- files hard-linked to each other inside the upper dir stay hard links (the first name in the
  walk is the file, the others link to it);
- uid, gid and mode are kept; uname/gname are left empty (they mean nothing across hosts).

The mounts must use ``redirect_dir=off`` and ``metacopy=off`` (runtime/build/runstep.py and
fsops.py do): with a redirect, a renamed directory is an xattr pointing into a lower layer, and
with metacopy a chmod'ed file has no data in the upper dir — neither can be said in a tar.

The order is deterministic (a directory, its opaque marker, its whiteouts, then its other entries,
by byte order of their names), and with ``source_date_epoch`` no mtime is later than it, so the
same change gives the same diff ID on every host (and, gzip written without a name or a time,
the same blob digest for the same compression level).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading

from pyreg.runtime.build.records import record
from pyreg.storage import mediatypes
from pyreg.storage.localstore import LocalStore

TYPE_CHECKING = False  # typing and tarfile: start-up of every build, cached or not; tarfile once it commits
if TYPE_CHECKING:
    import tarfile
    from typing import IO

OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_WHITEOUT_XATTRS = ("trusted.overlay.whiteout", "user.overlay.whiteout")
_OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

MEDIA_TYPES = {"gzip": mediatypes.OCI_LAYER_GZIP, "zstd": mediatypes.OCI_LAYER_ZSTD,
               "none": mediatypes.OCI_LAYER}
OVERLAY_BUILD_OPTIONS = "redirect_dir=off,metacopy=off,index=off"
# rootless (``userxattr``): overlay refuses "off" there, which may mean "follow"; nofollow creates
# no redirects either
OVERLAY_BUILD_OPTIONS_ROOTLESS = "redirect_dir=nofollow,metacopy=off,index=off"


@record(frozen=True)
class Layer:
    """A layer in the local store: what the config (diff_id) and the manifest (the rest) say."""

    diff_id: str
    digest: str
    size: int
    media_type: str

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return out


def is_whiteout(st: os.stat_result, xattrs: dict[str, bytes]) -> bool:
    """overlay's deleted-name marker: a 0/0 char device, or an empty file carrying the xattr."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and any(k in xattrs for k in _WHITEOUT_XATTRS)


def is_opaque(xattrs: dict[str, bytes]) -> bool:
    return any(xattrs.get(k) == b"y" for k in _OPAQUE_XATTRS)


class _Walker:
    """Emits the TarInfos of the upper dir in layer order (the data is read by ``addfile``)."""

    def __init__(self, tar: tarfile.TarFile, root: str, epoch: int | None) -> None:
        self.tar = tar
        self.root = root
        self.epoch = epoch
        self.links: dict[tuple[int, int], str] = {}

    def _mtime(self, st: os.stat_result) -> int:
        t = int(st.st_mtime)
        return min(t, self.epoch) if self.epoch is not None else t

    def _info(self, name: str, st: os.stat_result, xattrs: dict[str, bytes]) -> tarfile.TarInfo:
        import tarfile

        ti = tarfile.TarInfo(name)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname = ti.gname = ""
        ti.mtime = self._mtime(st)
        kept = {k: v for k, v in sorted(xattrs.items()) if not k.startswith(_OVERLAY_XATTR_PREFIXES)}
        if kept:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                              for k, v in kept.items()}
        return ti

    def _marker(self, name: str, st: os.stat_result) -> None:
        import tarfile

        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
        ti.mtime = self._mtime(st)
        self.tar.addfile(ti)

    def walk(self, rel: str = "") -> None:
        path = os.path.join(self.root, rel) if rel else self.root
        names = sorted(os.listdir(path), key=os.fsencode)
        entries = []
        for name in names:
            full = os.path.join(path, name)
            st = os.lstat(full)
            xattrs = _xattrs(full)
            entries.append((name, full, st, xattrs))
        # whiteouts first: an extractor that applies the layer in order deletes before it adds
        for name, _full, st, xattrs in entries:
            if is_whiteout(st, xattrs):
                self._marker(_join(rel, WHITEOUT_PREFIX + name), st)
        for name, full, st, xattrs in entries:
            if is_whiteout(st, xattrs):
                continue
            self._entry(_join(rel, name), full, st, xattrs)

    def _entry(self, name: str, full: str, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
        import tarfile

        mode = st.st_mode
        ti = self._info(name, st, xattrs)
        if stat.S_ISDIR(mode):
            ti.type = tarfile.DIRTYPE
            self.tar.addfile(ti)
            if is_opaque(xattrs):
                self._marker(_join(name, OPAQUE_MARKER), st)
            self.walk(name)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self.links:
                ti.type, ti.linkname = tarfile.LNKTYPE, self.links[key]
                self.tar.addfile(ti)
                return
            if st.st_nlink > 1:
                self.links[key] = name
            ti.type, ti.size = tarfile.REGTYPE, st.st_size
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                self.tar.addfile(ti, f)
        elif stat.S_ISLNK(mode):
            ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(full)
            self.tar.addfile(ti)
        elif stat.S_ISFIFO(mode):
            ti.type = tarfile.FIFOTYPE
            self.tar.addfile(ti)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(ti)
        # sockets: not representable in a tar; skipped as docker does


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class _Hashing:
    """A write-only file that hashes what passes (the diff ID) and hands it on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()


def write_tar(upper: str, out: IO[bytes], *, source_date_epoch: int | None = None,
              compression: str = "gzip") -> str:
    """Write the layer of ``upper`` (compressed) to ``out``; returns the diff ID."""
    import tarfile

    if compression == "gzip":
        import gzip

        comp: IO[bytes] = gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=6, mtime=0)  # type: ignore[assignment]
    elif compression == "zstd":
        import zstandard

        comp = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)
    elif compression == "none":
        comp = out
    else:
        raise ValueError(f"unknown compression {compression!r}: gzip, zstd or none")
    hashing = _Hashing(comp)
    with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape") as tar:
        _Walker(tar, upper, source_date_epoch).walk()
    if comp is not out:
        comp.close()
    out.flush()
    return "sha256:" + hashing.hash.hexdigest()


def commit_layer(upper: str, store: LocalStore, *, source_date_epoch: int | None = None,
                 compression: str = "gzip") -> Layer:
    """The layer of ``upper``, compressed into ``store`` as it is made (a pipe into
    ``ingest_stream``: no temporary copy). The caller holds ``store.writing()``."""
    r, w = os.pipe2(os.O_CLOEXEC)
    result: dict[str, object] = {}

    def produce() -> None:
        try:
            with os.fdopen(w, "wb") as out:
                result["diff_id"] = write_tar(upper, out, source_date_epoch=source_date_epoch,
                                              compression=compression)
        except BaseException as e:  # handed to the caller below
            result["error"] = e

    thread = threading.Thread(target=produce, name="layer-tar", daemon=True)
    thread.start()
    try:
        with os.fdopen(r, "rb") as reader:
            digest, size = store.ingest_stream(reader)
    finally:
        thread.join()
    if "error" in result:
        store.delete(digest)  # a truncated stream: nothing refers to it
        raise result["error"]  # type: ignore[misc]
    return Layer(str(result["diff_id"]), str(digest), size, MEDIA_TYPES[compression])

