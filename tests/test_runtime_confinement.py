"""Runtime confinement (issue 10): devices, seccomp, keyring, default limits, privilege flags.

Each test runs a hostile image (tests/images.py ``build_probe_image``: busybox plus a static
``/bin/probe`` that makes one attacker's system call) as root and reads what the kernel said.
Nothing here can harm the host if a defence regressed: device nodes are only opened and closed
(never read or written), the key is a canary that the test adds to a session keyring of its own
(which dies with it), and a user namespace that slipped through would own nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyreg.runtime import cgroups, devices
from tests import images
from tests.fixtures.runtime import RuntimeEnv

pytestmark = pytest.mark.root

EPERM, EACCES = 1, 13


@pytest.fixture(scope="module")
def probe_image(tmp_path_factory: pytest.TempPathFactory) -> images.TestImage:
    try:
        return images.build_probe_image(tmp_path_factory.mktemp("probe") / "layout")
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture
def probe_env(runtime_env: RuntimeEnv, probe_image: images.TestImage) -> RuntimeEnv:
    runtime_env.load_image(probe_image, "probe")
    return runtime_env


def versions() -> list[Any]:
    v1, v2 = cgroups._mounts()
    return [pytest.param(1, marks=pytest.mark.skipif("devices" not in v1, reason="no v1 devices hierarchy")),
            pytest.param(2, marks=pytest.mark.skipif(v2 is None, reason="no cgroup2 mount"))]


def probe(env: RuntimeEnv, *args: str, flags: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
          ) -> list[str]:
    """Run ``sh -c SCRIPT`` (args joined) in the probe image; the output lines."""
    r = env.run("run", "--rm", *flags, "probe", "sh", "-c", " ".join(args), env=extra_env)
    assert r.returncode < 125, r.stderr  # the script ran (its own status is the last probe's)
    return r.stdout.split("\n")[:-1]


# --------------------------------------------------------------------------- devices


@pytest.mark.parametrize("version", versions())
def test_mknod_on_a_volume_opens_no_host_device(probe_env: RuntimeEnv, tmp_path: Path, version: int) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    out = probe(probe_env, "mknod /vol/hwrng c 10 183 && mknod /vol/loop0 b 7 0 && mknod /vol/null c 1 3 &&",
                "probe open /vol/hwrng r; probe open /vol/loop0 rw; probe open /vol/null rw",
                flags=("-v", f"{vol}:/vol"), extra_env={"PYREG_CGROUP_VERSION": str(version)})
    # the nodes were made (CAP_MKNOD, as in docker) but none opens: the volume is nodev
    assert out == [f"ERR {EACCES}"] * 3
    assert {p.name for p in vol.iterdir()} == {"hwrng", "loop0", "null"}


def _open_from_cgroup(cgroup_procs: str, node_dir: Path) -> dict[str, str]:
    """From the host, outside any nodev mount: a process put in the container's cgroup makes
    nodes and opens them (open/close only). What the devices cgroup / eBPF program alone says."""
    script = textwrap.dedent(f"""
        import json, os
        with open({cgroup_procs!r}, "w") as f:
            f.write(str(os.getpid()))
        out = {{}}
        for name, kind, major, minor, mode in (("hwrng", "c", 10, 183, os.O_RDONLY),
                ("loop0", "b", 7, 0, os.O_RDWR), ("null", "c", 1, 3, os.O_RDWR)):
            p = os.path.join({str(node_dir)!r}, name)
            os.mknod(p, 0o600 | (0o020000 if kind == "c" else 0o060000), os.makedev(major, minor))
            try:
                os.close(os.open(p, mode | os.O_NONBLOCK | os.O_NOCTTY))
                out[name] = "OK"
            except OSError as e:
                out[name] = "ERR %d" % e.errno
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


@pytest.mark.parametrize("version", versions())
def test_devices_cgroup_denies_what_is_not_allowed(probe_env: RuntimeEnv, tmp_path: Path,
                                                   version: int) -> None:
    env = probe_env
    cid = env.run("run", "-d", "probe", "sleep", "600", env={"PYREG_CGROUP_VERSION": str(version)},
                  check=True).stdout.strip()
    rec = env.state(cid)
    path = rec["cgroup"]["paths"]["devices" if version == 1 else "unified"]
    if version == 1:
        listed = Path(path, "devices.list").read_text().split("\n")
        assert "a *:* rwm" not in listed and "c 1:3 rwm" in listed and "c 136:* rwm" in listed
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    try:
        got = _open_from_cgroup(os.path.join(path, "cgroup.procs"), nodes)
    finally:
        env.run("rm", "-f", cid)
    assert got == {"hwrng": f"ERR {EPERM}", "loop0": f"ERR {EPERM}", "null": "OK"}


