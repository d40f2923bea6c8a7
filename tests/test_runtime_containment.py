"""Runtime containment (issue 10): hostile images and hostile ``pyreg exec`` calls stay inside.

Each attack is built offline (tests/images.py ``HOSTILE_IMAGES``) and run as root. Nothing here
changes host state when a defence regresses: writability is probed with ``test -w`` (access
W_OK), never by writing; the host canaries (core_pattern, a secret file, the python binary's
mode) are compared before and after.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyreg.runtime import rootfs
from tests import images
from tests.fixtures.runtime import REPO_ROOT, RuntimeEnv

pytestmark = pytest.mark.root

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
# both ways: openat2 + the new mount API, and the fallbacks a kernel before 5.12 takes
KERNELS = [pytest.param({}, id="new-kernel"), pytest.param({"PYREG_OLD_KERNEL": "1"}, id="old-kernel")]


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="session")
def hostile_images(test_images_dir: Path) -> dict[str, images.TestImage]:
    return {kind: images.build_hostile_image(test_images_dir / f"hostile-{kind}", kind)
            for kind in images.HOSTILE_IMAGES}


@pytest.fixture
def hostile(runtime_env: RuntimeEnv, hostile_images: dict[str, images.TestImage],
            busybox_image: images.TestImage) -> Iterator[RuntimeEnv]:
    """A runtime env with ``busybox`` and every hostile image (``hostile-KIND``) loaded; checks
    that the host's core_pattern is what it was."""
    runtime_env.load_image(busybox_image, "busybox")
    for kind, image in hostile_images.items():
        runtime_env.load_image(image, f"hostile-{kind}")
    before = _read(CORE_PATTERN)
    yield runtime_env
    assert _read(CORE_PATTERN) == before



def writable(path: str) -> str:
    """Shell: print ``WRITABLE path`` if it opens for writing. ``: >>`` opens O_WRONLY|O_APPEND
    and writes nothing (busybox's ``test -w`` is always true for root, so it can't be used)."""
    return f"[ -e {path} ] && (: >> {path}) 2>/dev/null && echo WRITABLE {path}; "


# which kernel knobs could the container write? (opened for writing, nothing written)
PROBE = "".join(writable(f) for f in (
    "/proc/sys/kernel/core_pattern", "/newproc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
    "/sys/kernel/uevent_helper", "/newsys/kernel/uevent_helper")) + "echo probed"


# --------------------------------------------------------------------------- mounts in the rootfs


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("kind", ["proc-symlink", "sys-symlink", "dev-symlink"])
def test_special_mount_on_a_symlink_is_refused(hostile: RuntimeEnv, kind: str,
                                               kernel: dict[str, str]) -> None:
    """``/proc -> /newproc``: before the fix the procfs landed on /newproc and the masks, applied
    to host paths, were skipped as missing: core_pattern writable (= code execution as host root)."""
    r = hostile.run("run", "--rm", f"hostile-{kind}", "sh", "-c", PROBE, env=kernel)
    assert "WRITABLE" not in r.stdout, r.stdout
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "not a directory" in r.stderr


@pytest.mark.parametrize("kernel", KERNELS)
def test_masks_and_readonly_paths_hold(hostile: RuntimeEnv, kernel: dict[str, str]) -> None:
    """The plain image: masks applied after pivot_root on the procfs and sysfs that were mounted."""
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
    dirs = [p for p in ("/proc/acpi", "/proc/scsi", "/sys/firmware") if os.path.isdir(p)]
    assert files and dirs
    r = hostile.run("run", "--rm", "busybox", "sh", "-c",
                    PROBE + "; " + "".join(f"echo {p} $(wc -c < {p}); " for p in files)
                    + "".join(f"echo {p} $(ls -A {p} | wc -l); " for p in dirs)
                    + "grep -c ' /proc/sys ro,' /proc/self/mountinfo", env=kernel)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["probed", *[x for p in files + dirs for x in (p, "0")], "1"], r.stdout


