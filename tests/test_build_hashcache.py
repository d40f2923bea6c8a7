"""Context file digests remembered by stat (runtime/build/hashcache.py): found again only while the
file is untouched, never for a file rewritten with its size and mtime put back, never for a file
written within the racy window, and a rebuild sees every change."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from pyreg.runtime.build.hashcache import FileHashes
from pyreg.storage.fileversion import RACY_NS, version_token
from tests.fixtures.runtime import RuntimeEnv
from tests.test_build_exec import build, context


def digest_of(hashes: FileHashes, path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return hashes.digest(fd)
    finally:
        os.close(fd)


def test_remembered_while_untouched_and_forgotten_once_written(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one\n" * 1000)
    store = tmp_path / "hashes.json"
    first = FileHashes(store, racy_ns=0)
    assert digest_of(first, f) == hashlib.sha256(f.read_bytes()).digest()
    first.save()
    saved = json.loads(store.read_text())
    assert list(saved.values()) == [hashlib.sha256(f.read_bytes()).hexdigest()]

    # The next build takes the remembered digest without reading the file: shown by a planted value
    planted = {k: "ab" * 32 for k in saved}
    store.write_text(json.dumps(planted))
    assert digest_of(FileHashes(store, racy_ns=0), f) == bytes.fromhex("ab" * 32)
    assert digest_of(FileHashes(store, trust=False, racy_ns=0), f) == hashlib.sha256(f.read_bytes()).digest()

    # Rewritten with the same size and its mtime put back: the ctime moved, so it is read again
    st = os.stat(f)
    f.write_bytes(b"two\n" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert digest_of(FileHashes(store, racy_ns=0), f) == hashlib.sha256(b"two\n" * 1000).digest()


def test_a_file_written_just_now_is_not_remembered(tmp_path: Path) -> None:
    """git's racy case: a write in the same clock tick as the hashing could keep every stat value."""
    f = tmp_path / "f"
    f.write_bytes(b"fresh")
    hashes = FileHashes(tmp_path / "hashes.json", racy_ns=3600 * 10**9)  # "just now": the last hour
    assert digest_of(hashes, f) == hashlib.sha256(b"fresh").digest()
    hashes.save()
    assert not (tmp_path / "hashes.json").exists()


def test_the_window_is_the_file_version_rule(tmp_path: Path) -> None:
    """The key and the racy window are storage/fileversion.py's (the registry's verified blobs use
    the same): a file last changed more than RACY_NS ago is remembered, under its version token."""
    f = tmp_path / "f"
    f.write_bytes(b"settled")
    while time.time_ns() - os.stat(f).st_ctime_ns <= 2 * RACY_NS:  # older than the window, however busy
        time.sleep(RACY_NS / 1e9)
    hashes = FileHashes(tmp_path / "hashes.json")  # the default windows
    assert digest_of(hashes, f) == hashlib.sha256(b"settled").digest()
    hashes.save()
    saved = json.loads((tmp_path / "hashes.json").read_text())
    assert saved == {version_token(os.stat(f)): hashlib.sha256(b"settled").hexdigest()}


@pytest.mark.root
def test_rebuild_sees_a_file_rewritten_with_its_size_and_mtime_put_back(busybox_store: RuntimeEnv,
                                                                         tmp_path: Path) -> None:
    bb = busybox_store
    ctx = context(tmp_path, "FROM busybox\nCOPY data.txt /data.txt\nCMD [\"cat\", \"/data.txt\"]\n",
                  {"data.txt": "version-1\n"})
    time.sleep(2.1)  # past the racy window, so the first build remembers data.txt's digest
    build(bb, ctx, "-t", "hc")
    remembered = bb.store / "buildcache" / "filehashes"
    [entries] = [json.loads(p.read_text()) for p in remembered.iterdir()]
    assert hashlib.sha256(b"version-1\n").hexdigest() in entries.values()
    again = build(bb, ctx, "-t", "hc")
    assert "CACHED" in again.stderr

    st = os.stat(ctx / "data.txt")
    (ctx / "data.txt").write_text("version-2\n")
    os.utime(ctx / "data.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    build(bb, ctx, "-t", "hc")
    assert bb.run("run", "--rm", "hc", check=True).stdout == "version-2\n"

    bb.run("prune", check=True)
    assert not remembered.exists()
