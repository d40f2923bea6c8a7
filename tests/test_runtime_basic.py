"""``pyreg run`` end to end on the busybox test image: isolation, config, exit codes, rootfs."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests import images
from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root


def test_echo_hello(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "busybox", "echo", "hello")
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    # --rm: nothing is left behind, not even the cgroup
    assert busybox_store.states() == []
    assert busybox_store.container_cgroups() == []


@pytest.mark.parametrize(("argv", "code"), [
    (["sh", "-c", "exit 3"], 3),
    (["true"], 0),
    (["false"], 1),
    (["nosuchcommand"], 127),
    (["/etc/passwd"], 126),   # exists, not executable
    (["/etc"], 126),          # a directory
])
def test_exit_codes(busybox_store: RuntimeEnv, argv: list[str], code: int) -> None:
    r = busybox_store.run("run", "--rm", "busybox", *argv)
    assert r.returncode == code, r.stderr
    if code in (126, 127):
        assert argv[0] in r.stderr


def test_killed_by_signal_is_128_plus(busybox_store: RuntimeEnv) -> None:
    cid = busybox_store.run("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    busybox_store.run("kill", "-s", "KILL", cid, check=True)
    assert busybox_store.wait_exited(cid)["exit_code"] == 128 + signal.SIGKILL


def test_unknown_image_without_registry_is_125(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "no-such-image", "true")
    assert r.returncode == 125


def test_writes_stay_in_the_container(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    r = env.run("run", "--name", "writer", "busybox", "sh", "-c",
                "echo mine > /newfile && rm /etc/motd && cat /newfile")
    assert (r.returncode, r.stdout) == (0, "mine\n"), r.stderr
    r = env.run("run", "--rm", "busybox", "sh", "-c", "test -e /newfile; echo $?; cat /etc/motd")
    assert r.stdout == "1\n" + images.MOTD, r.stderr
    # the image's layers are untouched: no file there, the deleted one still there
    layers = list((env.store / "layers" / "sha256").iterdir())
    assert layers
    for layer in layers:
        assert not (layer / "diff" / "newfile").exists()
        assert (layer / "diff" / "etc" / "motd").read_text() == images.MOTD
    # the change lives in the first container's upper dir
    upper = env.run_root / "containers" / env.state("writer")["id"] / "upper"
    assert (upper / "newfile").read_text() == "mine\n"
    env.run("rm", "writer", check=True)
    assert not upper.exists()


def test_pid_namespace(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "busybox", "ps", "-o", "pid,comm")
    lines = r.stdout.split("\n")[1:]
    pids = [ln.split()[0] for ln in lines if ln.strip()]
    assert pids == ["1"], r.stdout
    # a glob is a shell builtin: no other process exists while /proc is listed
    r = busybox_store.run("run", "--rm", "busybox", "sh", "-c", "echo $$; echo /proc/[0-9]*")
    assert r.stdout.split() == ["1", "/proc/1"], r.stdout  # nothing of the host


def test_zombies_of_orphans_are_reaped_by_pid1(busybox_store: RuntimeEnv) -> None:
    # sh is PID 1: the orphaned grandchild is reparented to it and reaped by its wait loop
    r = busybox_store.run("run", "--rm", "busybox", "sh", "-c",
                          "sh -c 'sleep 0.2 &' ; sleep 0.5; wait; "
                          "ps -o pid,stat,comm | grep -c ' Z ' || true")
    assert r.stdout.strip() == "0", r.stdout + r.stderr


def test_hostname(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "--hostname", "box1", "busybox", "sh", "-c",
                          "hostname; cat /etc/hostname; grep box1 /etc/hosts")
    assert r.stdout.split("\n")[:2] == ["box1", "box1"], r.stderr
    assert "box1" in r.stdout.split("\n")[2]
    r = busybox_store.run("run", "--name", "named", "busybox", "hostname")
    assert r.stdout.strip() == busybox_store.state("named")["id"][:12]
    assert r.stdout.strip() != socket.gethostname()


def test_network_none_has_only_lo(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert r.stdout.split() == ["lo"], r.stdout + r.stderr
    r = busybox_store.run("run", "--rm", "busybox", "ip", "-o", "link")
    assert len(r.stdout.strip().split("\n")) == 1 and "lo:" in r.stdout and ",UP" in r.stdout


def test_network_host_sees_host_interfaces(busybox_store: RuntimeEnv) -> None:
    before = set(os.listdir("/sys/class/net"))
    r = busybox_store.run("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    stable = before & set(os.listdir("/sys/class/net"))  # other tests may add interfaces meanwhile
    assert stable <= set(r.stdout.split()) and len(stable) > 1, r.stdout


def test_image_config_and_overrides(busybox_store: RuntimeEnv) -> None:
    env = busybox_store
    r = env.run("run", "--rm", "busybox", "sh", "-c", "id -u; pwd; echo $PATH; echo $HOME")
    assert r.stdout.split() == ["0", "/", "/usr/sbin:/usr/bin:/sbin:/bin", "/root"], r.stderr
    r = env.run("run", "--rm", "-u", "user", "-w", "/tmp", "-e", "FOO=bar", "busybox", "sh", "-c",
                "id; pwd; echo $FOO; echo $HOME")
    lines = r.stdout.split("\n")
    assert lines[0].startswith("uid=1000(user) gid=1000(user)"), r.stdout + r.stderr
    assert lines[1:4] == ["/tmp", "bar", "/home/user"]
    r = env.run("run", "--rm", "-u", "65534:0", "busybox", "id", "-u")
    assert r.stdout.strip() == "65534"
    r = env.run("run", "--rm", "-u", "nosuchuser", "busybox", "id")
    assert r.returncode == 125 and "nosuchuser" in r.stderr
    r = env.run("run", "--rm", "--entrypoint", "echo", "busybox", "from", "entrypoint")
    assert r.stdout == "from entrypoint\n"
    # the image's Cmd is ["sh"]: with stdin as input it runs a script
    r = env.run("run", "--rm", "busybox", input="echo from-stdin\n")
    assert r.stdout == "from-stdin\n"
    envfile = env.root / "envfile"
    envfile.write_text("# comment\nA=1\nB=two words\n")
    r = env.run("run", "--rm", "--env-file", str(envfile), "busybox", "sh", "-c", 'echo "$A|$B"')
    assert r.stdout == "1|two words\n"


def test_workdir_is_created(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "-w", "/new/dir", "busybox", "pwd")
    assert r.stdout == "/new/dir\n", r.stderr


def test_security_settings(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "busybox", "cat", "/proc/self/status")
    status = dict(ln.split(":\t", 1) for ln in r.stdout.splitlines() if ":\t" in ln)
    docker_default = sum(1 << c for c in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))
    assert int(status["CapEff"], 16) == docker_default
    assert int(status["CapBnd"], 16) == docker_default
    assert int(status["CapInh"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    r = busybox_store.run("run", "--rm", "-u", "user", "busybox", "grep", "CapEff", "/proc/self/status")
    assert int(r.stdout.split()[1], 16) == 0


def test_masked_and_readonly_paths(busybox_store: RuntimeEnv) -> None:
    script = (
        "cat /proc/keys | wc -c; ls /sys/firmware | wc -l; "
        "echo 1 > /proc/sys/kernel/domainname && echo wrote-sys || echo ro-sys; "
        "touch /sys/x && echo wrote-sysfs || echo ro-sysfs; "
        "echo x > /proc/sysrq-trigger && echo wrote-sysrq || echo ro-sysrq"
    )
    r = busybox_store.run("run", "--rm", "busybox", "sh", "-c", script)
    assert r.stdout.split() == ["0", "0", "ro-sys", "ro-sysfs", "ro-sysrq"], r.stdout + r.stderr


def test_dev_is_minimal(busybox_store: RuntimeEnv) -> None:
    r = busybox_store.run("run", "--rm", "busybox", "ls", "/dev")
    assert sorted(r.stdout.split()) == sorted(
        ["core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
         "stdout", "tty", "urandom", "zero"]), r.stdout
    r = busybox_store.run("run", "--rm", "busybox", "sh", "-c",
                          "head -c 4 /dev/zero | od -An -tx1; echo hi > /dev/null; echo ok > /dev/shm/f; "
                          "cat /dev/shm/f; readlink /dev/stdout")
    assert r.stdout.split() == ["00", "00", "00", "00", "ok", "/proc/self/fd/1"], r.stdout + r.stderr


def test_volumes_and_read_only(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    env = busybox_store
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in.txt").write_text("from host\n")
    r = env.run("run", "--rm", "-v", f"{vol}:/mnt/vol", "busybox", "sh", "-c",
                "cat /mnt/vol/in.txt; echo back > /mnt/vol/out.txt")
    assert r.stdout == "from host\n", r.stderr
    assert (vol / "out.txt").read_text() == "back\n"
    r = env.run("run", "--rm", "-v", f"{vol}:/mnt/vol:ro", "busybox", "sh", "-c",
                "cat /mnt/vol/in.txt; echo x > /mnt/vol/no.txt || echo refused")
    assert r.stdout == "from host\nrefused\n"
    assert not (vol / "no.txt").exists()
    r = env.run("run", "--rm", "--read-only", "busybox", "sh", "-c",
                "touch /x || echo refused; echo ok > /dev/shm/y && echo shm-ok")
    assert r.stdout.split() == ["refused", "shm-ok"], r.stderr


def test_symlinked_volume_target_stays_in_rootfs(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    """A volume target resolved through the image's symlinks never lands on the host."""
    vol = tmp_path / "vol2"
    vol.mkdir()
    (vol / "f").write_text("v\n")
    # /usr/bin/env -> ../../bin/busybox is a file symlink inside the image; /bin is a dir
    r = busybox_store.run("run", "--rm", "-v", f"{vol}:/bin/../../../../mnt/escape", "busybox", "cat",
                          "/mnt/escape/f")
    assert r.stdout == "v\n", r.stderr
    assert not Path("/mnt/escape").exists()


