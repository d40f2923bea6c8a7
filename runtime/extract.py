"""Safe layer extraction.

A layer tarball is untrusted input. Every entry is written relative to a directory file
descriptor whose every parent was opened with ``O_NOFOLLOW``, so no symlink — neither one the
tarball just created nor anything else — is ever followed while extracting; names with ``..``
or an absolute path, hardlinks that leave the tree and device nodes without privilege are
refused with an error naming the entry.

Whiteouts: in ``"overlay"`` mode (the default; each layer becomes its own overlayfs lower dir)
``.wh.NAME`` becomes a 0/0 character device and ``.wh..wh..opq`` the ``trusted.overlay.opaque=y``
xattr on its directory, exactly what overlayfs expects. Unprivileged (a rootless store, mounted
with overlay's ``userxattr``), where neither device nodes nor trusted xattrs can be made, the same
goes into ``user.overlay.*``: ``.wh.NAME`` becomes an empty file with ``user.overlay.whiteout``
and its directory gets ``user.overlay.opaque=x`` ("holds xattr whiteouts", Linux 6.7+), and an
opaque directory ``user.overlay.opaque=y``. In ``"apply"`` mode the layer is applied
onto an existing tree (a flattened rootfs): whiteouts delete what lower layers put there.

Overlay mode extracts into a temporary sibling of ``dest`` and renames it into place, so a failed
extraction leaves nothing behind and a finished one appears atomically.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, Any, Literal

from pyreg.storage.storefiles import write_all

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"
USER_WHITEOUT_XATTR = "user.overlay.whiteout"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ExtractError(ValueError):
    """A layer entry that would escape the layer root, or that cannot be represented safely."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"refusing layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


@dataclass(frozen=True)
class Extracted:
    """What an extraction produced: the directory, and the digest of the uncompressed tar."""

    path: str
    diff_id: str
    entries: int


