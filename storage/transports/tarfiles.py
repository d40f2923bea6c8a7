"""Tar files as image containers: members read in place by name, streams written without seeking.

Reading never extracts: an archive is indexed once (names -> members) and each blob is read from
its offset in the tar, so loading a 1 GiB archive costs 1 GiB of reads, not an extracted copy
first. A compressed archive (``docker save | gzip``) is decompressed once into an anonymous temp
file, because the members of a compressed stream cannot be read out of order.

Member names are data from whoever made the archive: a name with ``..`` or a leading ``/`` (path
traversal in an extracting reader) makes the whole archive refused, as does a link that leaves the
archive or loops. Writing goes through ``TarStream``, which needs each member's size up front and
never seeks, so an archive can be written to a pipe (``pyreg save | ssh host pyreg load``).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
import zlib
from typing import IO, Any

from pyreg.storage.transports import ArchiveError

BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1 << 20
_MAX_LINK_HOPS = 16

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


__all__ = ["ArchiveError", "TarIndex", "TarStream"]


def compression_of(head: bytes) -> str | None:
    """The compression a stream starts with (``gzip``, ``bzip2``, ``xz``, ``zstd``), or None."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def decompressed(f: IO[bytes], kind: str) -> IO[bytes]:
    """A reader of ``f``'s decompressed bytes."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(f, "rb")
    if kind == "xz":
        return lzma.LZMAFile(f, "rb")
    if kind == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    raise ArchiveError(f"unknown compression {kind}")


DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def safe_name(name: str, where: str) -> str:
    """A member name as the archive's own relative path; ArchiveError for traversal."""
    if "\x00" in name or name.startswith("/") or "\\" in name:
        raise ArchiveError(f"{where}: unsafe member name {name[:200]!r} (absolute or odd path)")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"{where}: unsafe member name {name[:200]!r} (leaves the archive with '..')")
    return "/".join(parts)


class TarIndex:
    """The members of a tar (a seekable file) by name; ``open`` reads one in place."""

    def __init__(self, f: IO[bytes], where: str, owned: bool = False) -> None:
        """``owned``: ``close`` closes ``f`` too."""
        self.where = where
        self._files: list[IO[bytes]] = [f] if owned else []
        head = f.read(6)
        f.seek(0)
        if not head:
            raise ArchiveError(f"{where}: empty input, not an image archive (make one with "
                               "pyreg save, docker save or podman save)")
        kind = compression_of(head)
        if kind is not None:
            f = _decompress_to_temp(f, kind, where)
            self._files.append(f)
        self.file = f
        try:
            self.tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 - closed by close()
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError) as exc:
            detail = " ".join(str(exc).split())
            if "unexpected end" in detail or isinstance(exc, EOFError):
                raise ArchiveError(f"{where}: truncated archive ({detail or 'unexpected end of data'})"
                                   ) from None
            raise ArchiveError(f"{where}: not a tar archive (plain, gzip, bzip2, xz or zstd); make "
                               "one with pyreg save, docker save or podman save") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for info in members:
            name = safe_name(info.name, where)
            if info.issym() or info.islnk():
                self._check_link(name, info)
            self.members[name] = info

    def _check_link(self, name: str, info: tarfile.TarInfo) -> None:
        target = info.linkname
        if info.issym():
            target = posixpath.join(posixpath.dirname(name), target)
        if target.startswith("/") or posixpath.normpath(target).startswith(".."):
            raise ArchiveError(f"{self.where}: member {name!r} links outside the archive "
                               f"({info.linkname[:200]!r})")

    def close(self) -> None:
        if hasattr(self, "tar"):
            self.tar.close()
        for f in self._files:
            f.close()

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) is not None

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        """The regular-file member ``name`` ends at, following links inside the archive."""
        for _ in range(_MAX_LINK_HOPS):
            key = safe_name(name, self.where)
            info = self.members.get(key)
            if info is None:
                return None
            if info.isfile():
                return info
            if info.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(key), info.linkname))
            elif info.islnk():
                name = info.linkname
            else:
                return None
        raise ArchiveError(f"{self.where}: too many links to follow from {name!r}")

    def size(self, name: str) -> int | None:
        info = self._resolve(name)
        return None if info is None else info.size

    def open(self, name: str) -> IO[bytes]:
        """The member's bytes (a regular file, links followed); ArchiveError when absent."""
        info = self._resolve(name)
        if info is None:
            raise ArchiveError(f"{self.where}: archive has no file {name[:200]!r}")
        if info.issparse():
            raise ArchiveError(f"{self.where}: {name[:200]!r} is a sparse file, not an image blob")
        return io.BufferedReader(_Member(self.file.fileno(), info.offset_data, info.size, self.where), _CHUNK)

    def read(self, name: str, limit: int = 4 << 20) -> bytes:
        """A small member read whole (metadata: index.json, manifest.json, a config)."""
        size = self.size(name)
        if size is not None and size > limit:
            raise ArchiveError(f"{self.where}: {name} is {size} bytes, more than the {limit} allowed")
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) != size:
            raise ArchiveError(f"{self.where}: truncated archive ({name} is short)")
        return data


