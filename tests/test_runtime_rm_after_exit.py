"""``pyreg run --rm`` tells the container's exit status first and finishes the removal after, in a
detached child (runtime/container.py ``_remove_after_exit``): what any command can see (the state,
the name, the cgroup) is gone before ``run`` returns; the renamed directory under ``removing/``
goes right after, and one whose cleaner was killed is swept by a later one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from pyreg.runtime import container
from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root


def wait_empty(d: Path, timeout: float = 30) -> list[str]:
    """What is left in ``d`` once it is empty or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        left = sorted(os.listdir(d)) if d.is_dir() else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def test_exit_status_first_then_everything_removed(busybox_store: RuntimeEnv) -> None:
    bb = busybox_store
    script = "mkdir -p /a/b/c && echo data > /a/b/c/f && ln -s /etc /a/link && echo out; exit 7"
    r = bb.run("run", "--rm", "--name", "quick", "busybox", "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "")
    # seen by no command any more, before run returned: no state, no cgroup, the name is free
    assert bb.states() == []
    assert bb.container_cgroups() == []
    assert bb.run("run", "--rm", "--name", "quick", "busybox", "true").returncode == 0
    # the rest went by way of removing/ (the container's upper dir with a tree and a symlink)
    removing = bb.run_root / container.REMOVING
    assert removing.is_dir()
    assert wait_empty(removing) == []
    assert (bb.root / "store").is_dir()  # nothing outside the container's directory followed


def test_ps_never_sees_a_half_removed_container(busybox_store: RuntimeEnv) -> None:
    """Every record ``ps -a`` lists while --rm containers come and go is whole: its directory
    leaves containers/ in one rename."""
    bb = busybox_store
    runs = [bb.popen("run", "--rm", "busybox", "true") for _ in range(4)]
    seen = []
    while any(p.poll() is None for p in runs):
        for d in (bb.run_root / "containers").iterdir() if (bb.run_root / "containers").is_dir() else []:
            try:
                names = set(os.listdir(d))
            except FileNotFoundError:
                continue
            if "state.json" in names:
                seen.append(names)
        time.sleep(0.001)
    for p in runs:
        _, err = p.communicate()
        assert p.returncode == 0, err
    for names in seen:
        assert {"upper", "work", "rootfs", "hosts"} <= names, names
    assert bb.states() == []
    assert wait_empty(bb.run_root / container.REMOVING) == []


def test_a_removal_whose_cleaner_died_is_swept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trash = tmp_path / container.REMOVING
    left = trash / ("a" * 64)
    (left / "upper" / "deep" / "er").mkdir(parents=True)
    (left / "upper" / "deep" / "er" / "f").write_text("x")
    (left / "state.json").write_text(json.dumps({"id": "a" * 64}))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (left / "upper" / "link").symlink_to(outside)
    container._sweep(str(trash))
    assert sorted(os.listdir(trash)) == [left.name]  # young: its cleaner may be at work
    monkeypatch.setattr(container, "STALE_REMOVAL", 0.0)
    container._sweep(str(trash))
    assert os.listdir(trash) == []
    assert (outside / "keep").read_text() == "keep"