def test_whiteout_image(five_layer_store: RuntimeEnv) -> None:
    script = "; ".join(
        [f"test -e /{p} && echo present:{p}" for p in images.FIVE_LAYER_ABSENT]
        + [f"cat /{p}" for p, content in images.FIVE_LAYER_EXPECTED.items() if content is not None]
        + ["ls -A /data/opaque"]
    )
    r = five_layer_store.run("run", "--rm", "five-layer", "sh", "-c", script + "; true")
    expected = b"".join(c for c in images.FIVE_LAYER_EXPECTED.values() if c is not None).decode() + "new\n"
    assert r.stdout == expected, r.stdout + r.stderr


def test_foreground_signals_reach_pid1(busybox_store: RuntimeEnv) -> None:
    proc = busybox_store.popen("run", "--rm", "busybox", "sh", "-c",
                               'trap "echo got-term; exit 5" TERM; echo ready; '
                               "while true; do sleep 0.05; done")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 5, err
        assert out == "got-term\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_host_mount_table_unchanged(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    """Every container mount lives in the container's own mount namespace."""
    def ours() -> list[str]:
        with open("/proc/self/mountinfo") as f:
            # the run root, the store (overlay's lower/upper dirs) and the volume all live here
            return [ln for ln in f if str(tmp_path) in ln]

    before = ours()
    vol = tmp_path / "v"
    vol.mkdir()
    cid = busybox_store.run("run", "-d", "-v", f"{vol}:/v:ro", "busybox", "sleep", "600",
                            check=True).stdout.strip()
    r = busybox_store.run("exec", cid, "sh", "-c", "grep -c . /proc/self/mountinfo")
    assert int(r.stdout) > 10  # proc, dev, sys, the volume, masks... all inside
    assert ours() == before
    busybox_store.run("rm", "-f", cid, check=True)
    assert ours() == before


