"""The filesystem driver's version token (FileInfo.version): what it sees and what it withholds.

The registry trusts a blob it verified while this token is unchanged (registry/layout.py), so
every change to the file must move it: an in-place write of the same size with the mtime put
back as well, since ctime cannot be set back.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from pyreg.storage.filesystem import RACY_COARSE_NS, RACY_NS, FilesystemDriver, version_token
from tests.driver_suite import settled_version


async def test_in_place_write_with_mtime_restored_changes_the_version(tmp_path: Path) -> None:
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("/f", b"A" * 4096)
    before = await settled_version(driver, "/f")
    local = tmp_path / "f"
    st = os.stat(local)
    with open(local, "r+b") as f:  # same inode, same size
        f.seek(100)
        f.write(b"B")
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(local)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert (await driver.stat("/f")).version != before
    assert await settled_version(driver, "/f") != before


async def test_a_file_changed_this_instant_has_no_version_yet(tmp_path: Path) -> None:
    """A write in the same clock tick as a stat would leave every time as it was, so a file
    changed less than RACY_NS ago gets no token (the registry then hashes it as it reads it)."""
    driver = FilesystemDriver(tmp_path)
    await driver.put_content("/g", b"x")
    st = os.stat(tmp_path / "g")
    assert version_token(st, now_ns=st.st_ctime_ns + RACY_NS - 1) is None
    assert version_token(st, now_ns=st.st_ctime_ns - 1) is None  # a clock that went back
    assert version_token(st, now_ns=st.st_ctime_ns + RACY_NS) is not None


def test_whole_second_timestamps_wait_longer() -> None:
    """A file system that keeps whole seconds (ctime ends in nine zeros) gets a longer window."""
    base = 1_700_000_000 * 1_000_000_000
    coarse = SimpleNamespace(st_dev=1, st_ino=2, st_size=3, st_mtime_ns=base, st_ctime_ns=base)
    assert version_token(coarse, now_ns=base + RACY_NS) is None  # type: ignore[arg-type]
    assert version_token(coarse, now_ns=base + RACY_COARSE_NS) is not None  # type: ignore[arg-type]
    fine = SimpleNamespace(st_dev=1, st_ino=2, st_size=3, st_mtime_ns=base + 1, st_ctime_ns=base + 1)
    assert version_token(fine, now_ns=base + 1 + RACY_NS) is not None  # type: ignore[arg-type]
