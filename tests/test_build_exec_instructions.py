"""``pyreg build``: each instruction and flag of issue 13 on the busybox test image, checked by
running the result and reading its config and layers."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.fixtures.runtime import RuntimeEnv
from tests.test_build_exec import assert_clean, build, context, image

pytestmark = [pytest.mark.root]


@pytest.fixture
def bb(busybox_store: RuntimeEnv) -> RuntimeEnv:
    return busybox_store


def sh(env: RuntimeEnv, ref: str, script: str) -> str:
    return env.run("run", "--rm", "--entrypoint", "sh", ref, "-c", script, check=True).stdout


def test_cmd_entrypoint_shell_and_reset_rules(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox AS base
CMD ["echo", "from base"]

FROM base AS reset
ENTRYPOINT ["echo", "ep"]

FROM base AS kept
CMD echo shell form $HOME
ENTRYPOINT ["/bin/sh", "-c"]

FROM busybox AS shelled
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell was $0 $-" > /shell.txt
CMD cat /shell.txt
""")
    build(bb, ctx, "-t", "reset", "--target", "reset")
    assert bb.run("run", "--rm", "reset", check=True).stdout == "ep\n"
    _m, config, _l = image(bb, "reset")
    assert "Cmd" not in config["config"] and config["config"]["Entrypoint"] == ["echo", "ep"]
    build(bb, ctx, "-t", "kept", "--target", "kept")
    _m, config, _l = image(bb, "kept")
    assert config["config"]["Cmd"] == ["/bin/sh", "-c", "echo shell form $HOME"]  # set in the stage: kept
    build(bb, ctx, "-t", "shelled")
    _m, config, _l = image(bb, "shelled")
    assert config["config"]["Cmd"] == ["/bin/sh", "-e", "-c", "cat /shell.txt"]
    assert config["config"]["Shell"] == ["/bin/sh", "-e", "-c"]
    assert "e" in bb.run("run", "--rm", "shelled", check=True).stdout.split()[-1]


def test_onbuild_triggers_run_in_the_child(bb: RuntimeEnv, tmp_path: Path) -> None:
    parent = context(tmp_path / "p", """\
FROM busybox
ONBUILD COPY msg.txt /from-child.txt
ONBUILD RUN echo triggered > /triggered
""")
    build(bb, parent, "-t", "parent")
    _m, config, _l = image(bb, "parent")
    assert config["config"]["OnBuild"] == ["COPY msg.txt /from-child.txt", "RUN echo triggered > /triggered"]
    child = context(tmp_path / "c", "FROM parent\nRUN cat /triggered /from-child.txt > /both\n",
                    {"msg.txt": "child context\n"})
    proc = build(bb, child, "-t", "child")
    assert "ONBUILD" in proc.stderr
    assert sh(bb, "child", "cat /both") == "triggered\nchild context\n"
    _m, config, _l = image(bb, "child")
    assert "OnBuild" not in config["config"]