def test_supervisor_death_takes_the_container_down(busybox_store: RuntimeEnv) -> None:
    proc = busybox_store.popen("run", "--name", "orphan", "busybox", "sh", "-c", "echo up; sleep 600")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        pid = busybox_store.wait_running("orphan")["pid"]
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
        # ps notices: the record says running but nothing is left
        ps = busybox_store.run("ps", "-a", check=True).stdout
        assert "orphan" in ps and "Exited" in ps
        busybox_store.run("rm", "orphan", check=True)
        assert busybox_store.container_cgroups() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_devices_made_in_the_container_cannot_be_opened(busybox_store: RuntimeEnv) -> None:
    """CAP_MKNOD is in docker's default set; nodev keeps a new /dev/sda-like node useless."""
    disk = os.stat("/dev/vda" if os.path.exists("/dev/vda") else "/dev/null").st_rdev
    major, minor = os.major(disk), os.minor(disk)
    script = (f"mknod /tmp/disk b {major} {minor} && echo made; head -c 1 /tmp/disk && echo read-rootfs; "
              f"mknod /dev/disk b {major} {minor} && echo made; head -c 1 /dev/disk && echo read-dev; "
              "mknod /dev/shm/mem c 1 1; head -c 1 /dev/shm/mem && echo read-shm; true")
    r = busybox_store.run("run", "--rm", "busybox", "sh", "-c", script)
    assert r.stdout.split() == ["made", "made"], r.stdout + r.stderr
    assert r.stderr.count("Permission denied") == 3


