"""Issue 12's container commands at docker grade, on real containers (tests/fixtures/runtime.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root

LOOP = "while true; do sleep 0.05; done"


def _two(env: RuntimeEnv) -> tuple[str, str]:
    """One running container (label tier=web) and one exited (code 3)."""
    a = env.run("run", "-d", "--name", "alpha", "-l", "tier=web", "busybox", "sh", "-c", LOOP,
                check=True).stdout.strip()
    b = env.run("run", "-d", "--name", "beta", "busybox", "sh", "-c", "exit 3", check=True).stdout.strip()
    env.wait_running(a)
    env.wait_exited(b)
    return a, b


def test_ps_filter(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, b = _two(env)
    q = lambda *f: env.run("ps", "-q", *f, check=True).stdout.split()  # noqa: E731
    assert q() == [a[:12]]
    assert sorted(q("-a")) == sorted([a[:12], b[:12]])
    assert q("--filter", "status=exited") == [b[:12]]  # docker: a status filter needs no -a
    assert q("-f", "status=running") == [a[:12]]
    assert q("-a", "--filter", "name=bet") == [b[:12]]
    assert q("-a", "--filter", f"id={b[:6]}") == [b[:12]]
    assert sorted(q("-a", "--filter", "ancestor=busybox")) == sorted([a[:12], b[:12]])
    assert q("-a", "--filter", "ancestor=nosuch") == []
    assert q("-a", "--filter", "label=tier") == [a[:12]]
    assert q("-a", "--filter", "label=tier=web") == [a[:12]]
    assert q("-a", "--filter", "label=tier=db") == []
    # the same key twice: either; different keys: both
    assert sorted(q("-a", "-f", "name=alpha", "-f", "name=beta")) == sorted([a[:12], b[:12]])
    assert q("-a", "-f", "name=alpha", "-f", "status=exited") == []
    assert q("-a", "--no-trunc", "-f", "name=alpha") == [a]
    bad = env.run("ps", "--filter", "colour=red")
    assert bad.returncode == 1 and "invalid filter" in bad.stderr and "Traceback" not in bad.stderr


def test_ps_format(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, b = _two(env)
    out = env.run("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}", check=True).stdout
    assert sorted(out.splitlines()) == sorted([f"{a[:12]} alpha running", f"{b[:12]} beta exited"])
    labels = env.run("ps", "--format", "{{.Labels}}", check=True).stdout.strip().split(",")
    assert "tier=web" in labels  # with the image's own labels, as docker
    out = env.run("ps", "--format", "table {{.ID}}\\t{{.Names}}\\t{{.Status}}", check=True).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "NAMES", "STATUS"]
    assert lines[1].startswith(a[:12] + "   ") and "alpha" in lines[1] and "Up" in lines[1]
    doc = json.loads(env.run("ps", "--format", "{{json .}}", check=True).stdout)
    assert doc["Names"] == "alpha" and doc["Image"] == "busybox"
    bad = env.run("ps", "--format", "{{.Nope}}")
    assert bad.returncode == 1 and "Nope" in bad.stderr and "Traceback" not in bad.stderr


def test_ps_size(busybox_store: RuntimeEnv) -> None:
    """docker's SIZE: what the container wrote, and with its image (virtual), in docker's units."""
    import re

    env = busybox_store
    env.run("run", "-d", "--name", "writer", "busybox", "sh", "-c", "head -c 2500000 /dev/zero > /big",
            check=True)
    env.wait_exited("writer")
    lines = env.run("ps", "-a", "-s", check=True).stdout.splitlines()
    assert lines[0].split()[-1] == "SIZE"
    m = re.search(r"(\S+) \(virtual (\S+)\)$", lines[1])
    assert m is not None, lines
    assert m.group(1) == "2.5MB"  # the 2,500,000 bytes written (and the empty mount points)
    assert re.fullmatch(r"\d+(\.\d+)?MB", m.group(2)) and m.group(2) != m.group(1)
    out = env.run("ps", "-a", "--format", "{{.Names}} {{.Size}}", check=True).stdout
    assert out.startswith("writer 2.5MB (virtual ")


def test_inspect_and_images_format(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, _b = _two(env)
    out = env.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}} {{.Name}}", "beta",
                  check=True).stdout
    assert out == "exited 3 /beta\n"
    assert env.run("inspect", "-f", "{{.Id}}", "alpha", check=True).stdout.strip() == a
    assert json.loads(env.run("inspect", "-f", "{{json .State}}", "alpha", check=True).stdout)["Running"]
    out = env.run("images", "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout
    assert out.splitlines() == ["registry.invalid:5000/library/busybox:latest"]
    out = env.run("images", "--format", "table {{.Repository}}\\t{{.ID}}", check=True).stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "IMAGE", "ID"] and len(out) == 2


def test_exec_stdin_and_tty(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "box", "busybox", "sh", "-c", LOOP, check=True)
    env.wait_running("box")
    # without -i the command reads /dev/null, as docker's; with -i it gets our stdin
    assert env.run("exec", "box", "cat", input="hello\n", check=True).stdout == ""
    assert env.run("exec", "-i", "box", "cat", input="hello\n", check=True).stdout == "hello\n"
    # -t: a pty of the container's devpts, with the exit code passed through
    r = env.run("exec", "-t", "box", "sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both; exit 4")
    assert r.returncode == 4
    lines = r.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "both", r.stdout
    r = env.run("exec", "-it", "-e", "Q=z", "-u", "1000", "-w", "/tmp", "box", "sh", "-c",
                "read x; echo got-$x-$Q-$(id -u)-$(pwd)", input="abc\n")
    assert "got-abc-z-1000-/tmp" in r.stdout.replace("\r", ""), r.stdout + r.stderr


def test_wait_start_restart_attach(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    cid = env.run("run", "-d", "--name", "job", "busybox", "sh", "-c",
                  "echo run >> /count; wc -l < /count; exit 5", check=True).stdout.strip()
    w = env.run("wait", "job", check=True)
    assert w.stdout == "5\n"  # docker wait prints the exit code and itself exits 0
    assert env.run("logs", "job", check=True).stdout == "1\n"
    # start: again, with the filesystem as it was left (the file has two lines now)
    assert env.run("start", "job", check=True).stdout == "job\n"
    assert env.run("wait", "job", check=True).stdout == "5\n"
    assert env.run("logs", "job", check=True).stdout == "1\n2\n"
    r = env.run("start", "-a", "job")
    assert (r.returncode, r.stdout) == (5, "3\n")
    assert env.state(cid)["status"] == "exited"
    assert env.run("wait", "nosuch").returncode == 1
    # restart of a running one: stopped (exit 137 from SIGKILL after -t), then running again
    env.run("run", "-d", "--name", "srv", "busybox", "sh", "-c", "echo up; " + LOOP, check=True)
    first = env.wait_running("srv")["pid"]
    assert env.run("restart", "-t", "0", "srv", check=True).stdout == "srv\n"
    second = env.wait_running("srv")["pid"]
    assert second != first
    # attach follows the output from now until the container exits, then exits with its code
    env.run("kill", "srv", check=True)
    env.run("run", "-d", "--name", "chatty", "busybox", "sh", "-c",
            "until [ -e /stop ]; do echo via-attach; sleep 0.05; done; echo bye; exit 3", check=True)
    env.wait_running("chatty")
    att = env.popen("attach", "chatty")
    assert att.stdout is not None
    assert att.stdout.readline() == "via-attach\n"
    env.run("exec", "chatty", "touch", "/stop", check=True)
    out, _ = att.communicate(timeout=60)
    assert out.endswith("bye\n") and att.returncode == 3
    assert env.run("attach", "chatty").returncode == 1  # stopped: nothing to attach to


def test_logs_tail(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "talk", "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo $i; done",
            check=True)
    env.run("wait", "talk", check=True)
    assert env.run("logs", "--tail", "2", "talk", check=True).stdout == "4\n5\n"
    assert env.run("logs", "-n", "0", "talk", check=True).stdout == ""
    assert env.run("logs", "--tail", "all", "talk", check=True).stdout == "1\n2\n3\n4\n5\n"
    assert env.run("logs", "--tail", "99", "talk", check=True).stdout == "1\n2\n3\n4\n5\n"
    bad = env.run("logs", "--tail", "x", "talk")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _stamped(out: str) -> list[tuple[str, str]]:
    """``logs -t`` output as (timestamp, text) pairs; each stamp is RFC 3339, UTC, 9 digits."""
    import re

    pairs = []
    for line in out.splitlines():
        stamp, _, text = line.partition(" ")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp), line
        pairs.append((stamp, text))
    return pairs


def test_logs_since_until_timestamps(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "clock", "busybox", "sh", "-c",
            "echo one; sleep 0.3; echo two; sleep 0.3; printf 'thr'; sleep 0.2; echo ee", check=True)
    env.run("wait", "clock", check=True)
    lines = _stamped(env.run("logs", "-t", "clock", check=True).stdout)
    assert [t for _, t in lines] == ["one", "two", "three"]  # a line written in two parts: one stamp
    stamps = [s for s, _ in lines]
    assert stamps == sorted(stamps)
    logs = lambda *a: env.run("logs", *a, "clock", check=True).stdout  # noqa: E731
    # the expectation comes from the stamps themselves: lines that arrived together share one
    assert logs("--since", stamps[1]) == "".join(f"{t}\n" for s, t in lines if s >= stamps[1])
    assert logs("--until", stamps[1]) == "".join(f"{t}\n" for s, t in lines if s <= stamps[1])
    assert logs("--since", stamps[1], "--until", stamps[1]) == "".join(
        f"{t}\n" for s, t in lines if s == stamps[1])
    assert logs("--since", "1h") == "one\ntwo\nthree\n"  # a duration: that long ago
    assert logs("--since", "2099-01-01T00:00:00Z") == ""
    assert logs("--until", "2000-01-01") == ""
    assert logs("--until", "1h") == ""
    assert logs("--since", "946684800", "--tail", "1") == "three\n"  # a Unix timestamp; tail of it
    assert logs("-t", "--tail", "1").endswith(" three\n")
    assert [t for _, t in _stamped(logs("-f", "-t"))] == ["one", "two", "three"]
    for bad in ("--since=yesterday", "--until=x10", "--since=-5m", "--since=2024-13-01", "--until="):
        r = env.run("logs", bad, "clock")
        assert r.returncode == 2 and "invalid time" in r.stderr and "Traceback" not in r.stderr, bad


def test_logs_follow_timestamps_while_running(busybox_store: RuntimeEnv) -> None:
    """``logs -f -t`` started before the lines are written: each line that arrives has its time."""
    env = busybox_store
    env.run("run", "-d", "--name", "live", "busybox", "sh", "-c",
            "sleep 0.5; for i in 1 2 3; do echo line$i; sleep 0.3; done", check=True)
    follower = env.popen("logs", "-f", "-t", "live")
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert [t for _, t in _stamped(out)] == ["line1", "line2", "line3"]


def test_logs_follow_until_a_time_then_stops(busybox_store: RuntimeEnv) -> None:
    """``logs -f --until T`` follows a running container's lines until T, then stops (docker): the
    follower exits while the container still runs, with what came before T and nothing after."""
    from pyreg.storage.units import parse_time

    env = busybox_store
    env.run("run", "-d", "--name", "ticker", "busybox", "sh", "-c",
            "until [ -e /go ]; do sleep 0.05; done; while :; do echo tick; sleep 0.05; done", check=True)
    until = time.time_ns() + 4_000_000_000
    follower = env.popen("logs", "-f", "-t", "--until", f"{until // 10**9}.{until % 10**9:09d}", "ticker")
    env.run("exec", "ticker", "touch", "/go", check=True)  # the lines start after the follower did
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    lines = _stamped(out)
    assert lines and {t for _, t in lines} == {"tick"}
    assert all(parse_time(s) <= until for s, _ in lines)
    assert env.state("ticker")["status"] == "running"  # it stopped at the time, not at the exit
    env.run("rm", "-f", "ticker", check=True)


def test_logs_of_a_container_logged_before_line_times(busybox_store: RuntimeEnv) -> None:
    """A container whose log has no ``log.times`` (pyreg before it kept them): its lines have no
    time; after a restart the new lines do."""
    env = busybox_store
    env.run("run", "-d", "--name", "old", "busybox", "echo", "before", check=True)
    env.run("wait", "old", check=True)
    log = Path(env.run("inspect", "-f", "{{.LogPath}}", "old", check=True).stdout.strip())
    (log.parent / "log.times").unlink()
    assert env.run("logs", "-t", "old", check=True).stdout == "before\n"
    assert env.run("logs", "--since", "1h", "old", check=True).stdout == ""
    assert env.run("logs", "--until", "2099-01-01", "old", check=True).stdout == "before\n"
    env.run("start", "old", check=True)
    env.run("wait", "old", check=True)
    out = env.run("logs", "-t", "old", check=True).stdout.splitlines()
    assert out[0] == "before" and out[1].endswith(" before") and out[1][:4].isdigit()
    assert env.run("logs", "--since", "1h", "old", check=True).stdout == "before\n"
    assert env.run("logs", "--tail", "1", "old", check=True).stdout == "before\n"


def test_cp_both_ways(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "files", "busybox", "sh", "-c", LOOP, check=True)
    env.wait_running("files")
    src = tmp_path / "in.txt"
    src.write_text("from-host\n")
    env.run("cp", str(src), "files:/tmp/", check=True)  # into an existing directory
    env.run("cp", str(src), "files:/tmp/renamed", check=True)  # as a new name
    r = env.run("exec", "files", "cat", "/tmp/in.txt", "/tmp/renamed", check=True)
    assert r.stdout == "from-host\n" * 2
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("deep\n")
    env.run("cp", str(tree), "files:/tmp", check=True)  # an existing dir: into it
    assert env.run("exec", "files", "cat", "/tmp/tree/sub/f", check=True).stdout == "deep\n"
    env.run("cp", str(tree), "files:/opt", check=True)  # a new path: the copy is it, as docker
    assert env.run("exec", "files", "cat", "/opt/sub/f", check=True).stdout == "deep\n"
    env.run("exec", "files", "sh", "-c", "mkdir -p /data/x && echo out > /data/x/y && ln -s y /data/x/l",
            check=True)
    out = tmp_path / "out"
    out.mkdir()
    env.run("cp", "files:/data", str(out), check=True)
    assert (out / "data" / "x" / "y").read_text() == "out\n"
    assert os.readlink(out / "data" / "x" / "l") == "y"
    env.run("cp", "files:/data/x/y", str(tmp_path / "single"), check=True)
    assert (tmp_path / "single").read_text() == "out\n"
    # '-': tar streams, as docker's
    r = subprocess.run([sys.executable, "-m", "pyreg", "cp", "files:/data", "-"], env=env.env,
                       cwd=env.root, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert sorted(tar.getnames()) == ["data", "data/x", "data/x/l", "data/x/y"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo("streamed")
        ti.size = 3
        tar.addfile(ti, io.BytesIO(b"abc"))
    subprocess.run([sys.executable, "-m", "pyreg", "cp", "-", "files:/tmp"], env=env.env,
                   input=buf.getvalue(), capture_output=True, check=True)
    assert env.run("exec", "files", "cat", "/tmp/streamed", check=True).stdout == "abc"
    bad = env.run("cp", str(src), str(tmp_path / "x"))
    assert bad.returncode == 1 and "CONTAINER:PATH" in bad.stderr


def test_cp_stopped_container_both_ways(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    """As docker: a stopped container's files (its upper dir over its image layers) can be copied
    out and in; what goes in lands in its upper dir, and nothing stays mounted on the host."""
    from tests.fixtures.runtime import mounts_mentioning

    env = busybox_store
    env.run("run", "-d", "--name", "done", "busybox", "sh", "-c",
            "echo made > /made && mkdir -p /d/x && echo deep > /d/x/f && ln -s f /d/x/l", check=True)
    env.wait_exited("done")
    cdir = Path(env.run("inspect", "-f", "{{.LogPath}}", "done", check=True).stdout.strip()).parent
    env.run("cp", "done:/made", str(tmp_path / "made"), check=True)
    assert (tmp_path / "made").read_text() == "made\n"
    out = tmp_path / "out"
    out.mkdir()
    env.run("cp", "done:/d", str(out), check=True)
    assert (out / "d" / "x" / "f").read_text() == "deep\n" and os.readlink(out / "d" / "x" / "l") == "f"
    env.run("cp", "done:/bin/busybox", str(tmp_path / "bb"), check=True)  # from an image layer
    assert (tmp_path / "bb").stat().st_size > 0
    r = subprocess.run([sys.executable, "-m", "pyreg", "cp", "done:/d", "-"], env=env.env,
                       capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert sorted(tar.getnames()) == ["d", "d/x", "d/x/f", "d/x/l"]
    src = tmp_path / "in.txt"
    src.write_text("from-host\n")
    env.run("cp", str(src), "done:/tmp/", check=True)
    env.run("cp", str(src), "done:/made", check=True)  # over a file of the upper dir
    assert (cdir / "upper" / "tmp" / "in.txt").read_text() == "from-host\n"
    assert (cdir / "upper" / "made").read_text() == "from-host\n"
    env.run("cp", "done:/tmp/in.txt", str(tmp_path / "back"), check=True)
    assert (tmp_path / "back").read_text() == "from-host\n"
    assert mounts_mentioning(str(cdir)) == []
    missing = env.run("cp", "done:/no/such", str(tmp_path / "x"))
    assert missing.returncode == 1 and missing.stderr.startswith("pyreg: cp: ")
    assert "Traceback" not in missing.stderr
    env.run("start", "done", check=True)  # the container itself still starts, with the new file
    env.wait_exited("done")
    assert (cdir / "upper" / "tmp" / "in.txt").read_text() == "from-host\n"


def _tree(path: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = os.readlink(p) if p.is_symlink() else (
            p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.mark.parametrize("stopped", [False, True], ids=["running", "stopped"])
def test_cp_never_follows_container_symlinks_to_the_host(busybox_store: RuntimeEnv, tmp_path: Path,
                                                         stopped: bool) -> None:
    """A hostile container whose paths are symlinks to host locations: copying in writes only
    inside the container, copying out copies the links, never the host files they name — running
    or stopped (then through its overlay, mounted for the copy)."""
    env = busybox_store
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "secret").write_text("host-secret\n")
    before = _tree(canary)
    env.run("run", "-d", "--name", "evil", "busybox", "sh", "-c", LOOP, check=True)
    env.wait_running("evil")
    up = "../" * 20
    env.run("exec", "evil", "sh", "-c",
            f"ln -s {canary} /abs && ln -s {up}{str(canary).lstrip('/')} /rel && mkdir /d && "
            f"ln -s {canary} /d/link && ln -s {canary}/secret /d/file && ln -s /proc/1/fd/1 /fdlink",
            check=True)
    if stopped:
        env.run("stop", "-t", "0", "evil", check=True)
        env.wait_exited("evil")
    payload = tmp_path / "payload"
    payload.write_text("attacker\n")
    for dest in ("evil:/abs", "evil:/abs/", "evil:/rel/", "evil:/rel/secret", "evil:/abs/secret",
                 "evil:/d/file", "evil:/fdlink"):
        env.run("cp", str(payload), dest)  # may succeed inside the container or fail: never the host
        assert _tree(canary) == before, dest
    # copying out: the links come out as links; the host secret is never read through them
    for src in ("evil:/abs/secret", "evil:/rel/secret", "evil:/d/file", "evil:/fdlink"):
        dest = tmp_path / "got"
        env.run("cp", src, str(dest))
        if dest.is_symlink():  # the link itself, as docker copies it: not what it names
            dest.unlink()
        elif dest.exists():
            assert b"host-secret" not in dest.read_bytes(), src
            dest.unlink()
    out = tmp_path / "out"
    out.mkdir()
    env.run("cp", "evil:/d", str(out), check=True)
    assert os.readlink(out / "d" / "link") == str(canary)
    assert os.readlink(out / "d" / "file") == f"{canary}/secret"
    assert _tree(canary) == before
    r = subprocess.run([sys.executable, "-m", "pyreg", "cp", "evil:/d", "-"], env=env.env,
                       capture_output=True)
    assert b"host-secret" not in r.stdout


def test_top(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "procs", "busybox", "sh", "-c", "sleep 1000 & " + LOOP, check=True)
    rec = env.wait_running("procs")
    lines = env.run("top", "procs", check=True).stdout.splitlines()
    assert lines[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    pids = {int(line.split()[1]): line for line in lines[1:]}
    assert rec["pid"] in pids and "sh -c sleep 1000" in pids[rec["pid"]]  # host pids, as docker's
    assert any(line.split()[7:] == ["sleep", "1000"] for line in lines[1:])
    env.run("kill", "procs", check=True)
    env.wait_exited("procs")
    assert env.run("top", "procs").returncode == 1


def test_stats_no_stream(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    env.run("run", "-d", "--name", "busy", "-m", "64m", "busybox", "sh", "-c",
            "sleep 1000 & while true; do :; done", check=True)
    env.wait_running("busy")
    r = env.run("stats", "--no-stream", check=True)
    head, row = r.stdout.splitlines()
    cols = ("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS")
    assert all(col in head for col in cols), head
    assert "busy" in row and "/ 64MiB" in row
    doc = json.loads(env.run("stats", "--no-stream", "--format", "{{json .}}", "busy", check=True).stdout)
    assert doc["PIDs"] == "2"  # the shell and its sleep, from the cgroup
    assert float(doc["CPUPerc"].rstrip("%")) > 0  # a busy loop: CPU time, not zero
    assert doc["MemUsage"].endswith("/ 64MiB")


def test_container_prune(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    a, b = _two(env)
    c = env.run("run", "-d", "--name", "gamma", "-l", "keep=1", "busybox", "true", check=True).stdout.strip()
    env.wait_exited(c)
    assert env.run("container", "prune", input="n\n", check=True).stdout.count("\n") == 1  # asked; no
    assert len(env.states()) == 3
    r = env.run("container", "prune", "-f", "--filter", "label=keep", check=True)
    assert c in r.stdout and b not in r.stdout
    r = env.run("container", "prune", "-f", check=True)
    assert r.stdout.startswith("Deleted Containers:\n" + b + "\n") and "Total reclaimed space:" in r.stdout
    assert [s["id"] for s in env.states()] == [a]  # the running one stays


def test_restart_policies(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    # on-failure:2: the first run and two restarts, then it stays exited (a counter in its fs)
    env.run("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c",
            "echo x >> /n; wc -l < /n; exit 1", check=True)
    deadline = time.monotonic() + 60
    while env.run("logs", "flaky", check=True).stdout != "1\n2\n3\n":
        assert time.monotonic() < deadline, env.run("logs", "flaky").stdout
        time.sleep(0.1)
    rec = env.wait_exited("flaky")
    assert rec["exit_code"] == 1 and rec["restart_count"] == 2
    # on-failure does not restart a success
    env.run("run", "-d", "--name", "ok", "--restart", "on-failure", "busybox", "true", check=True)
    assert env.run("wait", "ok", check=True).stdout == "0\n"
    assert "restart_count" not in env.state("ok")
    # always: restarted after exit 0 too; pyreg stop ends the policy
    env.run("run", "-d", "--name", "forever", "--restart", "always", "busybox", "sh", "-c",
            "echo x >> /n; [ $(wc -l < /n) -ge 3 ] && exec sleep 1000; exit 0", check=True)
    while env.state("forever").get("restart_count", 0) < 2:
        assert time.monotonic() < deadline + 60
        time.sleep(0.1)
    env.wait_running("forever")
    env.run("stop", "-t", "0", "forever", check=True)
    rec = env.wait_exited("forever")
    assert rec["restart_count"] == 2 and env.state("forever")["status"] == "exited"
    bad = env.run("run", "--restart", "sometimes", "busybox", "true")
    assert bad.returncode == 2 and "restart policy" in bad.stderr
    assert env.run("run", "--restart", "always", "busybox", "true").returncode == 125  # needs -d