def test_add_tar_globs_dirs_and_url_refused(bb: RuntimeEnv, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, uid in (("pkg/a.txt", b"A\n", 1000), ("pkg/sub/b.txt", b"B\n", 0)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.uid, ti.gid = len(data), 0o640, uid, uid
            tar.addfile(ti, io.BytesIO(data))
    ctx = context(tmp_path, """\
FROM busybox
ADD pkg.tar.gz /opt/
ADD plain.txt /opt/plain-added.txt
COPY src/*.c /srcs/
COPY src /whole/
COPY [ "src/one.c", "/named.c" ]
COPY --chown=user:user src/two.c /home/user/
""", {"pkg.tar.gz": buf.getvalue(), "plain.txt": "p\n", "src/one.c": "1\n", "src/two.c": "2\n",
      "src/readme.md": "r\n"})
    build(bb, ctx, "-t", "adds")
    out = sh(bb, "adds", "cat /opt/pkg/a.txt /opt/pkg/sub/b.txt /opt/plain-added.txt; ls /srcs; ls /whole; "
                         "cat /named.c; stat -c '%u:%g %a' /opt/pkg/a.txt /home/user/two.c")
    assert out.split("\n") == ["A", "B", "p", "one.c", "two.c", "one.c", "readme.md", "two.c", "1",
                               "1000:1000 640", "1000:1000 644", ""]

    bad = context(tmp_path / "bad", "FROM busybox\nCOPY src/one.c src/two.c /not-a-dir\n",
                  {"src/one.c": "1", "src/two.c": "2"})
    proc = build(bb, bad, check=False)
    assert proc.returncode == 1 and "must be a directory and end with a /" in proc.stderr
    url = context(tmp_path / "url", "FROM busybox\nADD https://example.com/x.tar.gz /x\n")
    proc = build(bb, url, check=False)
    assert proc.returncode == 1
    assert "Dockerfile:2: ADD" in proc.stderr and "offline" in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) < 300 and "Traceback" not in proc.stderr
    unsupported = context(tmp_path / "unsup", "FROM busybox\nCOPY --exclude=*.md src /x/\n", {"src/a": "a"})
    proc = build(bb, unsupported, check=False)
    assert proc.returncode == 1 and "--exclude is not supported" in proc.stderr
    missing = context(tmp_path / "missing", "FROM busybox\nCOPY nothere /x\n")
    proc = build(bb, missing, check=False)
    assert proc.returncode == 1 and "Dockerfile:2: COPY" in proc.stderr and "not found" in proc.stderr
    assert_clean(bb)


def test_dockerignore_heredocs_workdir_and_user(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
WORKDIR /app/deep
COPY . .
ARG KEY=value
COPY <<EOF /etc/heredoc.conf
key=$KEY
EOF
RUN <<EOT
echo line one > /app/script-out
echo line two >> /app/script-out
EOT
RUN <<'SCRIPT'
#!/bin/sh -e
echo "shebang script as $0" > /app/shebang
SCRIPT
USER user
WORKDIR /app/owned
RUN id -un > /tmp/who && cp /tmp/who /app/owned/who
""", {".dockerignore": "secret.txt\n*.log\n!keep.log\n", "secret.txt": "no\n", "a.log": "no\n",
      "keep.log": "yes\n", "code.py": "print()\n"})
    build(bb, ctx, "-t", "misc")
    out = sh(bb, "misc", "ls -A /app/deep; cat /etc/heredoc.conf /app/script-out /app/owned/who /app/shebang")
    assert out.split("\n") == [".dockerignore", "Dockerfile", "code.py", "keep.log", "key=value", "line one",
                               "line two", "user", "shebang script as /dev/pipes/SCRIPT", ""]
    assert "pipes" not in sh(bb, "misc", "ls /dev")


def test_run_mounts_cache_and_bind(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
RUN --mount=type=cache,target=/cache echo run >> /cache/log && cat /cache/log | wc -l > /count
RUN --mount=type=bind,source=input,target=/in cat /in/data > /copied && \\
    (touch /in/x 2>/dev/null && echo writable || echo read-only) > /bind-mode
""", {"input/data": "bound\n"})
    build(bb, ctx, "-t", "m1")
    build(bb, ctx, "-t", "m2", "--no-cache")
    assert sh(bb, "m1", "cat /count") == "1\n"
    out = sh(bb, "m2", "cat /count /copied /bind-mode; test -e /cache || test -e /in || echo no-stubs")
    assert out == "2\nbound\nread-only\nno-stubs\n"
    _m, _config, layers = image(bb, "m2")
    assert not any(m.name.startswith(("cache", "in")) for m in layers[-1] + layers[-2])
    assert_clean(bb)


def test_args_target_platform_labels_stdin_and_zstd(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
ARG BASE=busybox
ARG UNSEEN=global
FROM $BASE AS first
ARG UNSEEN
ARG TARGETARCH
ARG FROMCLI=default
ENV FROMENV=env-${FROMCLI}
RUN echo "$UNSEEN|$TARGETARCH|$FROMCLI|$FROMENV" > /args

FROM first AS never-built
RUN exit 1

FROM first
LABEL stage=last
""")
    iid = tmp_path / "iid"
    proc = build(bb, ctx, "-t", "args", "--build-arg", "FROMCLI=cli", "--build-arg", "NOTUSED=1",
                 "--label", "team=builders", "--iidfile", str(iid), "--compression", "zstd")
    assert "never-built" not in proc.stderr and "NOTUSED" in proc.stderr
    arch = json.loads(bb.run("inspect", "args", check=True).stdout)
    arch = arch[0] if isinstance(arch, list) else arch
    manifest, config, _l = image(bb, "args")
    assert sh(bb, "args", "cat /args") == f"global|{config['architecture']}|cli|env-cli\n"
    assert config["config"]["Labels"]["team"] == "builders" and config["config"]["Labels"]["stage"] == "last"
    assert not any(e.startswith("FROMCLI") for e in config["config"]["Env"])
    assert iid.read_text() == manifest["config"]["digest"]
    assert manifest["layers"][-1]["mediaType"].endswith("+zstd")

    proc = build(bb, ctx, "--platform", "linux/s390x" if config["architecture"] != "s390x" else "linux/amd64",
                 check=False)
    assert proc.returncode == 1 and "platform" in proc.stderr and "Traceback" not in proc.stderr

    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w") as tar:
        dockerfile = b"FROM busybox\nCOPY f /f\nCMD [\"cat\", \"/f\"]\n"
        for name, data in (("Dockerfile", dockerfile), ("f", b"stdin\n")):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    env = {**bb.env}
    import subprocess
    import sys

    from tests.fixtures.runtime import REPO_ROOT

    r = subprocess.run([sys.executable, "-m", "pyreg", "build", "-t", "fromstdin", "-q", "-"],
                       input=tarred.getvalue(), env=env, cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("sha256:")
    assert bb.run("run", "--rm", "fromstdin", check=True).stdout == "stdin\n"
    lone = b'FROM busybox\nCMD ["echo", "lone Dockerfile"]\n'  # docker build - < Dockerfile
    r = subprocess.run([sys.executable, "-m", "pyreg", "build", "-t", "lone", "-"], input=lone, env=env,
                       cwd=REPO_ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert bb.run("run", "--rm", "lone", check=True).stdout == "lone Dockerfile\n"
    assert os.listdir(bb.store)  # the store was used, the context tmp dir is gone
    assert_clean(bb)


def test_network_none_and_host(bb: RuntimeEnv, tmp_path: Path) -> None:
    host_ifaces = sorted(os.listdir("/sys/class/net"))
    ctx = context(tmp_path, """\
FROM busybox
RUN ls /sys/class/net > /none.txt
RUN --network=host ls /sys/class/net > /host.txt
""")
    build(bb, ctx, "-t", "nets", "--network", "none")
    assert sh(bb, "nets", "cat /none.txt") == "lo\n"
    assert sh(bb, "nets", "cat /host.txt").split() == host_ifaces


def test_copy_link_from_index_and_from_image(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
RUN echo zero > /zero

FROM busybox
RUN mkdir /data && echo old > /data/old
RUN rm -rf /data && mkdir /data && echo replaced > /data/only
COPY --link linked.txt /data/linked.txt
COPY --from=0 /zero /zero
COPY --from=busybox /etc/motd /motd-from-image
""", {"linked.txt": "link\n"})
    build(bb, ctx, "-t", "linked")
    out = sh(bb, "linked", "ls /data; cat /zero /motd-from-image")
    assert out.split("\n")[:4] == ["linked.txt", "only", "zero", "pyreg busybox test image"]
    _m, _c, layers = image(bb, "linked")
    link_layer = [m.name for m in layers[3]]
    assert link_layer == ["data", "data/linked.txt"]  # --link: made on nothing, not on the layers below
    assert not any(".wh." in n for n in link_layer)


def test_escape_directive_and_syntax_note(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
# syntax=docker/dockerfile:1
# escape=`
FROM busybox
ENV P=C:\\dir `
    Q=two
RUN echo "$P $Q" > /out
""")
    proc = build(bb, ctx, "-t", "escaped")
    assert "syntax=docker/dockerfile:1" in proc.stderr and "ignored" in proc.stderr
    assert sh(bb, "escaped", "cat /out") == "C:\\dir two\n"


def test_run_has_the_defences_of_pyreg_run(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
RUN grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status > /status && echo $$ > /pid && \\
    cat /proc/self/cgroup > /cgroup && hostname > /host
""")
    build(bb, ctx, "-t", "defended")
    status = dict(line.split(":\t") for line in sh(bb, "defended", "cat /status").splitlines())
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"
    assert status["CapEff"] == "00000000a80425fb"  # docker's default set, as pyreg run
    assert sh(bb, "defended", "cat /pid") == "1\n"  # its own pid namespace
    assert sh(bb, "defended", "cat /cgroup").strip().endswith(":/")  # its own cgroup namespace
    assert sh(bb, "defended", "cat /host").strip() != os.uname().nodename


def test_copy_through_an_image_symlink_stays_in_the_image(bb: RuntimeEnv, tmp_path: Path) -> None:
    canary = tmp_path / "host-canary"  # an absolute host path the image's symlinks name
    canary.mkdir()
    ctx = context(tmp_path, f"""\
FROM busybox
RUN mkdir -p {canary} && ln -s {canary} /escape && ln -s ../../../../../../../{canary} /climb
COPY planted.txt /escape/planted.txt
COPY planted.txt /climb/
WORKDIR /escape/work
""", {"planted.txt": "planted\n"})
    build(bb, ctx, "-t", "contained")
    assert list(canary.iterdir()) == []  # nothing reached the host
    out = sh(bb, "contained", f"cat {canary}/planted.txt; ls {canary}")
    assert out == "planted\nplanted.txt\nwork\n"
    # a symlink to a missing target: its directories are made, as BuildKit does, inside the image
    dangling = context(tmp_path / "d", f"""\
FROM busybox
RUN ln -s {canary}/x /dangling && ln -s ../../../../../../../{canary}/y/z /climb && ln -s loop /loop
COPY f /dangling/f
COPY f /climb/sub/
WORKDIR /dangling/w
""", {"f": "f\n"})
    build(bb, dangling, "-t", "dangling")
    assert list(canary.iterdir()) == []  # still nothing on the host
    out = sh(bb, "dangling", f"cat {canary}/x/f {canary}/y/z/sub/f; pwd; readlink /dangling")
    assert out == f"f\nf\n{canary}/x/w\n{canary}/x\n"
    looping = context(tmp_path / "l", "FROM busybox\nRUN ln -s loop /loop\nCOPY f /loop/f\n", {"f": "f\n"})
    proc = build(bb, looping, check=False)
    assert proc.returncode == 1 and "symbolic links" in proc.stderr and "Traceback" not in proc.stderr
