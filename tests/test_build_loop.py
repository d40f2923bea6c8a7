"""The whole loop on pyreg alone: ``pyreg build -t HOST/team/app:1 --push .`` against a running
``pyreg serve``, ``pyreg rmi``, then ``pyreg run --rm HOST/team/app:1`` pulls it back and prints
what the Dockerfile's CMD says; skopeo and podman (tools nobody here wrote) read the pushed image,
and docker pulls and runs it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.runtime import RuntimeEnv
from tests.images import BUSYBOX
from tests.test_build_exec_reference import run_dockerd

pytestmark = [pytest.mark.root, pytest.mark.filesystem_only]


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[dict[str, str]]:
    with run_dockerd(tmp_path) as env:
        yield env

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY message.txt /etc/message
ENV GREETING=hello
CMD ["/bin/busybox", "sh", "-c", "echo $GREETING; /bin/busybox cat /etc/message"]
"""


def test_build_push_rmi_run(runtime_env: RuntimeEnv, registry_server: Any, skopeo: Any, podman: Any,
                            dockerd: dict[str, str], tmp_path: Path) -> None:
    env = runtime_env
    host = registry_server.host
    reg = {"PYREG_REGISTRY": host}
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "message.txt").write_text("built by pyreg\n")
    shutil.copy(BUSYBOX, ctx / "busybox")
    ref = f"{host}/team/app:1"
    r = env.run("build", "-t", ref, "--push", str(ctx), env=reg, timeout=300)
    assert r.returncode == 0, r.stderr
    assert env.states() == []
    env.run("rmi", ref, env=reg, check=True)
    assert "team/app" not in env.run("images", env=reg, check=True).stdout
    r = env.run("run", "--rm", ref, env=reg, timeout=300)
    assert (r.returncode, r.stdout) == (0, "hello\nbuilt by pyreg\n"), r.stderr
    assert "Unable to find image" in r.stderr

    # a build on it where it is not local: the base comes through the pull the CLI wires
    env.run("rmi", ref, env=reg, check=True)
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text(f'FROM {ref}\nRUN ["/bin/busybox", "cp", "/etc/message", "/copied"]\n'
                                      'CMD ["/bin/busybox", "cat", "/copied"]\n')
    r = env.run("build", "-t", "child", str(child), env=reg, timeout=300)
    assert r.returncode == 0, r.stderr
    assert env.run("run", "--rm", "child", env=reg, check=True).stdout == "built by pyreg\n"

    info = skopeo.inspect(f"docker://{ref}")
    assert info["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",  # BuildKit's
                           "GREETING=hello"] and len(info["Layers"]) == 2
    config = skopeo.inspect(f"docker://{ref}", "--config")
    assert config["config"]["Cmd"][0] == "/bin/busybox"
    assert config["rootfs"]["diff_ids"] and len(config["history"]) == 4
    podman.pull(ref)  # (podman run cannot set its rlimits on this machine: pull and inspect only)
    pinfo = podman.image_inspect(ref)
    assert pinfo["Config"]["Cmd"][0] == "/bin/busybox"
    docker = subprocess.run(["docker", "pull", ref], env=dockerd, capture_output=True, text=True, timeout=300)
    assert docker.returncode == 0, docker.stderr
    run = subprocess.run(["docker", "run", "--rm", "--network", "none", ref], env=dockerd,
                         capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stdout) == (0, "hello\nbuilt by pyreg\n"), run.stderr
