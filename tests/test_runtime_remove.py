"""Removing a container's directory (``container.remove_tree``): the shallow path without shutil
for the usual empty container, shutil.rmtree for the rest, and nothing outside followed."""

from __future__ import annotations

import os
from pathlib import Path

from pyreg.runtime import container


def container_dir(root: Path) -> Path:
    """What ``run --rm true`` leaves: files, empty upper and rootfs, overlay's work/work."""
    d = root / "c"
    for sub in ("upper", "rootfs", "work/work"):
        (d / sub).mkdir(parents=True)
    for name in ("state.json", "hosts", "hostname", "resolv.conf", "log"):
        (d / name).write_text("x")
    return d


def canary(root: Path) -> Path:
    host = root / "host"
    host.mkdir()
    (host / "keep").write_text("host data")
    (host / "sub").mkdir()
    return host


def test_an_empty_container_goes_the_shallow_way(tmp_path: Path) -> None:
    d = container_dir(tmp_path)
    os.chmod(d / "work" / "work", 0)  # as overlay leaves it
    assert container._remove_shallow(str(d))
    assert not d.exists()


def test_a_container_with_content_is_removed_by_rmtree(tmp_path: Path) -> None:
    d = container_dir(tmp_path)
    (d / "upper" / "etc").mkdir()
    (d / "upper" / "etc" / "f").write_text("y")
    (d / "upper" / "file").write_text("z")
    assert not container._remove_shallow(str(d))  # declines: depth 2 holds more than empty dirs
    container.remove_tree(str(d))
    assert not d.exists()


def test_symlinks_a_container_made_are_not_followed(tmp_path: Path) -> None:
    """The container owns its upper dir: links to the host's directories in it (at each depth
    the shallow path looks at) are removed as links, the host's files stay."""
    host = canary(tmp_path)
    d = container_dir(tmp_path)
    (d / "upper" / "link").symlink_to(host)
    (d / "upper" / "sub-link").symlink_to(host / "sub")
    (d / "rootfs-link").symlink_to(host)
    container.remove_tree(str(d))
    assert not d.exists()
    assert (host / "keep").read_text() == "host data"
    assert (host / "sub").is_dir()


def test_a_link_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    host = canary(tmp_path)
    link = tmp_path / "c"
    link.symlink_to(host)
    assert not container._remove_shallow(str(link))
    assert (host / "keep").read_text() == "host data"
    assert (host / "sub").is_dir()
