"""runtime/build/context.py: the build context — ignore rules applied, COPY sources, checksums, tar on stdin.

The expected file lists are what docker 20.10 (classic and BuildKit) copied with ``COPY . /ctx/`` from
the same tree and ``.dockerignore`` (tests/test_build_reference.py repeats that against a live dockerd).
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pyreg.runtime.build.context import BuildContext, ContextError, resolve

IGNORE = """\
# comment
*/temp*
*/*/temp*
temp?
**/*.go
*.md
!README*.md
README-secret.md
dir
!dir/keep
/node_modules
./build/out
.git
Dockerfile
  spaced.txt
"""
FILES = ["a.md", "README.md", "README-secret.md", "docs/x.md", "docs/README.md", "temp", "tempa", "sub/temp1",
         "sub/temporary.txt", "sub/deep/temp2", "x.go", "pkg/y.go", "pkg/z.txt", "dir/keep", "dir/drop",
         ".git/HEAD", "node_modules/m/index.js", "build/out/a.o", "spaced.txt", "keepdir/f", "Dockerfile"]
# What docker copied (both builders), the context root itself as "".
DOCKER_SAW = ["", ".dockerignore", "README.md", "build", "dir", "dir/keep", "docs", "docs/README.md",
              "docs/x.md", "keepdir", "keepdir/f", "link", "pkg", "pkg/z.txt", "sub", "sub/deep", "temp"]


def make_tree(root: Path) -> Path:
    for name in FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name + "\n")
    (root / ".dockerignore").write_text(IGNORE)
    os.symlink("/etc/passwd", root / "link")
    return root


def test_walk_applies_dockerignore_like_docker(tmp_path: Path) -> None:
    ctx = BuildContext.from_dir(make_tree(tmp_path))
    assert sorted(e.path for e in ctx.walk()) == DOCKER_SAW
    link = next(e for e in ctx.walk() if e.path == "link")
    assert link.link == "/etc/passwd"  # a symlink is an entry, never followed out of the context


def test_sources_globs_follow_filepath_match(tmp_path: Path) -> None:
    for name in ["a.txt", "b.txt", "c.log", "[x].txt", "*.txt", "d/e.txt", "d/f/g.txt", "sp ace"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    ctx = BuildContext(tmp_path)
    assert ctx.sources("*.txt") == ["*.txt", "[x].txt", "a.txt", "b.txt"]
    assert ctx.sources("[ab].txt") == ["a.txt", "b.txt"]
    assert ctx.sources("[^ab].txt") == ["*.txt"]
    assert ctx.sources("\\*.txt") == ["*.txt"]
    assert ctx.sources("\\[x\\].txt") == ["[x].txt"]
    assert ctx.sources("?.log") == ["c.log"]
    assert ctx.sources("*/*.txt") == ["d/e.txt"]
    assert ctx.sources("**/*.txt") == ["d/e.txt"]  # ** is only * in COPY sources (one component)
    assert ctx.sources("d/*/g.txt") == ["d/f/g.txt"]
    assert ctx.sources("sp ace") == ["sp ace"]
    # .. cannot leave the context: BuildKit clamps it at the root, as here
    assert ctx.sources("../../a.txt") == ["a.txt"]
    assert ctx.sources("/d/../b.txt") == ["b.txt"]
    assert ctx.sources(".") == [""]
    with pytest.raises(ContextError, match='"nope": not found'):
        ctx.sources("nope")
    with pytest.raises(ContextError, match="matched nothing"):
        ctx.sources("*.nope")


def test_ignored_sources_are_not_found(tmp_path: Path) -> None:
    ctx = BuildContext.from_dir(make_tree(tmp_path))
    with pytest.raises(ContextError, match="not found"):
        ctx.sources("x.go")
    assert ctx.sources("*.md") == ["README.md"]
    assert ctx.sources("dir/*") == ["dir/keep"]


def test_sources_follow_symlinks_inside_the_context(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_text("f")
    os.symlink("real/f", tmp_path / "lf")
    os.symlink("/real", tmp_path / "ld")  # absolute: the context's /real, not the host's
    os.symlink("../../../../etc/passwd", tmp_path / "out")
    ctx = BuildContext(tmp_path)
    [lf] = ctx.resolve_sources("lf")
    assert (lf.rel, lf.path) == ("lf", tmp_path / "real" / "f")
    [ld] = ctx.resolve_sources("ld")
    assert ld.path == tmp_path / "real"
    assert resolve(tmp_path, "ld/f") == tmp_path / "real" / "f"
    with pytest.raises(ContextError, match='"/etc/passwd" not found'):
        ctx.resolve_sources("out")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(ContextError, match="too many levels"):
        ctx.resolve("loop")


def test_checksum_content_and_metadata_not_mtime(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("one")
    (tmp_path / "d" / "junk.log").write_text("x")
    (tmp_path / ".dockerignore").write_text("*/*.log\n")
    os.symlink("a", tmp_path / "d" / "l")
    ctx = BuildContext.from_dir(tmp_path)
    first = ctx.checksum(["d"])
    assert first.startswith("sha256:") and len(first) == 71
    os.utime(tmp_path / "d" / "a", (1, 1))
    assert ctx.checksum(["d"]) == first  # mtime alone changes nothing
    (tmp_path / "d" / "junk.log").write_text("changed")
    assert ctx.checksum(["d"]) == first  # ignored files are not part of it
    (tmp_path / "d" / "a").write_text("two")
    second = ctx.checksum(["d"])
    assert second != first
    os.chmod(tmp_path / "d" / "a", 0o600)
    third = ctx.checksum(["d"])
    assert third != second
    os.unlink(tmp_path / "d" / "l")
    os.symlink("b", tmp_path / "d" / "l")
    assert ctx.checksum(["d"]) != third
    assert ctx.checksum(["d/a"]) != ctx.checksum(["d"])


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
          link: str = "", uid: int = 0) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = info.gid = uid
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def test_tar_context(tmp_path: Path) -> None:
    stream = make_tar([
        entry("./", tarfile.DIRTYPE, mode=0o755),
        entry("Dockerfile", data=b"FROM scratch\n"),
        entry(".dockerignore", data=b"**/*.log\n"),
        entry("app/", tarfile.DIRTYPE, mode=0o750),
        entry("app/run.sh", data=b"#!/bin/sh\n", mode=0o755, uid=1000),
        entry("app/debug.log", data=b"x"),
        entry("app/link", tarfile.SYMTYPE, link="/etc/passwd"),
        entry("app/hard", tarfile.LNKTYPE, link="app/run.sh"),
        entry("/abs/file", data=b"abs"),
    ], "w:gz")
    dest = tmp_path / "ctx"
    ctx = BuildContext.from_tar(stream, dest)
    assert (dest / "app" / "run.sh").stat().st_mode & 0o7777 == 0o755
    assert (dest / "app").stat().st_mode & 0o7777 == 0o750
    assert os.readlink(dest / "app" / "link") == "/etc/passwd"
    assert (dest / "app" / "hard").stat().st_ino == (dest / "app" / "run.sh").stat().st_ino
    assert (dest / "abs" / "file").read_bytes() == b"abs"  # absolute names land inside
    if os.geteuid() == 0:
        assert (dest / "app" / "run.sh").stat().st_uid == 1000
    assert ctx.is_ignored("app/debug.log")
    assert "app/debug.log" not in [e.path for e in ctx.walk()]


@pytest.mark.parametrize("members,message", [
    ([entry("../escape", data=b"x")], "points outside the context"),
    ([entry("a/../../escape", data=b"x")], "points outside the context"),
    ([entry("d", tarfile.SYMTYPE, link=".."), entry("d/escape", data=b"x")], "through the symlink"),
    ([entry("d", tarfile.SYMTYPE, link="TMP"), entry("d/escape", data=b"x")], "through the symlink"),
    ([entry("h", tarfile.LNKTYPE, link="../escape")], "points outside the context"),
    ([entry("h", tarfile.LNKTYPE, link="missing")], "no earlier regular file"),
    ([entry("dev", tarfile.CHRTYPE)], "devices and fifos are not allowed"),
    ([entry("f", data=b"x"), entry("f/g", data=b"y")], "is not a directory"),
])
def test_hostile_tar_is_refused(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
                                message: str) -> None:
    canary = tmp_path / "escape"  # where every hostile member aims (TMP: an absolute link to tmp_path)
    for info, _ in members:
        info.linkname = info.linkname.replace("TMP", str(tmp_path))
    with pytest.raises(ContextError, match=message):
        BuildContext.from_tar(make_tar(members), tmp_path / "ctx")
    assert not canary.exists()


def test_stdin_dockerfile_without_context(tmp_path: Path) -> None:
    """``docker build - < Dockerfile``: what is not an archive is the Dockerfile, and the only file."""
    text = b"FROM scratch\nLABEL a=b\n" * 100
    ctx = BuildContext.from_tar(io.BytesIO(text), tmp_path / "ctx")
    assert ctx.dockerfile == tmp_path / "ctx" / "Dockerfile"
    assert ctx.dockerfile.read_bytes() == text
    assert [e.path for e in ctx.walk()] == ["", "Dockerfile"]


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz", "zstd"])
def test_stdin_tar_compressions(tmp_path: Path, compression: str) -> None:
    members = [entry("Dockerfile", data=b"FROM scratch\n"), entry("src/a", data=b"a" * 5000)]
    if compression == "zstd":
        import zstandard

        stream = io.BytesIO(zstandard.ZstdCompressor().compress(make_tar(members).getvalue()))
    else:
        stream = make_tar(members, f"w:{compression}" if compression else "w")
    ctx = BuildContext.from_tar(stream, tmp_path / "ctx", "Dockerfile")
    assert ctx.dockerfile == tmp_path / "ctx" / "Dockerfile"
    assert (tmp_path / "ctx" / "src" / "a").read_bytes() == b"a" * 5000


def test_corrupt_tar(tmp_path: Path) -> None:
    import zstandard

    raw = make_tar([entry("a", data=os.urandom(30000))]).getvalue()
    for data in (make_tar([entry("a", data=os.urandom(30000))], "w:gz").getvalue()[:400],
                 make_tar([entry("a", data=os.urandom(30000))], "w:xz").getvalue()[:400],
                 zstandard.ZstdCompressor().compress(raw)[:400], b"\x1f\x8bnot gzip at all", raw[:5000]):
        with pytest.raises(ContextError, match=r"corrupt|not a tar"):
            BuildContext.from_tar(io.BytesIO(data), tmp_path / "ctx")


def test_missing_dir_context(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        BuildContext.from_dir(tmp_path / "nope")