@pytest.mark.parametrize("kind", ["hosts-to-procfs"])
def test_file_mount_onto_procfs_is_refused(hostile: RuntimeEnv, kind: str) -> None:
    """``/etc/hosts -> /proc/sys/kernel/core_pattern``: no bind mount onto a kernel knob."""
    r = hostile.run("run", "--rm", f"hostile-{kind}", "cat", "/etc/hosts")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "procfs" in r.stderr


def test_volume_onto_procfs_is_refused(hostile: RuntimeEnv, tmp_path: Path) -> None:
    """``-v DIR:/data`` with ``/data -> /proc/sys/kernel`` (and ``-v DIR:/proc/sys``): refused,
    as runc refuses mounts into /proc."""
    vol = tmp_path / "vol"
    vol.mkdir()
    for image, dest in (("hostile-volume-link-to-procfs", "/data"), ("busybox", "/proc/sys")):
        r = hostile.run("run", "--rm", "-v", f"{vol}:{dest}", image, "true")
        assert r.returncode == 125, (dest, r.stderr)
        assert "procfs" in r.stderr


# --------------------------------------------------------------------------- --network host


@pytest.mark.parametrize("kernel", KERNELS)
def test_network_host_sys_is_readonly_recursively(hostile: RuntimeEnv, kernel: dict[str, str]) -> None:
    """The host's /sys, bound with ``--network host``: the cgroup mounts under it read-only too,
    so the container cannot leave its memory cgroup or write a host cgroup knob."""
    procs = [p for p in ("/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/unified/cgroup.procs",
                         "/sys/fs/cgroup/cgroup.procs") if os.path.exists(p)]
    assert procs, "no cgroup mounts under the host's /sys"
    r = hostile.run("run", "--rm", "--network", "host", "busybox", "sh", "-c",
                    "awk '$5 ~ \"^/sys\" {print $5, $6}' /proc/self/mountinfo; "
                    + "".join(writable(p) for p in procs) + "echo done",
                    env=kernel)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "done" and not any(ln.startswith("WRITABLE") for ln in lines), r.stdout
    mounts = [ln.split() for ln in lines[:-1]]
    assert any(m[0].startswith("/sys/fs/cgroup") for m in mounts), r.stdout
    rw = [m for m in mounts if m[1].split(",")[0] != "ro"]
    assert rw == [], rw


def test_network_host_volume_cannot_make_a_host_cgroup(hostile: RuntimeEnv, tmp_path: Path) -> None:
    """``-v DIR:/sys/fs/cgroup/memory/NEW`` with ``--network host``: the destination would be made
    with mkdir in the host's cgroupfs, i.e. a new host cgroup. Refused, and the canary name
    never appears on the host (a regression makes an empty cgroup, removed here)."""
    roots = [r for r in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
             if os.path.exists(os.path.join(r, "cgroup.procs"))]
    canary = f"pyreg-canary-{os.getpid()}-{os.urandom(3).hex()}"
    host = Path(roots[0], canary)
    vol = tmp_path / "vol"
    vol.mkdir()
    try:
        r = hostile.run("run", "--rm", "--network", "host", "-v", f"{vol}:{host}", "busybox", "true")
        assert not host.exists()
        assert r.returncode == 125, r.stderr
        assert "cgroup" in r.stderr
    finally:
        if host.exists():
            host.rmdir()


# --------------------------------------------------------------------------- pyreg exec


