"""runtime/build/dockerignore.py: the .dockerignore rules of the reference (moby/patternmatcher)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyreg.runtime.build.dockerignore import IgnoreMatcher, clean, ignore_file_for, load, read_patterns


def matcher(text: str) -> IgnoreMatcher:
    return IgnoreMatcher(read_patterns(text))


def test_read_patterns_normalises() -> None:
    text = "# comment\n  # not a comment (does not start the line)\n\n   \n  spaced.txt   \n/abs\n./dot\n" \
           "a//b/../c/\n! keep \n!/neg\n"
    assert read_patterns(text) == ["# not a comment (does not start the line)", "spaced.txt", "abs", "dot",
                                   "a/c", "!keep", "!neg"]


REFERENCE = """\
# comment
*/temp*
*/*/temp*
temp?
"""


@pytest.mark.parametrize("path,ignored", [
    # the reference's example
    ("somedir/temporary.txt", True), ("somedir/temp", True), ("somedir/subdir/temporary.txt", True),
    ("tempa", True), ("tempb", True), ("temp", False), ("temporary", False), ("somedir/x", False),
    ("a/b/c/temp", False),
])
def test_reference_example(path: str, ignored: bool) -> None:
    assert matcher(REFERENCE).is_ignored(path) is ignored


@pytest.mark.parametrize("patterns,path,ignored", [
    # ** matches any number of directories, none included
    ("**/*.go", "x.go", True), ("**/*.go", "a/b/c.go", True), ("**/*.go", "a/b/c.gox", False),
    ("a/**/z", "a/z", True), ("a/**/z", "a/b/c/z", True), ("a/**", "a/b/c", True), ("a/**", "b/a", False),
    # a matched directory ignores everything below it
    ("dir", "dir/sub/file", True), ("/node_modules", "node_modules/m/index.js", True),
    ("./build/out", "build/out/a.o", True), ("build/out", "build/other", False),
    # * and ? never cross /
    ("*.md", "docs/x.md", False), ("*.md", "a.md", True), ("?.md", "ab.md", False),
    # character classes and escapes
    ("[a-c].txt", "b.txt", True), ("[a-c].txt", "d.txt", False), ("[^a-c].txt", "d.txt", True),
    ("\\*.txt", "*.txt", True), ("\\*.txt", "a.txt", False),
    # exceptions: the last matching line wins
    ("*.md\n!README.md", "README.md", False), ("*.md\n!README.md", "a.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README-x.md", False),
    ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
    ("dir\n!dir/keep", "dir/keep", False), ("dir\n!dir/keep", "dir/drop", True),
    # regexp specials are literal
    ("a+b(c).txt", "a+b(c).txt", True), ("a.b", "axb", False),
    # the context root itself is never ignored
    ("*", ".", False), ("*", "x", True),
])
def test_matching(patterns: str, path: str, ignored: bool) -> None:
    assert matcher(patterns).is_ignored(path) is ignored


def test_may_include_under() -> None:
    m = matcher("dir\n!dir/keep\nother\n!**/*.keep")
    assert m.may_include_under("dir") is True
    assert m.may_include_under("other") is True  # **/*.keep might match inside
    assert matcher("dir\n!x/keep").may_include_under("dir") is False
    assert matcher("dir").may_include_under("dir") is False


def test_bad_patterns() -> None:
    with pytest.raises(ValueError, match="illegal exclusion pattern"):
        IgnoreMatcher(["!"])
    with pytest.raises(ValueError, match=r"invalid \.dockerignore pattern"):
        IgnoreMatcher(["[ab"])


def test_clean_is_go_path_clean() -> None:
    assert [clean(p) for p in ["", ".", "a/./b", "a//b/", "../a", "/../a", "a/../..", "/"]] == [
        ".", ".", "a/b", "a/b", "../a", "/a", "..", "/"]


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    df = tmp_path / "build" / "app.Dockerfile"
    df.write_text("FROM scratch\n")
    assert ignore_file_for(tmp_path, df) is None
    (tmp_path / ".dockerignore").write_text("*.log\n")
    assert ignore_file_for(tmp_path, df) == tmp_path / ".dockerignore"
    assert load(tmp_path, df).is_ignored("x.log")
    (tmp_path / "build" / "app.Dockerfile.dockerignore").write_text("*.tmp\n")
    assert ignore_file_for(tmp_path, df) == tmp_path / "build" / "app.Dockerfile.dockerignore"
    m = load(tmp_path, df)
    assert m.is_ignored("x.tmp") and not m.is_ignored("x.log")