def test_device_program_allows_exactly_its_rules(tmp_path: Path) -> None:
    """The eBPF program generator, rule by rule, in a cgroup2 group made for the test."""
    _, v2 = cgroups._mounts()
    if v2 is None:
        pytest.skip("no cgroup2 mount")
    cg = Path(v2, f"pyreg-test-devprog-{os.getpid()}")
    cg.mkdir()
    try:
        devices.apply_v2(str(cg), (devices.Rule("c", devices.WILDCARD, devices.WILDCARD, "m"),
                                   devices.Rule("b", devices.WILDCARD, devices.WILDCARD, "m"),
                                   devices.Rule("c", 1, 3, "rwm"),
                                   devices.Rule("c", 10, devices.WILDCARD, "r")))
        nodes = tmp_path / "nodes"
        nodes.mkdir()
        got = _open_from_cgroup(str(cg / "cgroup.procs"), nodes)
    finally:
        cg.rmdir()
    # hwrng (10:183) is readable by the 10:* r rule; loop0 is a block device; null is rwm
    assert got == {"hwrng": "OK", "loop0": f"ERR {EPERM}", "null": "OK"}


@pytest.mark.parametrize("version", versions())
def test_device_flag_gives_one_device_with_its_permissions(probe_env: RuntimeEnv,
                                                          version: int) -> None:
    # loop-control (10:237): opening it does nothing (its ioctls need CAP_SYS_ADMIN)
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control on this host")
    force = {"PYREG_CGROUP_VERSION": str(version)}
    assert probe(probe_env, "probe open /dev/lc r", extra_env=force) == [f"ERR {2}"]  # not there
    out = probe(probe_env, "probe open /dev/lc r; probe open /dev/lc w",
                flags=("--device", "/dev/loop-control:/dev/lc:r"), extra_env=force)
    assert out == ["OK", f"ERR {EPERM}"]  # read allowed, write refused by the cgroup
    r = probe_env.run("run", "--rm", "--device", "/etc/hostname", "probe", "true")
    assert r.returncode == 125 and "not a device" in r.stderr


# --------------------------------------------------------------------------- seccomp and keyring

CANARY_HELPER = textwrap.dedent("""
    import ctypes, os, sys
    nr = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
    libc = ctypes.CDLL(None, use_errno=True)
    # a session keyring of our own: the canary never touches the caller's
    if libc.syscall(nr[1], 1, None) < 0:
        sys.exit("keyctl join: %d" % ctypes.get_errno())
    secret = b"pyreg-canary-" + os.urandom(6).hex().encode()
    serial = libc.syscall(nr[0], b"user", b"pyreg-canary", secret, len(secret), -3)
    if serial < 0:
        sys.exit("add_key: %d" % ctypes.get_errno())
    own = ctypes.create_string_buffer(64)
    n = libc.syscall(nr[1], 11, serial, own, 64)  # the canary is readable here
    print("SECRET", secret.decode(), own.raw[:n].decode(), flush=True)
    argv = [a.replace("SERIAL", str(serial)) for a in sys.argv[1:]]
    r = __import__("subprocess").run(argv)
    sys.exit(r.returncode)
""")


def run_with_canary_key(env: RuntimeEnv, *args: str) -> tuple[str, list[str]]:
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("key syscall numbers known for x86_64 and aarch64 only")
    r = subprocess.run([sys.executable, "-c", CANARY_HELPER, sys.executable, "-m", "pyreg", *args],
                       env=env.env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode < 125, r.stderr
    first, *rest = r.stdout.split("\n")[:-1]
    _, secret, own = first.split()
    assert secret == own
    return secret, rest


def test_host_key_is_out_of_reach(probe_env: RuntimeEnv) -> None:
    secret, out = run_with_canary_key(probe_env, "run", "--rm", "probe", "probe", "keyread", "SERIAL")
    assert out == [f"ERR {EPERM}"]  # keyctl is not in the default profile
    # without seccomp the key is still not possessed: the container has its own session keyring
    secret, out = run_with_canary_key(probe_env, "run", "--rm", "--security-opt", "seccomp=unconfined",
                                      "probe", "probe", "keyread", "SERIAL")
    assert out == [f"ERR {EACCES}"]
    assert not any(secret in line for line in out)


def test_default_profile_denies_dockers_list(probe_env: RuntimeEnv) -> None:
    out = probe(probe_env, "probe userns; probe addkey; probe vsock; unshare -U true 2>/dev/null; echo $?;",
                "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d ' \\t'")
    assert out == [f"ERR {EPERM}"] * 3 + ["1", "NoNewPrivs:1", "Seccomp:2"]


def test_cap_add_widens_the_filter_as_docker(probe_env: RuntimeEnv) -> None:
    # CAP_SYS_ADMIN turns on unshare/clone with namespace flags (the profile's caps rules)
    assert probe(probe_env, "probe userns", flags=("--cap-add", "SYS_ADMIN")) == ["OK"]
    assert probe(probe_env, "probe userns", flags=("--security-opt", "seccomp=unconfined")) == ["OK"]


def test_seccomp_profile_file_in_dockers_format(probe_env: RuntimeEnv, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}],
    }))
    out = probe(probe_env, "mkdir /x 2>&1; echo $?; probe userns",
                flags=("--security-opt", f"seccomp={profile}"))
    assert out[1:] == ["1", "OK"] and "implemented" in out[0]
    missing = tmp_path / "missing.json"
    r = probe_env.run("run", "--rm", "--security-opt", f"seccomp={missing}", "probe", "true")
    assert r.returncode == 125 and "seccomp profile" in r.stderr