class _HashingReader:
    """Passes reads through and hashes them: the diff ID comes for free with the extraction.
    ``check(size)`` bounds the uncompressed stream (runtime.layer_limits)."""

    def __init__(self, raw: IO[bytes], check: Any = None) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0
        self.check = check

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        if self.check is not None:
            self.check(self.size)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _compression(media_type: str | None, head: bytes) -> str:
    if media_type is not None:
        from pyreg.storage import mediatypes

        if media_type in mediatypes.GZIP_LAYERS:
            return "gzip"
        if media_type in mediatypes.ZSTD_LAYERS:
            return "zstd"
        if media_type in mediatypes.PLAIN_LAYERS:
            return "none"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def _open_decompressed(f: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def clean_name(name: str) -> list[str]:
    """Split a tar member name into safe components; raise ExtractError for escaping names.

    ``./a/b/`` and ``a//b`` are fine; ``..`` anywhere and absolute names are not (tar tools
    strip a leading ``/`` silently — a layer has no business carrying one).
    """
    if "\x00" in name:
        raise ExtractError(name, "NUL byte in name")
    if name.startswith("/"):
        raise ExtractError(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(name, "'..' component")
    return parts


def _is_privileged() -> bool:
    """Real root: not root of a user namespace mapping only a user (a rootless build), who may
    not make devices."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            ranges = [line.split() for line in f]
    except OSError:
        return True
    return not (len(ranges) == 1 and ranges[0][2:] == ["1"])


class _Extractor:
    def __init__(self, root: str, whiteouts: str, privileged: bool) -> None:
        self.root = root
        self.whiteouts = whiteouts
        self.privileged = privileged
        self.root_fd = os.open(root, _DIR_FLAGS)
        # directory metadata is applied last: creating children changes a dir's mtime, and a
        # read-only dir mode would stop us writing into it
        self.dirs: dict[tuple[str, ...], tarfile.TarInfo] = {}
        # paths this layer created, so an opaque marker in apply mode keeps them
        self.created: set[tuple[str, ...]] = set()
        self.opaque: set[tuple[str, ...]] = set()

    def close(self) -> None:
        os.close(self.root_fd)

    # -- walking without following links ------------------------------------------------------
    def _open_parent(self, entry: str, parts: list[str], create: bool = True) -> int:
        """An fd for the directory holding parts[-1]; every component opened with O_NOFOLLOW."""
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts[:-1]):
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    self.created.add(tuple(parts[: i + 1]))
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                        raise ExtractError(
                            entry, f"parent {'/'.join(parts[: i + 1])!r} is {what}; not following it"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _remove(self, dfd: int, name: str) -> None:
        """Remove name in dfd whatever it is (a dir recursively), never following links."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=dfd)  # fd-based and symlink-safe (rmtree.avoids_symlink_attacks)
        else:
            os.unlink(name, dir_fd=dfd)

    # -- entries ------------------------------------------------------------------------------
    def add(self, tar: tarfile.TarFile, ti: tarfile.TarInfo) -> None:
        entry = ti.name
        parts = clean_name(entry)
        if not parts:  # the root itself ("./")
            if ti.isdir():
                self.dirs[()] = ti
            return
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(entry, parts)
            return
        dfd = self._open_parent(entry, parts)
        try:
            key = tuple(parts)
            self.created.add(key)
            if ti.isdir():
                try:
                    st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        self._remove(dfd, base)
                        os.mkdir(base, 0o700, dir_fd=dfd)
                except FileNotFoundError:
                    os.mkdir(base, 0o700, dir_fd=dfd)
                self.dirs[key] = ti
                return
            self._remove(dfd, base)
            if ti.isreg():
                self._regular(tar, ti, dfd, base)
            elif ti.issym():
                if "\x00" in ti.linkname:
                    raise ExtractError(entry, "NUL byte in symlink target")
                # the target may be anything (absolute targets are normal in images: they are
                # resolved inside the container); it is never followed here
                os.symlink(ti.linkname, base, dir_fd=dfd)
                self._owner_times(entry, ti, dfd, base)
            elif ti.islnk():
                self._hardlink(entry, ti, dfd, base)
            elif ti.ischr() or ti.isblk():
                if not self.privileged:
                    raise ExtractError(entry, "device node and not privileged")
                kind = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(ti.devmajor, ti.devminor), dir_fd=dfd)
                self._meta(entry, ti, dfd, base)
            elif ti.isfifo():
                os.mknod(base, stat.S_IFIFO | 0o600, dir_fd=dfd)
                self._meta(entry, ti, dfd, base)
            else:
                raise ExtractError(entry, f"unsupported tar entry type {ti.type!r}")
        finally:
            os.close(dfd)

    def _regular(self, tar: tarfile.TarFile, ti: tarfile.TarInfo, dfd: int, base: str) -> None:
        src = tar.extractfile(ti)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            if src is not None:
                while chunk := src.read(_CHUNK):
                    write_all(fd, chunk)  # in small pieces: see storefiles.WRITE_PIECE
            self._fd_meta(ti.name, ti, fd)
        finally:
            os.close(fd)

    def _hardlink(self, entry: str, ti: tarfile.TarInfo, dfd: int, base: str) -> None:
        link = ti.linkname
        try:
            target = clean_name(link)
        except ExtractError as e:
            raise ExtractError(entry, f"hardlink target {link!r} leaves the layer: {e.reason}") from None
        if not target:
            raise ExtractError(entry, "hardlink to the layer root")
        missing = ExtractError(entry, f"hardlink target {link!r} does not exist in the layer")
        try:
            sfd = self._open_parent(entry, target, create=False)
        except FileNotFoundError:
            raise missing from None
        try:
            os.link(target[-1], base, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise missing from None
        finally:
            os.close(sfd)

    def _whiteout(self, entry: str, parts: list[str]) -> None:
        base = parts[-1]
        dir_parts = parts[:-1]
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts == "overlay":
                fd = self._open_dir(entry, dir_parts)
                try:
                    os.setxattr(fd, OVERLAY_OPAQUE_XATTR if self.privileged else USER_OPAQUE_XATTR, b"y")
                finally:
                    os.close(fd)
            else:
                self.opaque.add(tuple(dir_parts))
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): nothing to do
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):
            raise ExtractError(entry, "whiteout of an invalid name")
        dfd = self._open_parent(entry, [*dir_parts, name])
        try:
            self._remove(dfd, name)
            if self.whiteouts == "overlay" and self.privileged:
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
            elif self.whiteouts == "overlay":
                # writable: setting a user xattr needs write permission on the inode
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=dfd)
                try:
                    os.setxattr(fd, USER_WHITEOUT_XATTR, b"y")
                finally:
                    os.close(fd)
                try:
                    opaque = os.getxattr(dfd, USER_OPAQUE_XATTR)
                except OSError:
                    opaque = b""
                if opaque != b"y":
                    os.setxattr(dfd, USER_OPAQUE_XATTR, b"x")
        finally:
            os.close(dfd)

    def _open_dir(self, entry: str, parts: list[str]) -> int:
        if not parts:
            return os.dup(self.root_fd)
        dfd = self._open_parent(entry, parts)
        try:
            try:
                return os.open(parts[-1], _DIR_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                os.mkdir(parts[-1], 0o755, dir_fd=dfd)
                self.created.add(tuple(parts))
                return os.open(parts[-1], _DIR_FLAGS, dir_fd=dfd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ExtractError(entry, f"{'/'.join(parts)!r} is not a directory") from None
                raise
        finally:
            os.close(dfd)

    # -- metadata -----------------------------------------------------------------------------
    def _xattrs(self, ti: tarfile.TarInfo) -> list[tuple[str, bytes]]:
        out = []
        for key, value in ti.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if name.startswith(("trusted.overlay.", "user.overlay.")):
                continue  # overlay metadata is ours to write, never the layer's
            out.append((name, value.encode("utf-8", "surrogateescape")))
        return out

    def _fd_meta(self, entry: str, ti: tarfile.TarInfo, fd: int) -> None:
        if self.privileged:
            os.fchown(fd, ti.uid, ti.gid)
        os.fchmod(fd, ti.mode & 0o7777)  # after chown, which clears setuid bits
        for name, value in self._xattrs(ti):
            try:
                os.setxattr(fd, name, value)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP):
                    raise
        os.utime(fd, ns=(int(ti.mtime * 1e9), int(ti.mtime * 1e9)))

    def _meta(self, entry: str, ti: tarfile.TarInfo, dfd: int, base: str) -> None:
        """Metadata for nodes that cannot be opened safely (fifos, devices): via O_PATH."""
        fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            path = f"/proc/self/fd/{fd}"
            if self.privileged:
                os.chown(path, ti.uid, ti.gid)
            os.chmod(path, ti.mode & 0o7777)
            os.utime(path, ns=(int(ti.mtime * 1e9), int(ti.mtime * 1e9)))
        finally:
            os.close(fd)

    def _owner_times(self, entry: str, ti: tarfile.TarInfo, dfd: int, base: str) -> None:
        """Symlinks: owner, xattrs and times of the link itself."""
        if self.privileged:
            os.chown(base, ti.uid, ti.gid, dir_fd=dfd, follow_symlinks=False)
        for name, value in self._xattrs(ti):
            try:
                os.setxattr(f"/proc/self/fd/{dfd}/{base}", name, value, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP):
                    raise
        os.utime(base, ns=(int(ti.mtime * 1e9), int(ti.mtime * 1e9)), dir_fd=dfd, follow_symlinks=False)

    def finish(self) -> None:
        if self.opaque:
            self._apply_opaque()
        # deepest first, so setting a parent's mtime is not undone by touching a child
        for key in sorted(self.dirs, key=len, reverse=True):
            ti = self.dirs[key]
            fd = self._open_dir(ti.name, list(key))
            try:
                self._fd_meta(ti.name, ti, fd)
            finally:
                os.close(fd)

    def _apply_opaque(self) -> None:
        for key in sorted(self.opaque, key=len):
            fd = self._open_dir("/".join(key) + "/" + WHITEOUT_OPAQUE, list(key))
            try:
                for name in os.listdir(fd):
                    if (*key, name) not in self.created:
                        self._remove(fd, name)
            finally:
                os.close(fd)


def _rmtree(path: str) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


def extract_layer(
    blob_path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    media_type: str | None = None,
    *,
    whiteouts: Literal["overlay", "apply"] = "overlay",
) -> Extracted:
    """Extract the layer blob at ``blob_path`` into ``dest_dir`` and return what was made.

    ``media_type`` picks the decompressor (gzip, zstd, none); when it is None or unknown the
    blob's magic bytes decide. In overlay mode ``dest_dir`` must not exist yet: the layer is
    built beside it and renamed into place; if another extractor got there first (same chain
    ID, same content) its directory is kept and ours discarded. In apply mode ``dest_dir`` is an
    existing rootfs that the layer is applied onto in place.
    """
    dest = os.path.abspath(os.fspath(dest_dir))
    if whiteouts == "overlay":
        parent = os.path.dirname(dest)
        os.makedirs(parent, exist_ok=True)
        work = f"{dest}.extract-{os.getpid()}-{os.urandom(4).hex()}"
        os.mkdir(work, 0o700)
    elif whiteouts == "apply":
        os.makedirs(dest, exist_ok=True)
        work = dest
    else:
        raise ValueError(f"whiteouts must be 'overlay' or 'apply', not {whiteouts!r}")
    try:
        with open(blob_path, "rb") as raw:
            head = raw.read(4)
            raw.seek(0)
            stream = _open_decompressed(raw, _compression(media_type, head))
            from pyreg.runtime.layer_limits import LayerLimits

            limits, packed = LayerLimits.configured(), os.fstat(raw.fileno()).st_size
            bound = limits.bound(packed)
            hashing = _HashingReader(stream, lambda n: limits.check(n, packed, bound))
            declared = 0  # bytes the regular entries declare: a sparse entry's holes are written too
            ex = _Extractor(work, whiteouts, _is_privileged())
            count = 0
            try:
                try:
                    tar = tarfile.open(fileobj=hashing, mode="r|")  # type: ignore[call-overload]  # noqa: SIM115
                except tarfile.ReadError as e:
                    raise ExtractError("<layer>", f"not a tar archive: {e}") from None
                with tar:
                    for ti in tar:
                        declared += ti.size if ti.isreg() else 0
                        limits.check(declared, packed, bound)
                        try:
                            ex.add(tar, ti)
                        except OSError as e:  # name the entry whatever the kernel refused
                            raise ExtractError(ti.name, f"cannot extract: {e.strerror or e}") from e
                        count += 1
                ex.finish()
            finally:
                ex.close()
            hashing.drain()
        diff_id = "sha256:" + hashing.hash.hexdigest()
        if whiteouts == "overlay":
            try:
                os.rename(work, dest)
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                _rmtree(work)  # someone else extracted the same layer first
        return Extracted(dest, diff_id, count)
    except BaseException:
        if whiteouts == "overlay":
            _rmtree(work)
        raise
