"""The front half against the reference builders: what docker (classic and BuildKit) and buildah make of
the same Dockerfiles and contexts.

Metadata-only ``FROM scratch`` Dockerfiles show how parsing and expansion came out, through the image
config (Env, Labels, WorkingDir, User, ExposedPorts, StopSignal, Volumes, Cmd, Entrypoint, Shell,
Healthcheck, OnBuild). ``apply_config`` below is a test-side reading of those instructions through
runtime.build's parser, expander and stage plan — the executor's real one lives in build-exec's half.

Where the builders differ (docker 20.10 classic = BuildKit on all of this; buildah 1.28):
- buildah does not expand ``EXPOSE 80-82`` into three ports; docker does (pyreg follows docker);
- buildah runs a shell-form ENTRYPOINT/CMD with ``/bin/sh -c`` even after ``SHELL`` (docker uses SHELL);
- buildah adds the label ``io.buildah.version``;
- a bare ``CMD``/``ENTRYPOINT`` is ``["/bin/sh", "-c", ""]`` in BuildKit (pyreg follows it), the classic
  builder and buildah store ``["/bin/sh", "-c"]`` / nothing;
- with no WORKDIR, BuildKit records ``WorkingDir: "/"``, the classic builder and buildah ``""``;
- buildah's variable expansion always escapes with ``\\``, also under ``# escape=` ``; docker uses the
  directive's character there too (pyreg too);
- docker 20.10's built-in BuildKit frontend lacks ``${v-w}``-style modifiers (newer BuildKit has
  them; the Dockerfiles here avoid them).
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyreg.runtime.build.context import BuildContext
from pyreg.runtime.build.dockerfile import parse
from pyreg.runtime.build.expand import expand, expand_words
from pyreg.runtime.build.stages import plan
from tests.test_build_context import DOCKER_SAW, make_tree

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEYS = ("Env", "Labels", "WorkingDir", "User", "ExposedPorts", "StopSignal", "Volumes", "Cmd", "Entrypoint",
        "Shell", "Healthcheck", "OnBuild")

CASES: dict[str, tuple[str, dict[str, str]]] = {
    "expansion": ("""\
ARG G1=global
ARG G2
FROM scratch
ARG G1
ARG A1=a1 A2="a two" A3
ENV E1=$A1 E2="${A2}" E3='$A1' E4=\\$A1 E5="x\\"y" E6=x\\ y
ENV OLD this is   "old" form
ENV e7=${UNSET:-dflt} e8=${A1:+set} e9=${UNSET:+set} e11=${A3:-colon}
ENV G1V=$G1 G2V=$G2
ENV abc=hello
ENV abc=bye def=$abc
ENV ghi=$abc
LABEL "com.example.vendor"="ACME Incorporated" com.example.label-with-value="foo" version="1.0" \\
      description="This text illustrates \\
that label-values can span multiple lines." multi.label1="value1" other="value3"
LABEL single 'quoted $A1'
WORKDIR /a
WORKDIR b
WORKDIR $A1/c
USER ${A1}:grp
ARG P="8080 9090"
EXPOSE 80 443/udp ${P}
STOPSIGNAL SIGKILL
VOLUME ["/v1", "$A1"]
VOLUME /v2 /v3
CMD echo "hello $A1"
ONBUILD RUN echo $A1
ONBUILD   add . /app
""", {"G2": "fromcli", "A3": "cli3"}),
    "forms": ("""\
FROM scratch
ARG A1=a1
ARG Q="q 1" R='r $A1'
env lower=1
ENV n1=${A1:-"x y"} n3=${UNSET:-'$A1'} n4=a=b n5= n6=$Q n7=$R
LABEL l1= "l2"="v2"
WORKDIR "/quoted dir"
WORKDIR $UNSET/x
USER  "u s"
EXPOSE 80-82 7000/tcp
SHELL ["/bin/bash", "-c"]
ENTRYPOINT ["a", 'b']
CMD [ "x" ] trailing
HEALTHCHECK --interval=5s --retries=3 CMD curl -f http://x/ || exit 1
LABEL cont="echo \\
# comment in continuation
  after-comment \\

  after-empty"
""", {}),
    "escape": ("""\
# escape=`

FROM scratch
ENV W=c:\\windows\\system32 `
    X=`$HOME Y="`"q`""
WORKDIR c:\\
LABEL a=1 `
      b=2