def test_exec_gets_the_same_filter(probe_env: RuntimeEnv) -> None:
    env = probe_env
    cid = env.run("run", "-d", "probe", "sleep", "600", check=True).stdout.strip()
    try:
        r = env.run("exec", cid, "probe", "userns", check=False)
        assert r.stdout == f"ERR {EPERM}\n"
    finally:
        env.run("rm", "-f", cid)


# --------------------------------------------------------------------------- capabilities


def cap_eff(env: RuntimeEnv, *flags: str) -> tuple[int, dict[str, str]]:
    out = probe(env, "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -d ' \\t'", flags=flags)
    status = dict(line.split(":", 1) for line in out)
    return int(status["CapEff"], 16), status


def test_capability_flags(probe_env: RuntimeEnv) -> None:
    from pyreg.runtime import linux

    default = sum(1 << c for c in linux.DEFAULT_CAPS.values())
    assert cap_eff(probe_env)[0] == default
    assert cap_eff(probe_env, "--cap-drop", "ALL")[0] == 0
    assert cap_eff(probe_env, "--cap-drop", "ALL", "--cap-add", "chown")[0] == 1
    got = cap_eff(probe_env, "--cap-add", "NET_ADMIN", "--cap-drop", "CAP_MKNOD")[0]
    assert got == (default | 1 << 12) & ~(1 << 27)
    r = probe_env.run("run", "--rm", "--cap-add", "NOT_A_CAP", "probe", "true")
    assert r.returncode == 125 and "unknown capability" in r.stderr


def test_privileged_gets_everything_deliberately(probe_env: RuntimeEnv) -> None:
    caps, status = cap_eff(probe_env, "--privileged")
    assert caps == host_bounding_set()
    assert status["Seccomp"] == "0" and status["NoNewPrivs"] == "0"


def host_bounding_set() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapBnd in /proc/self/status")


def test_no_new_privileges_option(probe_env: RuntimeEnv) -> None:
    assert cap_eff(probe_env)[1]["NoNewPrivs"] == "1"  # pyreg's default, past docker's
    _, status = cap_eff(probe_env, "-u", "1000", "--security-opt", "no-new-privileges=false")
    # the filter still loads for a non-root user without no_new_privs (before the uid switch)
    assert status == {"CapEff": "0000000000000000", "Seccomp": "2", "NoNewPrivs": "0"}
    assert cap_eff(probe_env, "--privileged", "--security-opt", "no-new-privileges")[1]["NoNewPrivs"] == "1"
    r = probe_env.run("run", "--rm", "--security-opt", "no-new-privileges=maybe", "probe", "true")
    assert r.returncode == 125


# --------------------------------------------------------------------------- default limits


def _limits(env: RuntimeEnv, *flags: str) -> dict[str, str]:
    cid = env.run("run", "-d", *flags, "probe", "sleep", "600", env={"PYREG_CGROUP_VERSION": "1"},
                  check=True).stdout.strip()
    try:
        paths = env.state(cid)["cgroup"]["paths"]
        return {"pids": Path(paths["pids"], "pids.max").read_text().strip(),
                "memory": Path(paths["memory"], "memory.limit_in_bytes").read_text().strip()}
    finally:
        env.run("rm", "-f", cid)


@pytest.fixture
def v1_limits() -> Iterator[None]:
    v1, _ = cgroups._mounts()
    if not {"pids", "memory"} <= set(v1):
        pytest.skip("needs the v1 pids and memory hierarchies")
    yield