def _image_with_config(tmp_path: Path, base: images.TestImage, **config: object) -> images.TestImage:
    """The busybox image's layers under a config of our own (entrypoint, user, env, workdir...)."""
    import hashlib
    import json
    import shutil

    layout = tmp_path / "cfg-image"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for layer in base.layers:
        shutil.copy(base.blob_path(layer.digest), blobs / layer.digest.split(":")[1])

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / digest.split(":")[1]).write_bytes(data)
        return digest

    doc = json.loads(base.config)
    doc["config"].update(config)
    cfg = images.canonical_json(doc)
    manifest_doc = dict(json.loads(base.manifest))
    manifest_doc["config"] = {"mediaType": images.OCI_CONFIG, "digest": put(cfg), "size": len(cfg)}
    manifest = images.canonical_json(manifest_doc)
    put(manifest)
    return images.TestImage(name="configured", layout=layout, tag="latest", manifest=manifest, config=cfg,
                            layers=base.layers)


def test_image_config_decides_and_flags_override(runtime_env: RuntimeEnv, busybox_image: images.TestImage,
                                                 tmp_path: Path) -> None:
    img = _image_with_config(tmp_path, busybox_image, Entrypoint=["/bin/sh", "-c"],
                             Cmd=['echo "$(id -un) $(pwd) $GREETING $*"', "arg0"], User="user:nogroup",
                             WorkingDir="/home/user", Env=["GREETING=hi", "PATH=/bin"], StopSignal="SIGUSR1")
    env = runtime_env
    env.load_image(img, "configured")
    r = env.run("run", "--rm", "configured")
    assert r.stdout == "user /home/user hi \n", r.stderr
    r = env.run("run", "--rm", "configured", "echo $GREETING $PATH; id -g")
    assert r.stdout == "hi /bin\n65534\n", r.stderr
    r = env.run("run", "--rm", "-u", "0", "-w", "/tmp", "-e", "GREETING=yo", "configured",
                'echo "$(id -u) $(pwd) $GREETING"')
    assert r.stdout == "0 /tmp yo\n", r.stderr
    r = env.run("run", "--rm", "--entrypoint", "/bin/echo", "configured", "plain")
    assert r.stdout == "plain\n", r.stderr
    # the image's StopSignal is what stop sends
    cid = env.run("run", "-d", "configured", 'trap "echo usr1; exit 0" USR1; while :; do sleep 0.05; done',
                  check=True).stdout.strip()
    env.run("stop", "-t", "30", cid, check=True)
    assert env.state(cid)["exit_code"] == 0
    assert env.run("logs", cid, check=True).stdout == "usr1\n"


def test_tty(busybox_store: RuntimeEnv) -> None:
    """-t: a pty from the container's own devpts is its stdio and controlling terminal."""
    env = busybox_store
    r = env.run("run", "--rm", "-t", "busybox", "sh", "-c",
                "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; ls -l /proc/self/fd/2; exit 3")
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()  # (the terminal's \r\n, read as text)
    assert lines[:2] == ["/dev/pts/0", "both-ttys"], r.stdout
    assert lines[2].endswith("-> /dev/pts/0")
    # -i -t: our input reaches an interactive shell through the terminal
    r = env.run("run", "--rm", "-it", "-u", "user", "busybox", "sh", input="echo from-$((40+2))\nexit 4\n")
    assert r.returncode == 4, r.stderr
    assert "from-42" in r.stdout
    # -d -t: the terminal's output goes to the log
    cid = env.run("run", "-dt", "busybox", "sh", "-c", "echo in-log", check=True).stdout.strip()
    env.wait_exited(cid)
    assert env.run("logs", cid, check=True).stdout.splitlines() == ["in-log"]


def test_volume_host_dir_is_created(busybox_store: RuntimeEnv, tmp_path: Path) -> None:
    host = tmp_path / "new" / "vol"
    r = busybox_store.run("run", "--rm", "-v", f"{host}:/data", "busybox", "sh", "-c", "echo x > /data/f")
    assert r.returncode == 0, r.stderr
    assert (host / "f").read_text() == "x\n"
