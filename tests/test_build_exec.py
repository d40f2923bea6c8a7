"""``pyreg build`` end to end: Dockerfiles on offline bases (the busybox test image, ``scratch``),
built by the real CLI, then run with ``pyreg run`` and inspected in the local store.

Each test gets its own store and run root (tests/fixtures/runtime.py ``runtime_env``), whose
teardown fails the test if a mount is left; the build tests also check that no container record,
cgroup or build directory is left behind.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.runtime import RuntimeEnv

EPOCH = 1_700_000_000


def build(env: RuntimeEnv, ctx: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = env.run("build", *args, str(ctx), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"build failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def context(tmp_path: Path, dockerfile: str, files: dict[str, bytes | str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
    return ctx


def image(env: RuntimeEnv, ref: str) -> tuple[dict[str, Any], dict[str, Any], list[list[tarfile.TarInfo]]]:
    """(manifest, config, the members of each layer) of a local image."""
    from pyreg.storage.localstore import LocalStore
    from pyreg.storage.reference import parse

    old = os.environ.get("PYREG_REGISTRY")
    os.environ["PYREG_REGISTRY"] = env.env["PYREG_REGISTRY"]
    try:
        store = LocalStore(env.store)
        rec = store.lookup(str(parse(ref)))
    finally:
        if old is None:
            os.environ.pop("PYREG_REGISTRY", None)
        else:
            os.environ["PYREG_REGISTRY"] = old
    manifest = json.loads(store.read_blob(rec.digest))
    config = json.loads(store.read_blob(manifest["config"]["digest"]))
    layers = []
    for desc in manifest["layers"]:
        raw = store.read_blob(desc["digest"])
        if desc["mediaType"].endswith("gzip"):
            raw = gzip.decompress(raw)
        elif desc["mediaType"].endswith("zstd"):
            import zstandard

            raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            layers.append(tar.getmembers())
    return manifest, config, layers


def assert_clean(env: RuntimeEnv) -> None:
    """No container record, no container cgroup, no build mount left by a build."""
    assert env.states() == []
    assert env.container_cgroups() == []
    steps = env.store / "buildcache" / "steps"  # the RUN upper dirs, on disk beside the store
    assert not steps.is_dir() or os.listdir(steps) == []
    with open("/proc/self/mountinfo") as f:
        assert "pyreg-build-" not in f.read()


@pytest.fixture
def bb(busybox_store: RuntimeEnv) -> RuntimeEnv:
    return busybox_store


def test_run_copy_and_config_end_to_end(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
ARG GREETING=hello
ENV APP=/srv/app PATH=/srv/app/bin:$PATH
LABEL org.example.name="demo app" version=1
WORKDIR $APP
COPY --chmod=0755 greet.sh bin/greet
COPY data/ ./data/
RUN echo "$GREETING from run" > made.txt && rm /etc/motd && mkdir -p /opt/x && touch /opt/x/y
RUN rm -rf /opt/x && mkdir /opt/x && echo new > /opt/x/z
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --retries=2 CMD ["greet"]
ENTRYPOINT ["greet"]
CMD ["world"]
""", {"greet.sh": "#!/bin/sh\necho \"hi $1 from $APP\"\n", "data/a.txt": "a\n", "data/sub/b.txt": "b\n"})
    proc = build(bb, ctx, "-t", "demo:1", "--source-date-epoch", str(EPOCH))
    assert "[1/16] FROM busybox" in proc.stderr
    assert "RUN echo" in proc.stderr
    assert_clean(bb)

    run = bb.run("run", "--rm", "demo:1", check=True)
    assert run.stdout == "hi world from /srv/app\n"
    run = bb.run("run", "--rm", "--entrypoint", "sh", "demo:1", "-c",
                 "cat made.txt; id -u; ls -ln /srv/app/bin/greet; cat data/sub/b.txt; ls /opt/x; "
                 "test -e /etc/motd || echo no-motd", check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "hello from run"
    assert lines[1] == "1000"
    assert lines[2].startswith("-rwxr-xr-x") and " 0 " in lines[2]
    assert lines[3:] == ["b", "z", "no-motd"]

    manifest, config, layers = image(bb, "demo:1")
    c = config["config"]
    assert c["Entrypoint"] == ["greet"] and c["Cmd"] == ["world"]
    assert c["WorkingDir"] == "/srv/app" and c["User"] == "1000:1000"
    assert "APP=/srv/app" in c["Env"] and any(e.startswith("PATH=/srv/app/bin:/usr/sbin") for e in c["Env"])
    assert not any(e.startswith("GREETING") for e in c["Env"])
    assert c["Labels"] == {"org.opencontainers.image.title": "busybox",  # inherited
                           "org.example.name": "demo app", "version": "1"}
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGQUIT"
    assert c["Healthcheck"] == {"Test": ["CMD", "greet"], "Interval": 30_000_000_000, "Retries": 2}
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["os"] == "linux" and config["architecture"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 6  # base + WORKDIR, 2 COPY, 2 RUN
    assert len([h for h in config["history"] if not h.get("empty_layer")]) == 6
    assert len(config["history"]) == 1 + 15
    assert all(h["created"] == "2023-11-14T22:13:20Z" for h in config["history"][1:])
    assert config["history"][7]["created_by"].startswith("RUN |1 GREETING=hello /bin/sh -c echo")
    # the first RUN: whiteout of /etc/motd, no mount stubs (/proc, /etc/hosts…) in the layer
    run1 = [m.name for m in layers[4]]
    assert "etc/.wh.motd" in run1 and "srv/app/made.txt" in run1
    stubs = ("etc/hosts", "etc/resolv.conf", "etc/hostname")
    assert not any(n.startswith(("proc", "sys", "dev")) or n in stubs for n in run1)
    # the second RUN: /opt/x made anew over the old one, an opaque directory
    run2 = [m.name for m in layers[5]]
    assert "opt/x/.wh..wh..opq" in run2 and "opt/x/z" in run2
    assert all(m.mtime <= EPOCH for layer in layers for m in layer)
    copy = {m.name: m for m in layers[2]}
    assert copy["srv/app/bin/greet"].mode == 0o755 and copy["srv/app/bin/greet"].uid == 0


def test_cache_hit_miss_and_no_cache(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, """\
FROM busybox
COPY a.txt /a.txt
RUN cat /a.txt > /b.txt && head -c 16 /dev/urandom | od -An -tx1 > /stamp
RUN echo second > /c.txt
""", {"a.txt": "one\n"})
    first = build(bb, ctx, "-t", "c:1", "-q")
    image_id = first.stdout.strip()
    assert image_id.startswith("sha256:")
    again = build(bb, ctx, "-t", "c:1")
    assert again.stderr.count("CACHED") == 3
    assert f"writing image {image_id}" in again.stderr
    os.utime(ctx / "a.txt", (1, 1))  # an mtime alone changes nothing
    assert build(bb, ctx, "-t", "c:1").stderr.count("CACHED") == 3
    (ctx / "a.txt").write_text("two\n")
    changed = build(bb, ctx, "-t", "c:2")
    assert changed.stderr.count("CACHED") == 0
    assert bb.run("run", "--rm", "c:2", "cat", "/b.txt", check=True).stdout == "two\n"
    nocache = build(bb, ctx, "-t", "c:3", "--no-cache")
    assert "CACHED" not in nocache.stderr
    stamp2 = bb.run("run", "--rm", "c:2", "cat", "/stamp", check=True).stdout
    stamp3 = bb.run("run", "--rm", "c:3", "cat", "/stamp", check=True).stdout
    assert stamp2 != stamp3
    bb.run("prune", check=True)
    assert build(bb, ctx, "-t", "c:4").stderr.count("CACHED") == 0
    assert_clean(bb)


def test_scratch_copy_from_stage_multi_stage(bb: RuntimeEnv, tmp_path: Path) -> None:
    import shutil

    from tests.images import BUSYBOX

    ctx = context(tmp_path, """\
FROM busybox AS builder
RUN mkdir /out && echo built > /out/artifact && chown 1000:1000 /out/artifact && ln -s artifact /out/link

FROM scratch
COPY busybox /bin/busybox
COPY --from=builder /out/ /app/
COPY --from=builder --chown=0:0 /out/artifact /owned-by-root
CMD ["/bin/busybox", "cat", "/app/artifact"]
""")
    shutil.copy(BUSYBOX, ctx / "busybox")
    build(bb, ctx, "-t", "tiny")
    assert bb.run("run", "--rm", "tiny", check=True).stdout == "built\n"
    _manifest, config, layers = image(bb, "tiny")
    assert len(layers) == 3
    names = {m.name: m for m in layers[1]}
    assert names["app/artifact"].uid == 1000 and names["app/link"].linkname == "artifact"
    assert {m.name: m for m in layers[2]}["owned-by-root"].uid == 0
    assert not any(n.startswith(("proc", "dev", "etc")) for layer in layers for n in (m.name for m in layer))
    assert "Entrypoint" not in config["config"]
    # BuildKit's empty image: WorkingDir / and the default PATH
    assert config["config"]["WorkingDir"] == "/" and config["config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert_clean(bb)


def test_failed_run_gives_exit_code_and_leaves_nothing(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo partial > /x && exit 3\n")
    proc = build(bb, ctx, "-t", "bad", check=False)
    assert proc.returncode == 1
    assert "Dockerfile:2" in proc.stderr and "exit code: 3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert bb.run("images").stdout.count("bad") == 0
    assert_clean(bb)


def test_interrupted_build_leaves_nothing(bb: RuntimeEnv, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM busybox\nRUN echo started && sleep 300\n")
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = bb.popen("build", "-t", "never", str(ctx))
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == "#2 started" or time.monotonic() > deadline:
                break
        assert bb.states(), "the RUN container is there while it runs"
        assert os.listdir(bb.store / "buildcache" / "steps"), "its upper dir is on disk, not in the run root"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert proc.returncode != 0
        assert_clean(bb)
        assert "never" not in bb.run("images").stdout


def test_build_containers_are_not_listed_nor_removed(bb: RuntimeEnv, tmp_path: Path) -> None:
    """A RUN step's container is the builder's, as docker's: ``ps``/``ps -a`` do not list it, and
    ``rm``/``rm -f`` by its name or id and ``container prune`` do not touch it while the build
    runs: neither while its command runs nor once it ended and the builder still reads its diff
    (held there by stopping the builder)."""
    bb.run("run", "--name", "mine", "busybox", "true", check=True)  # an exited container of the user's
    ctx = context(tmp_path, "FROM busybox\nRUN echo started && sleep 300\n")
    proc = bb.popen("build", "-t", "never", str(ctx))

    def unseen_and_untouched(step: dict[str, Any], force: bool) -> None:
        for args in (("ps",), ("ps", "-a"), ("ps", "-a", "--no-trunc")):
            out = bb.run(*args, check=True).stdout
            assert "build-" not in out and step["id"][:12] not in out, out
        assert bb.run("ps", "-q", check=True).stdout == ""
        assert bb.run("ps", "-aq", "--filter", "name=build-", check=True).stdout == ""
        for ref in (step["name"], step["id"], step["id"][:12]):
            rm = bb.run("rm", *(["-f"] if force else []), ref)
            assert rm.returncode == 1 and "no such container" in rm.stderr, rm
        bb.run("container", "prune", "-f", check=True)
        assert [s["id"] for s in bb.states()] == [step["id"]], "prune removed mine, not the step's"
        assert bb.state(step["id"])["status"] == step["status"]
        assert (bb.run_root / "containers" / step["id"]).is_dir()

    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == "#2 started" or time.monotonic() > deadline:
                break
        name = next(s["name"] for s in bb.states() if s.get("name", "").startswith("build-"))
        step = bb.wait_running(name)
        assert bb.run("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split() == ["mine"]
        unseen_and_untouched(step, force=True)

        os.kill(proc.pid, signal.SIGSTOP)  # the builder, not the step's supervisor (its child)
        try:
            os.kill(step["pid"], signal.SIGKILL)
            unseen_and_untouched(bb.wait_exited(name), force=False)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert_clean(bb)


def test_build_containers_are_not_found_by_container_commands(bb: RuntimeEnv, tmp_path: Path) -> None:
    """BuildKit's rule (podman's too, short of ``--external``): a RUN step's container is not the
    user's. ``kill``, ``stop``, ``top``, ``exec``, ``logs``, ``inspect``, ``port``, ``start``,
    ``restart``, ``wait``, ``attach``, ``cp`` and ``stats`` by its name, id or id prefix answer "no
    such container" (``inspect`` then looks for an image of that name) and leave it running;
    ``stats`` with no name does not show it."""
    ctx = context(tmp_path, "FROM busybox\nRUN echo started && sleep 300\n")
    proc = bb.popen("build", "-t", "never", str(ctx))
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == "#2 started" or time.monotonic() > deadline:
                break
        name = next(s["name"] for s in bb.states() if s.get("name", "").startswith("build-"))
        step = bb.wait_running(name)
        for ref in (step["name"], step["id"], step["id"][:12]):
            for argv in (("kill", ref), ("kill", "-s", "TERM", ref), ("stop", "-t", "0", ref), ("top", ref),
                         ("exec", ref, "true"), ("logs", ref), ("inspect", ref), ("port", ref),
                         ("start", ref), ("restart", "-t", "0", ref), ("wait", ref), ("attach", ref),
                         ("cp", f"{ref}:/etc/passwd", str(tmp_path / "out")),
                         ("stats", "--no-stream", ref)):
                r = bb.run(*argv, timeout=60)
                assert r.returncode != 0 and step["id"] not in r.stdout, (argv, r)
                if argv[0] != "inspect":  # it goes on to look for an image of that name
                    assert "no such container" in r.stderr, (argv, r)
        assert bb.state(step["id"])["status"] == "running" and bb.state(step["id"])["pid"] == step["pid"]
        assert os.path.exists(f"/proc/{step['pid']}")
        out = bb.run("stats", "--no-stream", "-a", "--format", "{{.Name}} {{.ID}}", check=True).stdout
        assert "build-" not in out and step["id"][:12] not in out, out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert_clean(bb)
