"""README's "Build an image" block, as a user types it: a busybox image from scratch and the
static binary, then examples/hello on top of it, then run — no test-only image builder needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.runtime import RuntimeEnv

pytestmark = [pytest.mark.root, pytest.mark.filesystem_only]

REPO = Path(__file__).resolve().parents[1]


def test_readme_builds_busybox_from_scratch_then_hello(runtime_env: RuntimeEnv, tmp_path: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed")
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples, ignore=shutil.ignore_patterns("busybox/busybox"))
    shutil.copy(busybox, examples / "busybox" / "busybox")
    env = runtime_env
    env.run("build", "-q", "-t", "busybox", str(examples / "busybox"), check=True)
    env.run("build", "-q", "-t", "hello", str(examples / "hello"), check=True)
    out = env.run("run", "--rm", "hello", check=True)
    assert out.stdout.strip() == "hello, world (built by pyreg build)"
    listed = env.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()
    # the hello image's FROM busybox is the one built from scratch just before, in the local store
    assert sorted(name.split("/", 1)[1] for name in listed) == ["library/busybox:latest",
                                                                "library/hello:latest"], listed