class _Member(io.RawIOBase):
    """A member's bytes read with ``pread`` at their offset in the tar: readers of different
    members (a push uploads several blobs at once) share the file but no position."""

    def __init__(self, fd: int, start: int, size: int, where: str) -> None:
        super().__init__()
        self.fd, self.start, self.size, self.where = fd, start, size, where
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        data = os.pread(self.fd, want, self.start + self.pos)
        if not data:
            raise ArchiveError(f"{self.where}: truncated archive (a member ends early)")
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _decompress_to_temp(f: IO[bytes], kind: str, where: str) -> IO[bytes]:
    spool = tempfile.TemporaryFile(prefix="pyreg-archive-")  # noqa: SIM115 - TarIndex.close closes it
    try:
        with decompressed(f, kind) as src:
            shutil.copyfileobj(src, spool, _CHUNK)
    except DECOMPRESS_ERRORS as exc:
        spool.close()
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ArchiveError(f"{where}: damaged {kind} stream ({detail})") from None
    spool.seek(0)
    return spool


class TarStream:
    """Writes a tar to a stream without seeking: ``begin(name, size)``, ``write`` exactly ``size``
    bytes, ``end()``; ``close()`` writes the end-of-archive blocks. Members are 0644 files and
    0755 directories owned by 0:0 with one mtime, so the same content gives the same archive."""

    def __init__(self, out: IO[bytes], mtime: int | None = None) -> None:
        self.out = out
        self.mtime = int(time.time()) if mtime is None else mtime
        self.pending = 0
        self._size = 0
        self.names: set[str] = set()
        self.dirs: set[str] = set()

    def _header(self, name: str, size: int, kind: bytes = tarfile.REGTYPE) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        info.mtime = self.mtime
        self.out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self.names.add(name)

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self._header(d, 0, tarfile.DIRTYPE)

    def begin(self, name: str, size: int) -> None:
        assert self.pending == 0, "previous member not ended"
        self._parents(name)
        self._header(name, size)
        self.pending = size
        self._size = size

    def write(self, data: bytes) -> None:
        if len(data) > self.pending:
            raise ArchiveError(f"more bytes than the {self._size} announced")
        self.out.write(data)
        self.pending -= len(data)

    def end(self) -> None:
        if self.pending:
            raise ArchiveError(f"{self.pending} bytes short of the {self._size} announced")
        remainder = self._size % BLOCK
        if remainder:
            self.out.write(b"\0" * (BLOCK - remainder))
        self._size = 0

    def add(self, name: str, data: bytes) -> None:
        self.begin(name, len(data))
        self.write(data)
        self.end()

    def close(self) -> None:
        self.out.write(b"\0" * (2 * BLOCK))
        self.out.flush()
