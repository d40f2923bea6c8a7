"""The real flow: images pushed to a real ``pyreg serve``, then ``pyreg run`` pulls and runs them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests import images
from tests.fixtures.runtime import RuntimeEnv

pytestmark = [pytest.mark.root, pytest.mark.filesystem_only]


def _push(env: RuntimeEnv, image: Any, host: str, repo: str) -> None:
    env.run("push", f"{image.layout}:{image.tag}", f"{host}/{repo}:latest", check=True,
            env={"PYREG_REGISTRY": host}, timeout=300)


def test_run_pulls_then_runs(runtime_env: RuntimeEnv, registry_server: Any, busybox_image: Any,
                             five_layer_image: Any) -> None:
    env = runtime_env
    host = registry_server.host
    reg = {"PYREG_REGISTRY": host}
    _push(env, busybox_image, host, "library/busybox")
    _push(env, five_layer_image, host, "team/five")
    # not in the (empty) local store: run pulls it first; stdout stays the container's
    r = env.run("run", "--rm", "busybox", "echo", "hello", env=reg, timeout=300)
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    assert "busybox" in env.run("images", env=reg, check=True).stdout
    # second run: from the store, no pull
    r = env.run("run", "--name", "second", "busybox", "sh", "-c", "echo $PATH; cat /etc/motd; exit 4",
                env=reg)
    assert r.returncode == 4
    assert r.stdout == "/usr/sbin:/usr/bin:/sbin:/bin\n" + images.MOTD
    assert "Unable to find image" not in r.stderr
    # one inspect for images and containers: the client asks runtime.state for containers
    info = json.loads(env.run("inspect", "second", env=reg, check=True).stdout)
    info = info[0] if isinstance(info, list) else info
    assert info["State"]["ExitCode"] == 4 and info["State"]["OOMKilled"] is False
    # a multi-layer image with whiteouts, pulled and extracted by chain ID, as overlay lower dirs
    script = "; ".join([f"test -e /{p} && echo present:{p}" for p in images.FIVE_LAYER_ABSENT]
                       + ["cat /data/a.txt /data/opaque/new; ls -A /data/opaque"])
    r = env.run("run", "--rm", f"{host}/team/five", "sh", "-c", script + "; true", env=reg, timeout=300)
    assert r.stdout == "A\nnew\nnew\n", r.stdout + r.stderr
    # the layers are shared: the five-layer image's first layer is busybox's, extracted once
    layers = list((env.store / "layers" / "sha256").iterdir())
    assert len(layers) == 5
    env.run("rm", "second", check=True)


def test_run_of_a_missing_image_fails_with_125(runtime_env: RuntimeEnv, registry_server: Any) -> None:
    r = runtime_env.run("run", "--rm", "nothere", "true", env={"PYREG_REGISTRY": registry_server.host})
    assert r.returncode == 125
    assert "nothere" in r.stderr
    assert runtime_env.states() == []
