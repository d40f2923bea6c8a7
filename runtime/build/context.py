"""The build context: a directory, or a tar read from stdin, seen through the ignore rules.

The context is data: its symlinks are entries to copy as symlinks, never paths to follow out of
the context. A tar context is unpacked into a directory the caller owns, refusing members that
would land outside it (absolute names are made relative, ``..`` that climbs out and paths through
symlinks are errors), so the executor deals with one kind of context.

``checksum`` gives the cache a digest of what a ``COPY``/``ADD`` would read: paths, types, modes,
owners, symlink targets and file contents — not mtimes, so touching a file does not bust the cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from pyreg.runtime.build.dockerignore import IgnoreMatcher, clean, load
from pyreg.runtime.build.hashcache import FileHashes
from pyreg.runtime.build.records import record

TYPE_CHECKING = False  # typing, and tarfile with its compressors: only for a context on stdin
if TYPE_CHECKING:
    import tarfile
    from typing import IO, Any


class ContextError(ValueError):
    """A context that cannot be used (unsafe tar, missing source, bad glob)."""


@record(frozen=True)
class Entry:
    """One context entry as the cache and the copier see it (``path`` relative, ``/``-separated)."""

    path: str
    mode: int  # st_mode: type and permission bits
    uid: int
    gid: int
    size: int
    link: str | None  # symlink target


@record(frozen=True)
class Source:
    """A COPY/ADD source as matched (``rel``, what the destination is named after) and the path its
    bytes come from (``path``, symlinks followed inside the context)."""

    rel: str
    path: Path


def _split(rel: str) -> list[str]:
    rel = clean("/" + rel).lstrip("/")
    return [] if not rel else rel.split("/")


class BuildContext:
    """A context directory and the ignore rules for it."""

    def __init__(self, root: Path, ignore: IgnoreMatcher | None = None, dockerfile: Path | None = None):
        self.root = Path(root)
        self.ignore = ignore if ignore is not None else IgnoreMatcher([])
        # The Dockerfile the ignore rules were chosen for (``<Dockerfile>.dockerignore``), if known; for
        # a plain Dockerfile on stdin, the file written for it.
        self.dockerfile = dockerfile
        # Digests of the files ``checksum`` reads; the builder swaps in one remembered across builds
        # (runtime/build/hashcache.py) for a directory context (``persistent``), not a tar's.
        self.hashes = FileHashes()
        self.persistent = False

    @classmethod
    def from_dir(cls, root: Path, dockerfile: Path | None = None) -> BuildContext:
        """A directory context; the ignore file is ``<Dockerfile>.dockerignore`` or ``.dockerignore``."""
        root = Path(root)
        if not root.is_dir():
            raise ContextError(f"unable to prepare context: path {str(root)!r} not found")
        try:
            ctx = cls(root, load(root, dockerfile), dockerfile)
        except ValueError as e:
            raise ContextError(str(e)) from None
        ctx.persistent = True
        return ctx

    @classmethod
    def from_tar(cls, stream: IO[bytes], dest: Path, dockerfile: str = "Dockerfile") -> BuildContext:
        """``pyreg build -``: unpack the tar on ``stream`` (plain, gzip, bzip2, xz or zstd) into the empty
        directory ``dest`` safely and use it as a directory context, its Dockerfile at ``dockerfile``
        inside it. Anything that is not an archive is a Dockerfile with no other context, as with
        ``docker build - < Dockerfile``: it is written to ``dest/Dockerfile`` (``ctx.dockerfile``)."""
        dest = Path(dest)
        kind, reader = sniff_stdin(stream)
        if kind == "dockerfile":
            dest.mkdir(parents=True, exist_ok=True)
            path = dest / "Dockerfile"
            with open(path, "wb") as out:
                shutil.copyfileobj(reader, out)
            return cls(dest, IgnoreMatcher([]), path)
        extract_tar(reader, dest)
        df = resolve(dest, dockerfile, follow=True)
        ctx = cls.from_dir(dest, df)
        ctx.persistent = False  # unpacked anew each time: nothing to remember
        return ctx

    # --- paths ---------------------------------------------------------------------------------------

    def resolve(self, rel: str, follow: bool = True) -> Path:
        """``rel`` inside the context, symlinks (also the last one when ``follow``) resolved as if the
        context were ``/`` — a link to ``/etc`` or ``../..`` stays inside the context."""
        return resolve(self.root, rel, follow)

    def is_ignored(self, rel: str) -> bool:
        return self.ignore.is_ignored(rel)

    def walk(self, rel: str = "") -> Iterator[Entry]:
        """Entries under ``rel`` (itself first), sorted, ignored ones left out (an ignored directory is
        still given when something inside it is re-included). Symlinks are not followed."""
        start = self.resolve(rel, follow=True) if rel else self.root
        base = start.relative_to(self.root).as_posix() if start != self.root else ""
        yield from self._walk(start, base, top=True)

    def _walk(self, path: Path, rel: str, top: bool = False) -> Iterator[Entry]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        ignored = bool(rel) and self.ignore.is_ignored(rel)
        entry = Entry(rel, st.st_mode, st.st_uid, st.st_gid, st.st_size if stat.S_ISREG(st.st_mode) else 0,
                      os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
        if not stat.S_ISDIR(st.st_mode):
            if not ignored:
                yield entry
            return
        if ignored and not self.ignore.may_include_under(rel):
            return
        children: list[Entry] = []
        for name in sorted(os.listdir(path)):
            children.extend(self._walk(path / name, f"{rel}/{name}" if rel else name))
        if not ignored or children:
            yield entry
        yield from children

    # --- COPY/ADD sources ----------------------------------------------------------------------------

    def sources(self, pattern: str) -> list[str]:
        """A COPY/ADD source word (after expansion) → matching context paths, sorted. Wildcards follow
        Go's ``filepath.Match`` per path component (``*``, ``?``, ``[…]``, ``\\`` escapes; ``**`` is
        just ``*``); no match is an error, as in docker. Paths are relative to the context root; ``..``
        cannot leave it."""
        parts = _split(pattern)
        if not parts:
            return [""]
        if not any(_has_magic(p) for p in parts):
            rel = "/".join(parts)
            if not os.path.lexists(self.resolve(rel, follow=False)) or self.is_ignored(rel):
                raise ContextError(f"\"{pattern}\": not found")
            return [rel]
        found: list[str] = []
        self._glob("", parts, found)
        found = sorted(p for p in found if not self.is_ignored(p))
        if not found:
            raise ContextError(f"no source files were specified (\"{pattern}\" matched nothing)")
        return found

    def resolve_sources(self, pattern: str) -> list[Source]:
        """``sources`` with each match resolved as BuildKit copies it: a matched symlink is followed
        (inside the context — a link to ``/etc/passwd`` means ``<context>/etc/passwd``), the name
        in the destination stays the matched one. A link whose target is missing is an error."""
        out: list[Source] = []
        for rel in self.sources(pattern):
            path = self.resolve(rel, follow=True)
            if not os.path.lexists(path):
                target = "/" + path.relative_to(self.root).as_posix() if path != self.root else "/"
                raise ContextError(f"\"{target}\" not found (the source {rel!r} is a symlink)")
            out.append(Source(rel, path))
        return out

    def _glob(self, rel: str, parts: list[str], out: list[str]) -> None:
        head, rest = parts[0], parts[1:]
        here = self.resolve(rel, follow=True) if rel else self.root
        if not here.is_dir():
            return
        if _has_magic(head):
            rx = _match_regex(head)
            names = [n for n in sorted(os.listdir(here)) if rx.fullmatch(n)]
        else:
            names = [_unescape(head)] if os.path.lexists(here / _unescape(head)) else []
        for name in names:
            child = f"{rel}/{name}" if rel else name
            if rest:
                self._glob(child, rest, out)
            else:
                out.append(child)

    def checksum(self, paths: list[str]) -> str:
        """sha256 over the selected entries (each path with everything under it that is not ignored):
        relative path, type and mode, uid/gid, size, symlink target, the file content's digest
        (``self.hashes``: remembered by stat when unchanged since the last build). Not mtimes."""
        h = hashlib.sha256()
        for src in paths:
            h.update(b"src\0" + src.encode("utf-8", "surrogateescape") + b"\0")
            for e in self.walk(src):
                h.update(f"{e.path}\0{e.mode:o}\0{e.uid}\0{e.gid}\0{e.size}\0{e.link or ''}\0".encode(
                    "utf-8", "surrogateescape"))
                if stat.S_ISREG(e.mode):
                    fd = os.open(self.root / e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    try:
                        h.update(self.hashes.digest(fd))
                    finally:
                        os.close(fd)
        return "sha256:" + h.hexdigest()


_MAGIC = re.compile(r"[*?\[\\]")


def _has_magic(part: str) -> bool:
    return bool(_MAGIC.search(part))


def _unescape(part: str) -> str:
    return re.sub(r"\\(.)", r"\1", part)


def _match_regex(pattern: str) -> re.Pattern[str]:
    """Go's ``filepath.Match`` for one path component as a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            j = i + 1
            negate = j < n and pattern[j] == "^"
            if negate:
                j += 1
            body: list[str] = []
            while j < n and (pattern[j] != "]" or not body):
                c = pattern[j]
                if c == "\\" and j + 1 < n:
                    j += 1
                    c = pattern[j]
                    body.append(re.escape(c))
                elif c == "-" and body:
                    body.append("-")
                else:
                    body.append(re.escape(c) if c not in "-" else c)
                j += 1
            if j >= n:
                raise ContextError(f"syntax error in pattern {pattern!r}")
            out.append("[" + ("^" if negate else "") + "".join(body) + "]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.S)


def resolve(root: Path, rel: str, follow: bool = True) -> Path:
    """``rel`` under ``root`` with symlinks resolved inside ``root`` (a chroot-like lexical walk)."""
    parts = _split(rel)
    done: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, name)
        if (parts or follow) and candidate.is_symlink():
            hops += 1
            if hops > 255:
                raise ContextError(f"too many levels of symbolic links in {rel!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(name)
    return root.joinpath(*done)


_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``stream``: what was peeked at is read again."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.stream.read(len(b))
        b[:len(data)] = data
        return len(data)


@functools.cache
def _decompress_errors() -> tuple[type[BaseException], ...]:
    """What a bad compressed stream raises; asked for only on a tar context (importing zstandard
    costs a cached rebuild ~5 ms otherwise)."""
    import gzip
    import lzma
    import tarfile
    import zlib

    errors: list[type[BaseException]] = [tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
                                         gzip.BadGzipFile]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - a dependency; only zstd contexts need it
        pass
    return tuple(errors)



def _is_tar_header(block: bytes) -> bool:
    import tarfile

    if len(block) < tarfile.BLOCKSIZE:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def sniff_stdin(stream: IO[bytes]) -> tuple[str, IO[bytes]]:
    """("tar", a reader of the uncompressed tar) or ("dockerfile", a reader of the text) — docker's
    rule: compressed data or a valid tar header is an archive, anything else a Dockerfile."""
    import tarfile

    head = b""
    while len(head) < tarfile.BLOCKSIZE:
        chunk = stream.read(tarfile.BLOCKSIZE - len(head))
        if not chunk:
            break
        head += chunk
    whole = io.BufferedReader(_Prefixed(head, stream))
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind == "zstd":
        import zstandard

        return "tar", zstandard.ZstdDecompressor().stream_reader(whole, read_across_frames=True)
    if kind is not None or _is_tar_header(head):
        return "tar", whole
    return "dockerfile", whole


def extract_tar(stream: IO[bytes], dest: Path) -> None:
    """Unpack a context tar into ``dest``: regular files, directories, symlinks (as they are) and
    hardlinks to earlier members; modes and owners kept. Members may not leave ``dest`` by name or
    through a symlink; devices and fifos are refused."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 - closed by the with below
    except _decompress_errors() as e:
        raise ContextError(f"the context on stdin is not a tar archive: {e}") from None
    dirs: list[tuple[Path, int]] = []
    with tar:
        try:
            for member in tar:
                _extract_member(tar, member, dest, dirs)
        except _decompress_errors() as e:
            raise ContextError(f"the context tar is corrupt: {e or type(e).__name__}") from None
    for path, mode in reversed(dirs):
        os.chmod(path, mode)


def _safe_target(dest: Path, name: str) -> Path:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        depth = 0
        for p in parts:
            depth += -1 if p == ".." else 1
            if depth < 0:
                raise ContextError(f"tar member {name!r} points outside the context")
        parts = _split("/".join(parts))
    if not parts:
        return dest
    here = dest
    for p in parts[:-1]:
        here = here / p
        if here.is_symlink():
            raise ContextError(f"tar member {name!r} would be written through the symlink {p!r}")
        if not here.exists():
            here.mkdir(mode=0o755)
        elif not here.is_dir():
            raise ContextError(f"tar member {name!r}: {p!r} is not a directory")
    return here / parts[-1]


def _extract_member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path,
                    dirs: list[tuple[Path, int]]) -> None:
    target = _safe_target(dest, m.name)
    if target == dest:
        return
    if m.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise ContextError(f"tar member {m.name!r} replaces a non-directory")
        target.mkdir(mode=0o700, exist_ok=True)
        dirs.append((target, m.mode & 0o7777))
    else:
        if target.is_symlink() or target.exists():
            if target.is_dir() and not target.is_symlink():
                raise ContextError(f"tar member {m.name!r} replaces a directory")
            target.unlink()
        if m.isreg():
            src = tar.extractfile(m)
            assert src is not None
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.chmod(target, m.mode & 0o7777)
        elif m.issym():
            os.symlink(m.linkname, target)
        elif m.islnk():
            source = _safe_target(dest, m.linkname)
            if source.is_symlink() or not source.is_file():
                raise ContextError(f"tar hardlink {m.name!r} → {m.linkname!r} has no earlier regular file")
            os.link(source, target)
            return
        else:
            raise ContextError(f"tar member {m.name!r}: devices and fifos are not allowed in a context")
    if os.geteuid() == 0:
        os.lchown(target, m.uid, m.gid)