def test_default_pids_limit_and_client_config(probe_env: RuntimeEnv, v1_limits: None) -> None:
    from pyreg.runtime.spec import DEFAULT_PIDS_LIMIT

    env = probe_env
    got = _limits(env)
    assert got["pids"] == str(DEFAULT_PIDS_LIMIT) and int(got["memory"]) > 1 << 40  # no memory default
    Path(env.env["PYREG_CONFIG"]).write_text(json.dumps({"run": {"pidslimit": 64, "memory": "96m"}}))
    assert _limits(env) == {"pids": "64", "memory": str(96 << 20)}
    assert _limits(env, "--pids-limit", "32", "-m", "64m") == {"pids": "32", "memory": str(64 << 20)}
    Path(env.env["PYREG_CONFIG"]).write_text(json.dumps({"run": {"pidslimit": 0}}))
    assert _limits(env)["pids"] == "max"
    Path(env.env["PYREG_CONFIG"]).write_text(json.dumps({"run": {"pidslimit": "many"}}))
    r = env.run("run", "--rm", "probe", "true")
    assert r.returncode == 125 and "run.pidslimit" in r.stderr


def test_default_pids_limit_stops_a_fork_bomb(probe_env: RuntimeEnv, v1_limits: None) -> None:
    """With the operator's default (no flag), a fork bomb meets the limit: the host's process
    table gets no more than the limit, and everything goes with the container."""
    env = probe_env
    Path(env.env["PYREG_CONFIG"]).write_text(json.dumps({"run": {"pidslimit": 24}}))
    # no --pids-limit: the config's default is what stops it
    cid = env.run("run", "-d", "probe", "sleep", "600", env={"PYREG_CGROUP_VERSION": "1"},
                  check=True).stdout.strip()
    try:
        pids = Path(env.state(cid)["cgroup"]["paths"]["pids"])
        bomb = "for i in $(seq 40); do sleep 600 >/dev/null 2>&1 & done 2>/dev/null"
        env.run("exec", cid, "sh", "-c", bomb, timeout=120)
        assert int((pids / "pids.current").read_text()) <= 24
        assert "max 0" not in (pids / "pids.events").read_text()  # forks were refused
    finally:
        env.run("rm", "-f", cid)
    assert env.container_cgroups() == []


# --------------------------------------------------------------------------- units


def test_tweak_capabilities_is_dockers_rule() -> None:
    from pyreg.runtime import confine, linux

    base = list(linux.DEFAULT_CAPS)
    assert confine.tweak_capabilities([], [], False) == base
    assert confine.tweak_capabilities(["chown"], ["ALL"], False) == ["CAP_CHOWN"]
    everything_but = set(confine.tweak_capabilities(["ALL"], ["sys_admin", "MKNOD"], False))
    assert "CAP_NET_ADMIN" in everything_but and not {"CAP_SYS_ADMIN", "CAP_MKNOD"} & everything_but
    # an add wins over a drop of the same capability, as in docker
    assert "CAP_NET_ADMIN" in confine.tweak_capabilities(["NET_ADMIN"], ["NET_ADMIN"], False)
    with pytest.raises(ValueError, match="unknown capability"):
        confine.tweak_capabilities(["CAP_NOPE"], [], False)


def test_seccomp_cache_trusts_only_root_only_files(tmp_path: Path) -> None:
    from pyreg.runtime import linux, seccomp

    raw = seccomp.load_profile()
    caps = set(linux.DEFAULT_CAPS)
    cache = tmp_path / "cache"
    prog = seccomp.compile_cached(raw, caps, str(cache))
    assert prog == seccomp.compile_profile(raw, caps) and len(prog) % 8 == 0
    (entry,) = cache.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600
    entry.write_bytes(b"\x06\x00\x00\x00\x00\x00\xff\x7f")  # "return ALLOW": a forged program
    entry.chmod(0o666)  # … that anyone could have written: ignored and compiled afresh
    assert seccomp.compile_cached(raw, caps, str(cache)) == prog
    assert entry.read_bytes() == prog


def test_device_spec_parsing() -> None:
    dev = devices.parse_device("/dev/null:/dev/mynull:rw")
    assert dev == {"host": "/dev/null", "path": "/dev/mynull", "rule": ["c", 1, 3, "rw"]}
    assert devices.parse_device("/dev/null:r")["rule"] == ["c", 1, 3, "r"]
    assert devices.parse_device("/dev/null")["path"] == "/dev/null"
    for bad in ("/dev/null:/x:q", "dev/null", "/nonexistent-device", "/etc/hostname"):
        with pytest.raises(ValueError):
            devices.parse_device(bad)