""", {}),
}
CASES["escape_indented"] = ("  " + CASES["escape"][0], {})
# Bare CMD and ENTRYPOINT: BuildKit stores the shell form of "" (pyreg too); the classic builder
# stores ["/bin/sh", "-c"] for CMD and nothing for ENTRYPOINT.
CASES["bare"] = ("FROM scratch\nENTRYPOINT\nCMD\n", {})
CLASSIC_DIFFERS = {"bare": {"Cmd", "Entrypoint"}}


def apply_config(text: str, build_args: dict[str, str]) -> dict[str, Any]:
    """The image config a FROM scratch stage of metadata instructions gives, the way docker makes it."""
    df = parse(text)
    p = plan(df, build_args)
    stage = p.stages[p.target].stage
    esc = df.escape
    env: dict[str, str] = {"PATH": DEFAULT_PATH.split("=", 1)[1]}
    args: dict[str, str] = {}
    cfg: dict[str, Any] = dict.fromkeys(KEYS)
    cfg.update(WorkingDir="", User="")
    shell = ["/bin/sh", "-c"]
    labels: dict[str, str] = {}

    def scope() -> dict[str, str]:
        return {**args, **env}

    for ins in stage.instructions:
        k = ins.keyword
        if k == "ARG":
            for d in ins.arg_decls():
                if d.name in build_args:
                    args[d.name] = build_args[d.name]
                elif d.default is not None:
                    args[d.name] = expand(d.default, scope(), esc)
                elif d.name in p.global_scope:
                    args[d.name] = p.global_scope[d.name]
        elif k == "ENV":
            s = scope()
            env.update({expand(a, s, esc): expand(b, s, esc) for a, b in ins.pairs()})
        elif k == "LABEL":
            s = scope()
            labels.update({expand(a, s, esc): expand(b, s, esc) for a, b in ins.pairs()})
        elif k == "WORKDIR":
            cfg["WorkingDir"] = posixpath.join(cfg["WorkingDir"] or "/", expand(ins.args[0], scope(), esc))
        elif k == "USER":
            cfg["User"] = expand(ins.args[0], scope(), esc)
        elif k == "STOPSIGNAL":
            cfg["StopSignal"] = expand(ins.args[0], scope(), esc)
        elif k == "EXPOSE":
            ports = cfg["ExposedPorts"] or {}
            for word in (w for a in ins.args for w in expand_words(a, scope(), esc)):
                port, _, proto = word.partition("/")
                lo, _, hi = port.partition("-")
                for n in range(int(lo), int(hi or lo) + 1):
                    ports[f"{n}/{proto or 'tcp'}"] = {}
            cfg["ExposedPorts"] = ports
        elif k == "VOLUME":
            cfg["Volumes"] = {**(cfg["Volumes"] or {}), **{expand(v, scope(), esc): {} for v in ins.args}}
        elif k in ("CMD", "ENTRYPOINT"):
            cfg["Cmd" if k == "CMD" else "Entrypoint"] = ins.args if ins.exec_form else [*shell, ins.args[0]]
        elif k == "SHELL":
            shell = ins.args
            cfg["Shell"] = shell
        elif k == "HEALTHCHECK":
            cfg["Healthcheck"] = ins.healthcheck()
        elif k == "ONBUILD":
            cfg["OnBuild"] = [*(cfg["OnBuild"] or []), ins.onbuild_expression()]
        else:
            raise AssertionError(f"apply_config does not read {k}")
    cfg["Env"] = [f"{a}={b}" for a, b in env.items()]
    cfg["Labels"] = labels or None
    return cfg


def pick(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: config.get(k) or None for k in KEYS}
    out["WorkingDir"] = config.get("WorkingDir") or "/"  # BuildKit says "/" where classic leaves it empty
    out["User"] = config.get("User") or ""
    return out


# --- the reference builders ---------------------------------------------------------------------------

class Docker:
    def __init__(self, cli: str, sock: Path, home: Path):
        self.cli, self.sock, self.home = cli, sock, home

    def run(self, *argv: str, buildkit: bool = False, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER_CONFIG": str(self.home),
               "DOCKER_BUILDKIT": "1" if buildkit else "0"}
        return subprocess.run([self.cli, *argv], env=env, capture_output=True, text=True, timeout=300, **kw)

    def build(self, ctx: Path, build_args: dict[str, str], buildkit: bool) -> str:
        argv = ["build", "-q", "--no-cache"]
        for k, v in build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        res = self.run(*argv, str(ctx), buildkit=buildkit)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.strip().splitlines()[-1]

    def config(self, image: str) -> dict[str, Any]:
        res = self.run("image", "inspect", image)
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout)[0]["Config"])

    def files(self, image: str, tmp: Path) -> list[str]:
        cid = self.run("create", image, "x").stdout.strip()
        try:
            out = tmp / "export.tar"
            res = self.run("export", "-o", str(out), cid)
            assert res.returncode == 0, res.stderr
            with tarfile.open(out) as tar:
                return sorted(m.name.rstrip("/") for m in tar.getmembers())
        finally:
            self.run("rm", cid)


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    dockerd = shutil.which("dockerd")
    cli = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
    if not dockerd or not cli or os.geteuid() != 0:
        pytest.skip("needs root, dockerd and the docker CLI (Debian's docker.io)")
    base = tmp_path_factory.mktemp("dk")
    sock = base / "docker.sock"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([dockerd, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
                             "--pidfile", str(base / "docker.pid"), "-H", f"unix://{sock}",
                             "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    d = Docker(cli, sock, base / "home")
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail("dockerd exited: " + (base / "dockerd.log").read_text()[-2000:])
            if sock.exists() and d.run("version").returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("dockerd did not come up: " + (base / "dockerd.log").read_text()[-2000:])
        yield d
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base / "data")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(base / "exec")], capture_output=True)


def write_context(tmp: Path, text: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "Dockerfile").write_text(text)
    return tmp


@pytest.mark.parametrize("buildkit", [False, True], ids=["classic", "buildkit"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_docker(docker: Docker, tmp_path: Path, case: str, buildkit: bool) -> None:
    text, build_args = CASES[case]
    image = docker.build(write_context(tmp_path / "ctx", text), build_args, buildkit)
    theirs = pick(docker.config(image))
    ours = pick(apply_config(text, build_args))
    differs = set() if buildkit else CLASSIC_DIFFERS.get(case, set())
    assert {k: v for k, v in ours.items() if k not in differs} == {
        k: v for k, v in theirs.items() if k not in differs}
    for key in differs:  # the differences are real (else the list is stale)
        assert ours[key] != theirs[key]


@pytest.mark.parametrize("buildkit", [False, True], ids=["classic", "buildkit"])
def test_dockerignore_matches_docker(docker: Docker, tmp_path: Path, buildkit: bool) -> None:
    ctx = make_tree(tmp_path / "ctx")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    image = docker.build(ctx, {}, buildkit)
    copied = [f[len("ctx/"):] for f in docker.files(image, tmp_path) if f.startswith("ctx/")]
    ours = sorted(e.path for e in BuildContext.from_dir(ctx).walk() if e.path)
    assert ours == copied == DOCKER_SAW[1:]


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    exe = shutil.which("buildah")
    if not exe or os.geteuid() != 0:
        pytest.skip("needs root and buildah")
    base = tmp_path_factory.mktemp("bah")
    argv = [exe, "--root", str(base / "root"), "--runroot", str(base / "run"), "--storage-driver", "vfs"]
    yield argv
    subprocess.run([*argv, "rmi", "--all", "--force"], capture_output=True)


# Where buildah 1.28 differs from docker on these Dockerfiles (see the module docstring).
BUILDAH_DIFFERS = {"forms": {"ExposedPorts", "Entrypoint"}, "escape": {"Env", "WorkingDir"},
                   "bare": {"Cmd", "Entrypoint"},
                   "escape_indented": {"Env", "WorkingDir"}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_buildah(buildah: list[str], tmp_path: Path, case: str) -> None:
    text, build_args = CASES[case]
    ctx = write_context(tmp_path / "ctx", text)
    argv = [*buildah, "build", "--isolation", "chroot", "--format", "docker", "-q"]
    for k, v in build_args.items():
        argv += ["--build-arg", f"{k}={v}"]
    res = subprocess.run([*argv, str(ctx)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    image = res.stdout.strip().splitlines()[-1]
    res = subprocess.run([*buildah, "inspect", "--type", "image", image], capture_output=True, text=True)
    theirs = pick(json.loads(res.stdout)["Docker"]["config"])
    labels = {k: v for k, v in (theirs["Labels"] or {}).items() if k != "io.buildah.version"}
    theirs["Labels"] = labels or None
    ours = pick(apply_config(text, build_args))
    differs = BUILDAH_DIFFERS.get(case, set())
    assert {k: v for k, v in ours.items() if k not in differs} == {
        k: v for k, v in theirs.items() if k not in differs}
    for key in differs:  # the differences are real (else this list is stale)
        assert ours[key] != theirs[key]


@pytest.mark.parametrize("pattern", ["**/*.txt", "*/*.txt", "[ab].txt", "d/?/c.txt", "../d/b.txt"])
def test_copy_globs_match_docker(docker: Docker, tmp_path: Path, pattern: str) -> None:
    """COPY source patterns pick the same files: filepath.Match per component, ``**`` no more than ``*``,
    ``..`` clamped at the context root (BuildKit; the classic builder refuses it)."""
    ctx = tmp_path / "ctx"
    for name in ["a.txt", "b.txt", "c.txt", "d/b.txt", "d/e/c.txt"]:
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(name)
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY {pattern} /out/\n")
    image = docker.build(ctx, {}, buildkit=True)
    copied = [f[len("out/"):] for f in docker.files(image, tmp_path) if f.startswith("out/")]
    ours = [posixpath.basename(p) for p in BuildContext(ctx).sources(pattern)]
    assert sorted(ours) == copied