@pytest.fixture
def running(hostile: RuntimeEnv) -> Iterator[tuple[RuntimeEnv, str]]:
    cid = hostile.run("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    yield hostile, cid
    hostile.run("rm", "-f", cid)


def _pyreg(env: RuntimeEnv, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyreg", *args], env=env.env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, pass_fds=pass_fds)


def test_exec_closes_inherited_descriptors(running: tuple[RuntimeEnv, str], tmp_path: Path) -> None:
    """``pyreg exec C cat /proc/self/fd/N N<secret``: the host file never reaches the container."""
    env, cid = running
    secret = tmp_path / "shadow"
    secret.write_text("host-secret\n")
    fd = os.open(secret, os.O_RDONLY)
    try:
        r = _pyreg(env, "exec", cid, "sh", "-c", f"cat /proc/self/fd/{fd}; ls /proc/self/fd", pass_fds=(fd,))
    finally:
        os.close(fd)
    assert "host-secret" not in r.stdout
    assert sorted(r.stdout.split()) == ["0", "1", "2", "3"], r.stdout  # 3: ls's own directory


def test_exec_workdir_cannot_leave_the_rootfs(running: tuple[RuntimeEnv, str], tmp_path: Path) -> None:
    """``-w /proc/self/fd/N`` (N a host directory) or another magic link: refused."""
    env, cid = running
    host_dir = tmp_path / "hostdir"
    host_dir.mkdir()
    (host_dir / "secret").write_text("host-secret\n")
    fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for workdir in (f"/proc/self/fd/{fd}", "/proc/self/cwd", "/proc/1/root/proc/self/fd"):
            r = _pyreg(env, "exec", "-w", workdir, cid, "sh", "-c", "cat secret; pwd", pass_fds=(fd,))
            assert "host-secret" not in r.stdout, workdir
            assert r.returncode == 125, (workdir, r.stdout, r.stderr)
            assert "workdir" in r.stderr
    finally:
        os.close(fd)
    # an ordinary missing workdir is still made, inside
    r = _pyreg(env, "exec", "-w", "/new/dir", cid, "pwd")
    assert (r.returncode, r.stdout) == (0, "/new/dir\n"), r.stderr


def _open_as_container_root(path: str) -> int:
    """errno of opening ``path`` read-only from a process with container root's privileges
    (uid 0, docker's default capabilities: no CAP_SYS_PTRACE); 0 if it opened."""
    code = ("import os, sys\n"
            "from pyreg.runtime import linux\n"
            "keep = set(linux.DEFAULT_CAPS.values())\n"
            "linux.drop_bounding_set(keep); linux.capset(keep, keep, set())\n"
            "try:\n    os.close(os.open(sys.argv[1], os.O_RDONLY))\nexcept OSError as e:\n"
            "    raise SystemExit(e.errno)\n")
    proc = subprocess.run([sys.executable, "-c", code, path], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=60)
    assert proc.returncode < 200, proc.stderr
    return proc.returncode


EXECVE = {"x86_64": 59, "aarch64": 221}.get(os.uname().machine)


def test_exec_helper_cannot_be_opened_before_it_execs(running: tuple[RuntimeEnv, str]) -> None:
    """CVE-2019-5736 class: the exec helper is a host Python in the container's pid namespace
    until it execs, and after dropping to container root's capabilities it is openable by
    container root (its /proc/PID/exe is the host's Python binary: chmod, later a write).
    strace holds the helper at the entry of its execve, the last moment of that window; a
    process with container root's privileges then tries to open what it exposes."""
    strace = shutil.which("strace")
    if strace is None or EXECVE is None:
        pytest.skip("needs strace (tests/run installs it) on x86_64 or aarch64")
    env, cid = running
    python_mode = os.stat(os.path.realpath(sys.executable)).st_mode
    proc = subprocess.Popen([strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=execve",
                             "-e", "inject=execve:delay_enter=4000000",
                             sys.executable, "-m", "pyreg", "exec", cid, "/bin/true"],
                            env=env.env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        helper = 0
        deadline = time.monotonic() + 60
        while not helper:
            assert time.monotonic() < deadline and proc.poll() is None, "no exec helper held in execve"
            for entry in os.listdir("/proc"):
                if entry.isdigit() and _held_in_container_execve(int(entry), env.state(cid)["pid"]):
                    helper = int(entry)
            time.sleep(0.05)
        exe = f"/proc/{helper}/exe"
        assert os.path.realpath(exe) == os.path.realpath(sys.executable)  # the host's Python
        for what in ("exe", "cwd/.", "environ"):
            assert _open_as_container_root(f"/proc/{helper}/{what}") == errno.EACCES, what
    finally:
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert os.stat(os.path.realpath(sys.executable)).st_mode == python_mode


def _held_in_container_execve(pid: int, container_pid: int) -> bool:
    """Is ``pid`` a process of the container's pid namespace (not PID 1) stopped at the entry
    of execve with container root's capabilities already in place?"""
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") != os.readlink(f"/proc/{container_pid}/ns/pid"):
            return False
        if pid == container_pid or _read(f"/proc/{pid}/syscall").split()[0] != str(EXECVE):
            return False
        status = dict(ln.split(":\t", 1) for ln in _read(f"/proc/{pid}/status").splitlines() if ":\t" in ln)
    except (OSError, IndexError):
        return False
    from pyreg.runtime import linux

    default = sum(1 << c for c in linux.DEFAULT_CAPS.values())
    return int(status["CapEff"], 16) == default


def test_init_process_cannot_be_opened(hostile: RuntimeEnv) -> None:
    """``--init`` keeps a host Python as PID 1 for the container's life: not openable either."""
    cid = hostile.run("run", "-d", "--init", "busybox", "sleep", "600", check=True).stdout.strip()
    try:
        pid = hostile.wait_running(cid)["pid"]
        assert os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
        assert _open_as_container_root(f"/proc/{pid}/exe") == errno.EACCES
    finally:
        hostile.run("rm", "-f", cid)


@pytest.fixture(scope="session")
def loader_image(test_images_dir: Path) -> images.TestImage:
    return images.build_loader_image(test_images_dir / "loader", os.path.realpath(sys.executable))


# the host Python, if it ran in the container, says so (and would find no stdlib: no harm done)
PY_PROBE = "print('HOST PYTHON RAN')"


def test_exec_of_the_runtime_binary_through_proc_is_refused(hostile: RuntimeEnv,
                                                            loader_image: images.TestImage) -> None:
    """CVE-2019-5736 itself: a command that is (or whose #! interpreter is) /proc/self/exe runs
    the runtime's own binary — the host Python — as container root, which may then chmod or,
    once it exits, write it. The image has the host Python's loader and libraries, so without
    the check the host binary really starts here."""
    env = hostile
    env.load_image(loader_image, "loader")
    for argv in (["/proc/self/exe", "-c", PY_PROBE], ["evil", "-c", PY_PROBE], ["evil.sh"],
                 ["/proc/1/root/proc/self/exe", "-c", PY_PROBE]):
        r = env.run("run", "--rm", "loader", *argv)
        assert "Python" not in r.stdout + r.stderr.replace("pyreg", ""), (argv, r.stdout, r.stderr)
        assert r.returncode == 126, (argv, r.stderr)
        assert "magic link" in r.stderr
    cid = env.run("run", "-d", "loader", "sleep", "600", check=True).stdout.strip()
    try:
        r = env.run("exec", cid, "/proc/self/exe", "-c", PY_PROBE)
        assert (r.returncode, r.stdout) == (126, ""), r.stderr
        r = env.run("exec", cid, "sh", "-c", "echo still fine")  # and ordinary commands still run
        assert (r.returncode, r.stdout) == (0, "still fine\n"), r.stderr
    finally:
        env.run("rm", "-f", cid)


# --------------------------------------------------------------------------- -u and the image's passwd


def test_passwd_symlink_to_dev_zero_is_bounded(hostile: RuntimeEnv) -> None:
    """``/etc/passwd -> /dev/zero`` and ``-u``: a clear error, not a read until the OOM killer
    (the memory limit keeps a regression inside the container's cgroup)."""
    r = hostile.run("run", "--rm", "--memory", "256m", "-u", "user", "hostile-passwd-dev-zero", "id",
                    timeout=120)
    assert r.returncode == 125, r.stderr
    assert "unable to find user user" in r.stderr
    # (not ``id``: busybox's own getpwuid would read /dev/zero forever, inside the container)
    r = hostile.run("run", "--rm", "--memory", "256m", "-u", "1000", "hostile-passwd-dev-zero",
                    "awk", "/^Uid/ {print $2}", "/proc/self/status")
    assert (r.returncode, r.stdout) == (0, "1000\n"), r.stderr


def test_exec_user_lookup_ignores_a_fifo_passwd(running: tuple[RuntimeEnv, str]) -> None:
    """The container swaps its /etc/passwd for a FIFO: ``pyreg exec -u`` must not hang on it."""
    env, cid = running
    r = env.run("exec", cid, "sh", "-c", "rm /etc/passwd && mkfifo /etc/passwd")
    assert r.returncode == 0, r.stderr
    r = env.run("exec", "-u", "user", cid, "true", timeout=60)
    assert r.returncode == 125, r.stderr
    assert "unable to find user user" in r.stderr


def test_passwd_larger_than_the_bound_is_refused(hostile: RuntimeEnv, tmp_path: Path) -> None:
    from pyreg.runtime import identity

    big = tmp_path / "passwd"
    with open(big, "w") as f:
        f.write(images.PASSWD)
        f.write("x" * (identity.PASSWD_MAX + 1) + "\n")
    r = hostile.run("run", "--rm", "-v", f"{big}:/etc/passwd:ro", "-u", "user", "busybox", "id", "-u")
    assert r.returncode == 125, r.stderr
    assert "larger than" in r.stderr


# --------------------------------------------------------------------------- resolution (no root needed)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[int]:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("in-root\n")
    (root / "abs").symlink_to("/etc")
    (root / "rel").symlink_to("../../../../etc")
    (root / "loop").symlink_to("loop")
    (root / "magic").symlink_to("/proc/self/root/etc")
    (root / "file").write_text("f\n")
    (tmp_path / "outside").write_text("OUT\n")
    (root / "escape").symlink_to("../outside")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_resolve_stays_in_root(tree: int, openat2: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "HAVE_OPENAT2", None if openat2 else False)

    def read(path: str) -> str:
        fd = rootfs.resolve(tree, path, os.O_RDONLY)
        try:
            return os.read(fd, 100).decode()
        finally:
            os.close(fd)

    for path in ("/etc/passwd", "abs/passwd", "rel/passwd", "/../../etc/passwd", "abs/../abs/passwd"):
        assert read(path) == "in-root\n", path
    with pytest.raises(FileNotFoundError):
        read("escape")  # ../outside from the root is /outside of the root: missing
    with pytest.raises(OSError) as e:
        read("loop")
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError):  # openat2: ELOOP (a magic link); walk: /proc is not in the root
        read("magic/passwd")
    with pytest.raises(NotADirectoryError):
        read("file/x")


@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk"])
def test_mkdir_all_and_make_file_stay_in_root(tree: int, tmp_path: Path, openat2: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs, "HAVE_OPENAT2", None if openat2 else False)
    os.close(rootfs.mkdir_all(tree, "/abs/new/deeper"))
    assert (tmp_path / "root" / "etc" / "new" / "deeper").is_dir()
    assert not Path("/etc/new").exists()
    os.close(rootfs.make_file(tree, "/rel/made"))
    assert (tmp_path / "root" / "etc" / "made").is_file()
    (tmp_path / "root" / "dangling").symlink_to("/nowhere/at/all")
    with pytest.raises(rootfs.UnsafePath):
        os.close(rootfs.mkdir_all(tree, "/dangling/x"))
    fd = rootfs.plain_dir(tree, "etc")
    os.close(fd)
    with pytest.raises(rootfs.UnsafePath):
        rootfs.plain_dir(tree, "abs")
    assert stat.S_ISLNK(os.lstat(tmp_path / "root" / "abs").st_mode)
