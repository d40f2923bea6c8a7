"""``--network bridge``, ``slirp4netns`` and ``-p``, each test inside a network namespace it makes
and removes.

Every ``pyreg`` command runs in that namespace (``nsenter --net``): the bridge, the veth pairs,
the NAT chains, slirp4netns's sockets and all traffic (to the container, the bridge, the
namespace's loopback) live and die there. The host's links, addresses, routes and iptables rules
are checked for anything of pyreg's afterwards. The rootless tests run ``pyreg`` as ``nobody``
(tests/test_runtime_rootless.py's store) in such a namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import images
from tests.fixtures.runtime import REPO_ROOT, RuntimeEnv
from tests.test_runtime_rootless import NOBODY, SYSTEM_PYTHON, RootlessEnv, rootless_env

pytestmark = pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                                reason="needs iproute2 and iptables")


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _net_view(ns: str | None) -> dict[str, str]:
    """Links, addresses, routes and firewall rules of a namespace (the host's with None)."""
    pre = ["nsenter", f"--net=/run/netns/{ns}"] if ns else []
    addrs = "".join(ln + "\n" for ln in _out(*pre, "ip", "-o", "addr").splitlines()
                    if "inet6 fe80" not in ln)  # link-local: its DAD state changes on its own
    # a bridge's carrier (and its routes' linkdown) follows its ports a moment later: not state
    links = "".join(" ".join(w for w in ln.split() if w.startswith(("link/", "master")) or w[-1] == ":"
                             or (":" in w and len(w) == 17)) + "\n"
                    for ln in _out(*pre, "ip", "-o", "link").splitlines())
    return {"links": links, "addrs": addrs,
            "routes": _out(*pre, "ip", "route").replace(" linkdown", ""),
            "rules": "\n".join(ln for ln in _out(*pre, "iptables-save").splitlines() if _is_rule(ln)),
            "rules6": "\n".join(ln for ln in _out(*pre, "ip6tables-save").splitlines() if _is_rule(ln))}


def _is_rule(line: str) -> bool:
    """A rule, a chain of its own or a policy other than ACCEPT: iptables-nft leaves the empty
    built-in tables it made, which filter nothing (only 'nft' could delete them)."""
    if line.startswith("-A"):
        return True
    return line.startswith(":") and line.split()[1] != "ACCEPT"


class NetNs:
    """A named network namespace and a RuntimeEnv whose commands run in it."""

    def __init__(self, env: RuntimeEnv) -> None:
        self.name = f"pyregt{os.getpid()}{os.urandom(2).hex()}"
        self.env = {**env.env}
        self.env["PYREG_NETWORK"] = "bridge"  # root's default, which the suite sets to none (conftest)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        # nsenter, not 'ip netns exec': that one remounts /sys, hiding the cgroup mounts
        self.enter = ["nsenter", f"--net=/run/netns/{self.name}"]
        subprocess.run([*self.enter, "ip", "link", "set", "lo", "up"], check=True)

    def pyreg(self, *args: str, check: bool = False,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*self.enter, sys.executable, "-m", "pyreg", *args],
                              env=self.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"pyreg {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*self.enter, sys.executable, "-m", "pyreg", *args],
                                env=self.env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def sh(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter, *argv], capture_output=True, text=True,
                              timeout=60)

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def netns(busybox_store: RuntimeEnv) -> Iterator[NetNs]:
    host_before = _net_view(None)
    ns = NetNs(busybox_store)
    try:
        yield ns
    finally:
        busybox_store.cleanup()
        ns.remove()
    after = _net_view(None)
    for key, text in host_before.items():  # the host's own network was never touched by pyreg
        changed = set(text.splitlines()) ^ set(after[key].splitlines())
        assert not [ln for ln in changed if any(w in ln for w in ("pyreg", "PYREG", "10.88.", "veth"))], key


def _settle(ns: NetNs) -> dict[str, str]:
    """The namespace once pyreg0 and its NAT rules exist (made by the first bridge container and
    left up, as docker's docker0): what every container must leave it as."""
    ns.pyreg("run", "--rm", "--network", "bridge", "busybox", "true", check=True)
    return _back_to(ns, None)


def _back_to(ns: NetNs, before: dict[str, str] | None, deadline: float = 30) -> dict[str, str]:
    """The namespace's view once it equals ``before`` (None: once no veth is left): the kernel
    deletes a dead container's veth pair with its namespace, a moment after its last process."""
    end = time.monotonic() + deadline
    while True:
        view = _net_view(ns.name)
        if (view == before) if before is not None else "veth" not in view["links"]:
            return view
        if time.monotonic() > end:
            assert view == before, "the namespace did not come back to what it was"
            raise AssertionError(f"a veth is left: {view['links']}")
        time.sleep(0.05)


def _curl(ns: NetNs | RootlessNs, url: str, deadline: float = 60) -> str:
    """The page, retried while the server inside starts (no timing asserted)."""
    end = time.monotonic() + deadline
    while True:
        r = ns.sh("curl", "-s", "--max-time", "5", url)
        if r.returncode == 0 and r.stdout:
            return r.stdout
        if time.monotonic() > end:
            raise AssertionError(f"curl {url}: {r.returncode} {r.stderr}")
        time.sleep(0.1)


def test_bridge_gives_address_route_and_files_then_cleans_up(netns: NetNs) -> None:
    before = _settle(netns)
    r = netns.pyreg("run", "--rm", "--hostname", "web1", "busybox", "sh", "-c",
                    "ip -o -4 addr show eth0; ip route; echo ==; cat /etc/hosts; echo ==; "
                    "cat /etc/resolv.conf; echo ==; ping -c 1 -W 5 10.88.0.1 >/dev/null && echo pong",
                    check=True)
    addr, hosts, resolv, ping = r.stdout.split("==\n")
    ip = addr.split("inet ")[1].split()[0]
    assert ipaddress.ip_interface(ip).network == ipaddress.ip_network("10.88.0.0/16"), addr
    assert "default via 10.88.0.1 dev eth0" in addr
    assert f"{ip.split('/')[0]}\tweb1" in hosts
    assert "nameserver" in resolv and "nameserver 127." not in resolv
    assert ping.strip() == "pong"  # the container reaches the bridge
    _back_to(netns, before)  # its veth gone; pyreg0 and the NAT rules stay for the next one


def test_bridge_and_nat_made_once_and_left_up_veth_goes_with_rm(netns: NetNs) -> None:
    empty = _net_view(netns.name)
    cid = netns.pyreg("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    during = _net_view(netns.name)
    assert "pyreg0" in during["links"] and "10.88.0.1/16" in during["addrs"]
    assert "veth" in during["links"]
    assert "-s 10.88.0.0/16 ! -o pyreg0 -j MASQUERADE" in during["rules"]
    assert netns.sh("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    netns.pyreg("rm", "-f", cid, check=True)
    after = _back_to(netns, None)
    # as docker0: the bridge, its address and NAT rules stay; only the container's veth went
    assert after["rules"] == during["rules"] and after["routes"] == during["routes"]
    assert "pyreg0" in after["links"] and "10.88.0.1/16" in after["addrs"]
    assert empty["rules"] == "" and "pyreg0" not in empty["links"]
    cid = netns.pyreg("run", "-d", "busybox", "sleep", "600", check=True).stdout.strip()
    assert _net_view(netns.name)["rules"] == during["rules"]  # not added twice
    netns.pyreg("rm", "-f", cid, check=True)
    _back_to(netns, after)


def test_kill_9_of_run_is_cleaned_by_the_next_command(netns: NetNs, busybox_store: RuntimeEnv) -> None:
    before = _settle(netns)
    proc = netns.popen("run", "--name", "doomed", "busybox", "sleep", "600")
    try:
        rec = busybox_store.wait_running("doomed")
        assert "veth" in _net_view(netns.name)["links"]
        os.kill(int(rec["supervisor"]), signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for _ in range(600):  # PID 1 follows its supervisor (PDEATHSIG); its namespace with it
        if not os.path.exists(f"/proc/{rec['pid']}"):
            break
        time.sleep(0.05)
    assert netns.pyreg("ps", "-a", check=True).stdout.count("Exited") == 1
    _back_to(netns, before)


def test_kill_9_of_run_and_janitor_is_swept_by_the_next_command(netns: NetNs,
                                                                busybox_store: RuntimeEnv) -> None:
    """The janitor (there when ports are published) and the supervisor both killed: the port
    closes with them, the veth with the namespace, and the next command marks the record."""
    before = _settle(netns)
    assert _httpd(netns, "-p", "127.0.0.1:18080:80", name="doomed").returncode == 0
    rec = busybox_store.wait_running("doomed")
    _curl(netns, "http://127.0.0.1:18080/")
    os.kill(int(rec["net"]["janitor"]), signal.SIGKILL)
    os.kill(int(rec["supervisor"]), signal.SIGKILL)
    for _ in range(600):
        if not os.path.exists(f"/proc/{rec['pid']}"):
            break
        time.sleep(0.05)
    assert "Exited" in netns.pyreg("ps", "-a", check=True).stdout
    _back_to(netns, before)
    assert netns.sh("curl", "-s", "--max-time", "5", "http://127.0.0.1:18080/").returncode != 0


def test_network_none_still_has_only_lo(netns: NetNs) -> None:
    r = netns.pyreg("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net", check=True)
    assert r.stdout.split() == ["lo"]


def test_default_network_is_bridge_for_root_and_configurable(netns: NetNs,
                                                             busybox_store: RuntimeEnv) -> None:
    """As docker: no --network means bridge for root; PYREG_NETWORK, then the client config's
    run.network, change the default; --network overrides both."""
    ls = ["busybox", "ls", "/sys/class/net"]
    netns.env.pop("PYREG_NETWORK")
    assert netns.pyreg("run", "--rm", *ls, check=True).stdout.split() == ["eth0", "lo"]
    netns.env["PYREG_NETWORK"] = "none"
    assert netns.pyreg("run", "--rm", *ls, check=True).stdout.split() == ["lo"]
    assert netns.pyreg("run", "--rm", "--network", "bridge", *ls, check=True).stdout.split() == ["eth0", "lo"]
    netns.env.pop("PYREG_NETWORK")
    with open(busybox_store.env["PYREG_CONFIG"], "w") as f:
        f.write('{"run": {"network": "none"}}')
    assert netns.pyreg("run", "--rm", *ls, check=True).stdout.split() == ["lo"]
    netns.env["PYREG_NETWORK"] = "bridge"  # the environment over the config file
    assert netns.pyreg("run", "--rm", *ls, check=True).stdout.split() == ["eth0", "lo"]


def _httpd(ns: NetNs, *publish: str, name: str = "web") -> subprocess.CompletedProcess[str]:
    return ns.pyreg("run", "-d", "--name", name, *publish, "busybox", "sh", "-c",
                    "echo hello from $(hostname) > /index.html && exec httpd -f -p 80 -h /")


def test_publish_port_on_loopback(netns: NetNs) -> None:
    before = _settle(netns)
    r = _httpd(netns, "-p", "127.0.0.1:18080:80")
    assert r.returncode == 0, r.stderr
    assert _curl(netns, "http://127.0.0.1:18080/").startswith("hello from")
    assert netns.pyreg("port", "web", check=True).stdout.strip() == "80/tcp -> 127.0.0.1:18080"
    assert "127.0.0.1:18080->80/tcp" in netns.pyreg("ps", check=True).stdout
    taken = _httpd(netns, "-p", "127.0.0.1:18080:80", name="web2")
    assert taken.returncode == 125 and "18080" in taken.stderr and "in use" in taken.stderr, taken.stderr
    netns.pyreg("rm", "-f", "web", "web2", check=True)
    _back_to(netns, before)


def test_publish_random_host_port(netns: NetNs) -> None:
    assert _httpd(netns, "-p", "80").returncode == 0
    out = netns.pyreg("port", "web", "80", check=True).stdout.strip()
    v4, *v6 = out.splitlines()  # as docker: 0.0.0.0 and [::] (where there is IPv6), one port number
    host_ip, _, port = v4.rpartition(":")
    assert host_ip == "0.0.0.0" and int(port) > 0
    assert _curl(netns, f"http://127.0.0.1:{port}/").startswith("hello from")
    if _has_ipv6(netns):
        assert v6 == [f"[::]:{port}"]
        assert _curl(netns, f"http://[::1]:{port}/").startswith("hello from")
    else:
        assert v6 == []
    netns.pyreg("rm", "-f", "web", check=True)




def test_user_network_names_and_aliases(netns: NetNs) -> None:
    before = _net_view(netns.name)
    nid = netns.pyreg("network", "create", "--subnet", "10.77.5.0/24", "appnet", check=True).stdout.strip()
    assert len(nid) == 64
    assert "appnet" in netns.pyreg("network", "ls", check=True).stdout
    assert _httpd(netns, "--network", "appnet", "--network-alias", "www", name="srv").returncode == 0
    # each name's address read from /etc/hosts with awk, and fetched from (the libc's own lookup
    # of the names: test_names_resolve_on_a_user_network)
    r = netns.pyreg("run", "--rm", "--network", "appnet", "--name", "cli", "busybox", "sh", "-c",
                    "for n in srv www; do ip=$(awk -v n=$n '{for(i=2;i<=NF;i++) if($i==n) print $1}' "
                    "/etc/hosts); for i in $(seq 300); do wget -O - http://$ip:80/ 2>/dev/null && break; "
                    "sleep 0.1; done; done; ip -o -4 addr show eth0", check=True)
    assert r.stdout.count("\n") >= 3, r.stdout + r.stderr
    page1, page2, addr = r.stdout.split("\n", 2)
    assert page1.startswith("hello from") and page2 == page1
    assert "inet 10.77.5." in addr
    netns.pyreg("run", "-d", "--network", "appnet", "--name", "late", "busybox", "sleep", "600", check=True)
    srv_hosts = netns.pyreg("exec", "srv", "cat", "/etc/hosts", check=True).stdout
    assert any(ln.split()[1:2] == ["late"] and ln.startswith("10.77.5.") for ln in srv_hosts.splitlines())
    netns.pyreg("rm", "-f", "late", check=True)
    srv_hosts = netns.pyreg("exec", "srv", "cat", "/etc/hosts", check=True).stdout
    assert "late" not in srv_hosts and "cli" not in srv_hosts  # the file follows who leaves
    inspect = netns.pyreg("network", "inspect", "appnet", check=True).stdout
    assert '"srv"' in inspect and "10.77.5.0/24" in inspect
    busy = netns.pyreg("network", "rm", "appnet")
    assert busy.returncode != 0 and "srv" in busy.stderr
    netns.pyreg("rm", "-f", "srv", check=True)
    netns.pyreg("network", "rm", "appnet", check=True)
    _back_to(netns, before)  # network rm takes its bridge and NAT rules


def test_default_bridge_has_no_names(netns: NetNs) -> None:
    assert _httpd(netns).returncode == 0
    r = netns.pyreg("run", "--rm", "busybox", "cat", "/etc/hosts", check=True)
    assert "web" not in r.stdout
    netns.pyreg("rm", "-f", "web", check=True)


# -- rootless: slirp4netns, as nobody, in a network namespace the test makes -------------------


class RootlessNs:
    """``pyreg`` as nobody (tests/test_runtime_rootless.py's store) inside a netns of our own."""

    def __init__(self, env: RootlessEnv) -> None:
        self.rl = env
        self.name = f"pyregr{os.getpid()}{os.urandom(2).hex()}"
        self.env = {k: v for k, v in env.env.items() if k != "PYREG_NETWORK"}  # the default
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.enter = ["nsenter", f"--net=/run/netns/{self.name}"]
        subprocess.run([*self.enter, "ip", "link", "set", "lo", "up"], check=True)

    def pyreg(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        # nsenter -S/-G: setns as root, then nobody (and no supplementary groups) for pyreg
        proc = subprocess.run([*self.enter, "-S", str(NOBODY), "-G", str(NOBODY), SYSTEM_PYTHON,
                               "-m", "pyreg", *args], env=self.env, cwd=self.rl.base,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"pyreg {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def sh(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.enter, *argv], capture_output=True, text=True, timeout=60)

    def state(self, name: str) -> dict[str, Any]:
        return next(s for s in self.rl.states() if s["name"] == name)


USERMODE = ("pasta", "slirp4netns")
PACKAGE = {"pasta": "passt", "slirp4netns": "slirp4netns"}


def _need(mode: str) -> None:
    if shutil.which(mode) is None:
        pytest.skip(f"{mode} is not installed (Debian: {PACKAGE[mode]})")


@pytest.fixture
def rootless_ns(five_layer_image: images.TestImage) -> Iterator[RootlessNs]:
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun: slirp4netns and pasta need a TAP device")
    host_before = _net_view(None)
    with rootless_env(five_layer_image) as env:
        ns = RootlessNs(env)
        try:
            yield ns
        finally:
            for rec in env.states():
                for mode in ("slirp", "pasta"):
                    pid = (rec.get("net") or {}).get(mode)
                    if pid and _is_tool(int(pid)):
                        os.kill(int(pid), signal.SIGKILL)
            ns.sh("true")
            subprocess.run(["ip", "netns", "del", ns.name], check=False)
    after = _net_view(None)
    for key, text in host_before.items():  # slirp4netns / pasta made nothing in the host's namespace
        changed = set(text.splitlines()) ^ set(after[key].splitlines())
        assert not [ln for ln in changed if any(w in ln for w in ("pyreg", "PYREG", "10.0.2.", "tap"))], key


def _is_tool(pid: int) -> bool:
    """slirp4netns or pasta (argv[0]: the process of that pid is still the one we started)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].endswith((b"slirp4netns", b"pasta"))
    except OSError:
        return False


def _gone(pid: int, deadline: float = 30) -> bool:
    end = time.monotonic() + deadline
    while _is_tool(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _rootless_httpd(ns: RootlessNs, *publish: str, name: str = "web") -> subprocess.CompletedProcess[str]:
    return ns.pyreg("run", "-d", "--name", name, *publish, "five-layer", "sh", "-c",
                    "echo hello from $(hostname) > /index.html && exec httpd -f -p 80 -h /")


def _tool_pid(rec: dict[str, Any], mode: str) -> int:
    return int(rec["net"]["slirp" if mode == "slirp4netns" else "pasta"])


def test_rootless_default_is_pasta_when_installed(rootless_ns: RootlessNs) -> None:
    """As podman 5: pasta when it is there (slirp4netns otherwise)."""
    _need("pasta")
    r = rootless_ns.pyreg("run", "--rm", "five-layer", "ls", "/sys/class/net", check=True)
    assert r.stdout.split() == ["lo", "tap0"]
    assert _rootless_httpd(rootless_ns).returncode == 0
    assert rootless_ns.state("web")["config"]["network"] == "pasta"
    rootless_ns.pyreg("rm", "-f", "web", check=True)


@pytest.mark.parametrize("mode", USERMODE)
def test_rootless_usermode_with_published_port(rootless_ns: RootlessNs, mode: str) -> None:
    _need(mode)
    before = _net_view(rootless_ns.name)
    r = _rootless_httpd(rootless_ns, "--network", mode, "-p", "127.0.0.1:18081:80")
    assert r.returncode == 0, r.stderr
    assert _curl(rootless_ns, "http://127.0.0.1:18081/").startswith("hello from")
    rec = rootless_ns.state("web")
    tool = _tool_pid(rec, mode)
    assert rec["config"]["network"] == mode and _is_tool(tool)
    inside = rootless_ns.pyreg("exec", "web", "sh", "-c", "ls /sys/class/net; echo ==; cat /etc/resolv.conf; "
                               "ip -o -4 addr show tap0; ip route", check=True).stdout
    links, rest = inside.split("==\n")
    assert links.split() == ["lo", "tap0"]  # the TAP of slirp4netns / pasta, and DNS through it
    assert "nameserver 10.0.2.3" in rest and "inet 10.0.2.100/24" in rest and "default via 10.0.2.2" in rest
    assert rootless_ns.pyreg("port", "web", check=True).stdout.strip() == "80/tcp -> 127.0.0.1:18081"
    # the namespace's loopback (127.0.0.1:18081 listens there) is not reachable through the
    # gateway (--disable-host-loopback / --no-map-gw); the tool runs sandboxed, under seccomp
    get = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {}'
    reach = rootless_ns.pyreg("exec", "web", "sh", "-c", get.format("10.0.2.2 18081"))
    assert "hello" not in reach.stdout, reach.stdout + reach.stderr
    probe = rootless_ns.pyreg("exec", "web", "sh", "-c", get.format("127.0.0.1 80"), check=True)
    assert "hello" in probe.stdout  # the probe itself works
    status = Path(f"/proc/{tool}/status").read_text()
    assert "Seccomp:\t2" in status
    assert os.readlink(f"/proc/{tool}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    taken = _rootless_httpd(rootless_ns, "--network", mode, "-p", "127.0.0.1:18081:80", name="web2")
    assert taken.returncode == 125 and "18081" in taken.stderr and "in use" in taken.stderr, taken.stderr
    rootless_ns.pyreg("rm", "-f", "web", "web2", check=True)
    assert _gone(tool)
    assert rootless_ns.sh("curl", "-s", "--max-time", "5", "http://127.0.0.1:18081/").returncode != 0
    assert _net_view(rootless_ns.name) == before  # the tool made nothing in the namespace


@pytest.mark.parametrize("mode", USERMODE)
def test_rootless_random_port_and_kill_9_of_run(rootless_ns: RootlessNs, mode: str) -> None:
    _need(mode)
    assert _rootless_httpd(rootless_ns, "--network", mode, "-p", "80").returncode == 0
    port = rootless_ns.pyreg("port", "web", "80", check=True).stdout.strip().rpartition(":")[2]
    assert _curl(rootless_ns, f"http://127.0.0.1:{port}/").startswith("hello from")
    rec = rootless_ns.state("web")
    os.kill(int(rec["supervisor"]), signal.SIGKILL)
    assert _gone(_tool_pid(rec, mode))  # slirp4netns's --exit-fd / pasta's watcher: the pipe closed
    for _ in range(600):  # PID 1 follows its supervisor (PDEATHSIG)
        if not os.path.exists(f"/proc/{rec['pid']}"):
            break
        time.sleep(0.05)
    assert "Exited" in rootless_ns.pyreg("ps", "-a", check=True).stdout  # the next command sweeps
    assert not (rootless_ns.rl.base / "run" / "containers" / rec["id"] / "slirp4netns.sock").exists()
    assert rootless_ns.sh("curl", "-s", "--max-time", "5", f"http://127.0.0.1:{port}/").returncode != 0
    rootless_ns.pyreg("rm", "web", check=True)


def test_rootless_pasta_after_kill_9_of_run_and_watcher(rootless_ns: RootlessNs) -> None:
    """Its watcher killed too, pasta outlives the container until the next pyreg command's sweep
    stops it (known by its pid file in the container's directory)."""
    _need("pasta")
    assert _rootless_httpd(rootless_ns, "--network", "pasta", "-p", "127.0.0.1:18086:80").returncode == 0
    assert _curl(rootless_ns, "http://127.0.0.1:18086/").startswith("hello from")
    rec = rootless_ns.state("web")
    os.kill(int(rec["net"]["janitor"]), signal.SIGKILL)
    os.kill(int(rec["supervisor"]), signal.SIGKILL)
    for _ in range(600):
        if not os.path.exists(f"/proc/{rec['pid']}"):
            break
        time.sleep(0.05)
    assert _is_tool(int(rec["net"]["pasta"]))  # nobody left to stop it
    assert "Exited" in rootless_ns.pyreg("ps", "-a", check=True).stdout
    assert _gone(int(rec["net"]["pasta"]))
    assert rootless_ns.sh("curl", "-s", "--max-time", "5", "http://127.0.0.1:18086/").returncode != 0
    rootless_ns.pyreg("rm", "web", check=True)


def test_rootless_none_still_only_lo_and_bridge_refused(rootless_ns: RootlessNs) -> None:
    ls = ["five-layer", "ls", "/sys/class/net"]
    assert rootless_ns.pyreg("run", "--rm", "--network", "none", *ls, check=True).stdout.split() == ["lo"]
    rootless_ns.env["PYREG_NETWORK"] = "none"
    r = rootless_ns.pyreg("run", "--rm", "five-layer", "ls", "/sys/class/net", check=True)
    assert r.stdout.split() == ["lo"]
    r = rootless_ns.pyreg("run", "--rm", "--network", "bridge", "five-layer", "true")
    assert r.returncode == 125 and "needs root" in r.stderr and "Traceback" not in r.stderr
    for mode in USERMODE:
        if shutil.which(mode):
            r = rootless_ns.pyreg("run", "--rm", "--network", mode, *ls, check=True)
            assert r.stdout.split() == ["lo", "tap0"]
    assert rootless_ns.rl.states() == []


@pytest.mark.parametrize("mode", USERMODE)
def test_usermode_for_root_too(netns: NetNs, busybox_store: RuntimeEnv, mode: str) -> None:
    """``--network pasta|slirp4netns`` is not only for rootless users (as podman): root's
    container gets the same tap0 and -p, the tool ends with it, confined, and its sandbox's
    unmounts never reach the host's mounts (the test's own /run/netns bind mount still enters)."""
    _need(mode)
    mounts = Path("/proc/self/mountinfo").read_text().count(f"/run/netns/{netns.name} ")
    before = _net_view(netns.name)
    assert _httpd(netns, "--network", mode, "-p", "127.0.0.1:18082:80").returncode == 0
    assert _curl(netns, "http://127.0.0.1:18082/").startswith("hello from")
    links = netns.pyreg("exec", "web", "ls", "/sys/class/net", check=True).stdout.split()
    assert links == ["lo", "tap0"]
    pid = _tool_pid(busybox_store.wait_running("web"), mode)
    assert "Seccomp:\t2" in Path(f"/proc/{pid}/status").read_text()  # it confines itself
    assert Path("/proc/self/mountinfo").read_text().count(f"/run/netns/{netns.name} ") == mounts
    assert netns.sh("true").returncode == 0
    netns.pyreg("rm", "-f", "web", check=True)
    assert _gone(pid)
    assert netns.sh("curl", "-s", "--max-time", "5", "http://127.0.0.1:18082/").returncode != 0
    assert _net_view(netns.name) == before


def _pyreg_rules(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if "PYREG" in ln or "pyreg" in ln]


def _dnat_counts(ns: NetNs) -> dict[str, int]:
    """Packets each PYREG-DNAT rule has rewritten, by its --dport (iptables-save -c)."""
    out: dict[str, int] = {}
    for ln in ns.sh("iptables-save", "-c", "-t", "nat").stdout.splitlines():
        if "-A PYREG-DNAT" in ln:
            out[ln.split("--dport ")[1].split()[0]] = int(ln[1:].split(":")[0])
    return out


OTHER6 = "2001:db8::10"  # the documentation prefix, which routes nowhere


def _has_ipv6(ns: NetNs | RootlessNs) -> bool:
    """IPv6 in the namespace (``::1`` on its lo): what pyreg looks at to bind ``[::]`` as well."""
    return bool(ns.sh("cat", "/proc/net/if_inet6").stdout.strip())


def _other_address(ns: NetNs | RootlessNs) -> str:
    """A non-loopback address of the test's namespace: a veth pair with both ends in it (its
    packets never leave the namespace; TEST-NET-1, which routes nowhere), and ``OTHER6`` on it."""
    v6 = [["ip", "addr", "add", f"{OTHER6}/64", "dev", "pxa", "nodad"]] if _has_ipv6(ns) else []
    for cmd in (["ip", "link", "add", "pxa", "type", "veth", "peer", "name", "pxb"],
                ["ip", "addr", "add", "192.0.2.10/24", "dev", "pxa"], *v6,
                ["ip", "link", "set", "pxa", "up"], ["ip", "link", "set", "pxb", "up"]):
        r = ns.sh(*cmd)
        assert r.returncode == 0, r.stderr
    return "192.0.2.10"


def test_publish_on_other_address_is_dnat_loopback_stays_proxy(netns: NetNs) -> None:
    """As docker: a port on a non-loopback address (or 0.0.0.0) is DNAT-ed by iptables
    (PREROUTING, and OUTPUT for what this host sends), 127.0.0.1 goes through the proxy; the
    rules go with the container, and none ever appears in the host's own tables."""
    host = _other_address(netns)
    before = _settle(netns)
    host_rules = _pyreg_rules(_out("iptables-save"))
    assert _httpd(netns, "-p", f"{host}:18083:80", "-p", "18084:80").returncode == 0
    rules = _net_view(netns.name)["rules"]
    assert f"-A PYREG-DNAT -d {host}/32 ! -i pyreg0 -p tcp -m tcp --dport 18083" in rules, rules
    assert "-A PREROUTING -m addrtype --dst-type LOCAL -j PYREG-DNAT" in rules
    assert "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYREG-DNAT" in rules
    assert _curl(netns, f"http://{host}:18083/").startswith("hello from")
    assert _curl(netns, f"http://{host}:18084/").startswith("hello from")
    counts = _dnat_counts(netns)
    assert counts["18083"] > 0 and counts["18084"] > 0  # the kernel rewrote them: no proxy hop
    assert _curl(netns, "http://127.0.0.1:18084/").startswith("hello from")  # loopback: the proxy
    assert _dnat_counts(netns)["18084"] == counts["18084"]
    assert netns.pyreg("port", "web", check=True).stdout.split("\n")[0].strip() == f"80/tcp -> {host}:18083"
    assert _pyreg_rules(_out("iptables-save")) == host_rules  # the host's tables: untouched
    netns.pyreg("rm", "-f", "web", check=True)
    _back_to(netns, before)
    assert netns.sh("curl", "-s", "--max-time", "5", f"http://{host}:18083/").returncode != 0


def test_dnat_from_another_namespace_through_prerouting(netns: NetNs) -> None:
    """A client outside the host (a second namespace of the test's, on a veth pair whose ends
    are the two namespaces') reaches the published port: PREROUTING's DNAT and the FORWARD
    accept, not the proxy (its counters), and the container sees the client's own address."""
    client = f"{netns.name}c"
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        enter_client = ["nsenter", f"--net=/run/netns/{client}"]
        for cmd in (["ip", "link", "add", "pxa", "type", "veth", "peer", "name", "pxc", "netns", client],
                    ["ip", "addr", "add", "192.0.2.10/24", "dev", "pxa"], ["ip", "link", "set", "pxa", "up"]):
            assert netns.sh(*cmd).returncode == 0
        for cmd in (["ip", "addr", "add", "192.0.2.20/24", "dev", "pxc"], ["ip", "link", "set", "pxc", "up"],
                    ["ip", "link", "set", "lo", "up"]):
            subprocess.run([*enter_client, *cmd], check=True)
        r = netns.pyreg("run", "-d", "--name", "web", "-p", "192.0.2.10:18087:80", "busybox", "sh", "-c",
                        "echo hello > /index.html && exec httpd -f -vv -p 80 -h /")
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 60
        while True:
            got = subprocess.run([*enter_client, "curl", "-s", "--max-time", "5", "http://192.0.2.10:18087/"],
                                 capture_output=True, text=True)
            if got.stdout == "hello\n" or time.monotonic() > end:
                break
            time.sleep(0.1)
        assert got.stdout == "hello\n", got.stderr
        assert _dnat_counts(netns)["18087"] > 0
        assert "192.0.2.20" in netns.pyreg("logs", "web", check=True).stderr + \
            netns.pyreg("logs", "web", check=True).stdout  # httpd -vv logs the peer: not rewritten
        netns.pyreg("rm", "-f", "web", check=True)
    finally:
        subprocess.run(["ip", "netns", "del", client], check=False)


def _peers(ns: NetNs, name: str) -> list[str]:
    """The client addresses ``httpd -vv`` logged, in order."""
    r = ns.pyreg("logs", name, check=True)
    return [ln.split("]:")[0].removeprefix("[::ffff:") for ln in (r.stdout + r.stderr).splitlines()
            if ln.endswith(" url:/")]  # [::ffff:192.0.2.10]:43912: url:/


def test_publish_on_ipv6_is_the_proxy_as_docker_without_ipv6(netns: NetNs) -> None:
    """pyreg's bridge is IPv4-only, as docker's with ipv6 off: ``-p`` on an IPv6 host address, and
    the ``[::]`` side of a port without one (docker binds both), go through the userland proxy to
    the container's IPv4 address — netfilter cannot DNAT IPv6 to IPv4, so no ip6tables rule is
    made. The IPv4 side of the same port stays DNAT-ed (its counter), the IPv6 side never touches
    it, the container sees the proxy (the bridge's gateway) as the peer of IPv6 clients, and the
    ports and (absent) ip6tables rules are as before after ``rm -f``."""
    if not _has_ipv6(netns):
        pytest.skip("no IPv6 in this kernel's network namespaces")
    host = _other_address(netns)
    before = _settle(netns)
    host_rules = _pyreg_rules(_out("iptables-save")) + _pyreg_rules(_out("ip6tables-save"))
    r = netns.pyreg("run", "-d", "--name", "web", "-p", "[::1]:18088:80", "-p", f"[{OTHER6}]:18089:80",
                    "-p", "18084:80", "busybox", "sh", "-c",
                    "echo hello from $(hostname) > /index.html && exec httpd -f -vv -p 80 -h /")
    assert r.returncode == 0, r.stderr
    assert netns.pyreg("port", "web", check=True).stdout.splitlines() == [
        "80/tcp -> [::1]:18088", f"80/tcp -> [{OTHER6}]:18089", "80/tcp -> 0.0.0.0:18084",
        "80/tcp -> [::]:18084"]
    listed = netns.pyreg("port", "web", "80", check=True).stdout.splitlines()
    assert listed[2:] == ["0.0.0.0:18084", "[::]:18084"]
    assert "[::]:18084->80/tcp" in netns.pyreg("ps", check=True).stdout
    assert _curl(netns, f"http://{host}:18084/").startswith("hello from")
    v4 = _dnat_counts(netns)
    assert v4["18084"] > 0 and set(v4) == {"18084"}  # only the IPv4 side has a DNAT rule
    for url in ("http://[::1]:18088/", f"http://[{OTHER6}]:18089/", f"http://[{OTHER6}]:18084/",
                "http://[::1]:18084/"):
        assert _curl(netns, url).startswith("hello from"), url
    assert _dnat_counts(netns) == v4  # the IPv6 connections were not rewritten by netfilter
    peers = _peers(netns, "web")
    assert peers[0] == host and set(peers[1:]) == {"10.88.0.1"}, peers  # DNAT keeps the client; proxy
    view = _net_view(netns.name)
    assert view["rules6"] == before["rules6"] and "PYREG" not in view["rules6"]
    assert _pyreg_rules(_out("iptables-save")) + _pyreg_rules(_out("ip6tables-save")) == host_rules
    netns.pyreg("rm", "-f", "web", check=True)
    _back_to(netns, before)
    for url in ("http://[::1]:18088/", f"http://[{OTHER6}]:18089/", "http://[::1]:18084/"):
        assert netns.sh("curl", "-s", "--max-time", "5", url).returncode != 0, url


@pytest.mark.parametrize("janitor_too", [False, True])
def test_dnat_rules_go_after_kill_9(netns: NetNs, busybox_store: RuntimeEnv, janitor_too: bool) -> None:
    """kill -9 of pyreg run: the janitor removes the rules; of both: the next pyreg command."""
    host = _other_address(netns)
    before = _settle(netns)
    v6 = _has_ipv6(netns)
    r = _httpd(netns, "-p", f"{host}:18085:80", *(["-p", f"[{OTHER6}]:18086:80"] if v6 else []),
               name="doomed")
    assert r.returncode == 0, r.stderr
    rec = busybox_store.wait_running("doomed")
    assert "18085" in _net_view(netns.name)["rules"]
    if v6:
        assert _curl(netns, f"http://[{OTHER6}]:18086/").startswith("hello from")  # the proxy's
    if janitor_too:
        os.kill(int(rec["net"]["janitor"]), signal.SIGKILL)
    os.kill(int(rec["supervisor"]), signal.SIGKILL)
    for _ in range(600):
        if not os.path.exists(f"/proc/{rec['pid']}"):
            break
        time.sleep(0.05)
    if janitor_too:  # nobody left to remove them until a pyreg command sweeps
        assert "18085" in _net_view(netns.name)["rules"]
    assert "Exited" in netns.pyreg("ps", "-a", check=True).stdout
    _back_to(netns, before)  # ip6tables' rules too: none were made
    if v6:
        assert netns.sh("curl", "-s", "--max-time", "5", f"http://[{OTHER6}]:18086/").returncode != 0


def test_nat_rules_flushed_by_a_firewall_reload_come_back_on_the_next_start(netns: NetNs,
                                                                            tmp_path: Path) -> None:
    """A firewall reload (here ``iptables -F/-X`` of the test namespace's nat and filter tables,
    its FORWARD policy DROP kept, as firewalld leaves it) takes pyreg's masquerade and forward
    rules while pyreg0 stays up; the next container start finds them missing and makes them again,
    so it reaches a server in a second namespace of the test's that has no route back to the
    bridge's subnet (only the masquerade makes its replies come back), and the DNAT rules of a
    container running across the reload are back as well."""
    peer = f"{netns.name}p"
    subprocess.run(["ip", "netns", "add", peer], check=True)
    server = None
    try:
        enter_peer = ["nsenter", f"--net=/run/netns/{peer}"]
        for cmd in (["ip", "link", "add", "pxa", "type", "veth", "peer", "name", "pxc", "netns", peer],
                    ["ip", "addr", "add", "192.0.2.10/24", "dev", "pxa"], ["ip", "link", "set", "pxa", "up"],
                    ["iptables", "-P", "FORWARD", "DROP"]):
            r = netns.sh(*cmd)
            assert r.returncode == 0, r.stderr
        for cmd in (["ip", "addr", "add", "192.0.2.20/24", "dev", "pxc"], ["ip", "link", "set", "pxc", "up"],
                    ["ip", "link", "set", "lo", "up"]):
            subprocess.run([*enter_peer, *cmd], check=True)
        (tmp_path / "index.html").write_text("reached\n")
        server = subprocess.Popen([*enter_peer, "busybox", "httpd", "-f", "-p", "192.0.2.20:18092", "-h",
                                   str(tmp_path)], stderr=subprocess.PIPE, text=True)
        fetch = ["busybox", "sh", "-c", "for i in $(seq 30); do wget -q -O - http://192.0.2.20:18092/ "
                 "&& exit 0; sleep 0.1; done; exit 1"]
        assert netns.pyreg("run", "--rm", *fetch, check=True).stdout == "reached\n"
        assert _httpd(netns, "-p", "192.0.2.10:18093:80").returncode == 0  # running across the reload
        assert _curl(netns, "http://192.0.2.10:18093/").startswith("hello from")
        made = _net_view(netns.name)["rules"]
        assert "-A PYREG-POSTROUTING -s 10.88.0.0/16 ! -o pyreg0 -j MASQUERADE" in made
        assert "--dport 18093" in made
        for table in ("nat", "filter"):  # the reload
            for flag in ("-F", "-X"):
                r = netns.sh("iptables", "-t", table, flag)
                assert r.returncode == 0, r.stderr
        assert "PYREG" not in _net_view(netns.name)["rules"]
        assert "pyreg0" in _net_view(netns.name)["links"]
        assert netns.pyreg("run", "--rm", *fetch, check=True).stdout == "reached\n"
        assert _net_view(netns.name)["rules"] == made  # made again, each once, the DNAT ones too
        counted = _dnat_counts(netns)["18093"]
        assert _curl(netns, "http://192.0.2.10:18093/").startswith("hello from")
        assert _dnat_counts(netns)["18093"] > counted  # DNAT-ed again, not the proxy
        assert netns.pyreg("run", "--rm", *fetch, check=True).stdout == "reached\n"
        assert _net_view(netns.name)["rules"] == made  # and not twice by the next start
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", peer], check=False)


def test_names_resolve_on_a_user_network(netns: NetNs) -> None:
    """DNS by name on a user network is /etc/hosts (runtime/network/networks.py): the client's
    libc finds the server by its name and its --network-alias there, with no resolver running.
    (The namespace has no route out: a query that went past /etc/hosts would get nowhere.)"""
    netns.pyreg("network", "create", "--subnet", "10.77.6.0/24", "dnsnet", check=True)
    assert _httpd(netns, "--network", "dnsnet", "--network-alias", "www", name="srv").returncode == 0
    r = netns.pyreg("run", "--rm", "--network", "dnsnet", "--hostname", "cli", "busybox", "sh", "-c",
                    "for n in srv www; do for i in $(seq 300); do wget -q -O - http://$n:80/ && break; "
                    "sleep 0.1; done; done; echo ==; cat /etc/hosts; echo ==; cat /etc/resolv.conf",
                    check=True)
    pages, hosts, resolv = r.stdout.split("==\n")
    page1, page2 = pages.splitlines()
    assert page1.startswith("hello from") and page2 == page1, r.stdout + r.stderr
    srv = [ln.split() for ln in hosts.splitlines() if "srv" in ln.split()]
    assert len(srv) == 1 and srv[0][0].startswith("10.77.6.") and "www" in srv[0]
    assert any(ln.split()[1:2] == ["cli"] for ln in hosts.splitlines())
    assert "nameserver" in resolv and "nameserver 127." not in resolv  # the host's, not loopback
    netns.pyreg("rm", "-f", "srv", check=True)
    netns.pyreg("network", "rm", "dnsnet", check=True)


class Resolver:
    """tests/fixtures/dnsstub.py on a namespace's loopback (127.0.0.1:53), answering one made-up
    name, and a resolv.conf naming it that a command sees as /etc/resolv.conf in a mount
    namespace of its own (``wrap``): the host's file is never touched, and no query can leave
    the test's namespace (the stub forwards nothing)."""

    def __init__(self, enter: list[str], tmp: Path) -> None:
        self.name = f"svc-{os.urandom(3).hex()}.pyreg.test"
        self.web = "192.0.2.10"  # the address the name resolves to: a veth of the test's namespace
        self.conf = tmp / "resolv.conf"
        self.conf.write_text("nameserver 127.0.0.1\n")
        self.conf.chmod(0o644)
        self.proc = subprocess.Popen([*enter, sys.executable, "-m", "tests.fixtures.dnsstub", "127.0.0.1",
                                      f"{self.name}={self.web}"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def wrap(self, enter: list[str], argv: list[str]) -> list[str]:
        """``argv`` in the namespace, in a private mount namespace where /etc/resolv.conf is ours."""
        return [*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(self.conf), *argv]

    def queries(self) -> list[list[str]]:
        """(name, type, source) of every query the stub answered, once it is stopped."""
        self.stop()
        assert self.proc.stdout is not None
        return [ln.split() for ln in self.proc.stdout.read().splitlines()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _web_server(ns: NetNs | RootlessNs, tmp: Path, host: str) -> tuple[subprocess.Popen[str], int]:
    """busybox httpd on ``host`` in the namespace, serving one page; (its process, its port)."""
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("hello by name\n")
    (tmp / "www").chmod(0o755)
    for port in range(18090, 18190):
        proc = subprocess.Popen([*ns.enter, "busybox", "httpd", "-f", "-p", f"{host}:{port}",
                                 "-h", str(tmp / "www")], stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=0.5)  # busybox httpd exits at once when it cannot bind
        except subprocess.TimeoutExpired:
            return proc, port
    raise AssertionError("no free port for the test's web server")


_LOOKUPS = ("nslookup {name} 2>&1; echo ==; nslookup nosuch-{name} 2>&1; echo \"rc=$?\"; echo ==; "
            "for i in $(seq 50); do wget -q -O - http://{name}:{port}/ && break; sleep 0.1; done")


def _check_lookups(out: str, res: Resolver) -> None:
    found, missing, page = out.split("==\n")
    assert f"Address: {res.web}" in found or f"Address 1: {res.web}" in found, out
    assert "rc=0" not in missing, out  # NXDOMAIN from the stub: the answers are its
    assert page == "hello by name\n", out
    asked = res.queries()
    assert [res.name, "1"] in [q[:2] for q in asked], asked
    # every query reached the stub from the namespace's loopback: relayed by the tool's forwarder
    assert asked and all(q[2] == "127.0.0.1" for q in asked), asked


@pytest.mark.parametrize("mode", USERMODE)
def test_usermode_dns_forwarder_resolves_for_root(netns: NetNs, tmp_path: Path, mode: str) -> None:
    """A container of root's under slirp4netns / pasta asks their DNS forwarder (10.0.2.3), which
    relays to the resolver in the host's /etc/resolv.conf: here a stub on the test namespace's
    loopback, named by a resolv.conf bound over /etc/resolv.conf in a mount namespace of the
    test's. ``nslookup`` and ``wget`` by name both go through it."""
    _need(mode)
    web = _other_address(netns)
    res = Resolver(netns.enter, tmp_path)
    server, port = _web_server(netns, tmp_path, web)
    try:
        script = "cat /etc/resolv.conf; echo ==; " + _LOOKUPS.format(name=res.name, port=port)
        r = subprocess.run(res.wrap(netns.enter, [sys.executable, "-m", "pyreg", "run", "--rm",
                                                  "--network", mode, "busybox", "sh", "-c", script]),
                           env=netns.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        resolv, out = r.stdout.split("==\n", 1)
        assert resolv == "nameserver 10.0.2.3\n"
        _check_lookups(out, res)
    finally:
        res.stop()
        server.kill()
        server.wait()


@pytest.mark.parametrize("mode", USERMODE)
def test_rootless_dns_is_the_builtin_forwarder(rootless_ns: RootlessNs, mode: str) -> None:
    """The same as nobody: the container's names go through slirp4netns's / pasta's forwarder at
    10.0.2.3 to the (stub) resolver of the test's namespace; its own hostname is in /etc/hosts."""
    _need(mode)
    tmp = Path(tempfile.mkdtemp(dir=rootless_ns.rl.base))
    tmp.chmod(0o755)
    web = _other_address(rootless_ns)
    res = Resolver(rootless_ns.enter, tmp)
    server, port = _web_server(rootless_ns, tmp, web)
    try:
        script = ("cat /etc/resolv.conf; echo ==; cat /etc/hosts; echo ==; "
                  + _LOOKUPS.format(name=res.name, port=port))
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", SYSTEM_PYTHON,
                "-m", "pyreg", "run", "--rm", "--network", mode, "--hostname", "box", "five-layer",
                "sh", "-c", script]
        r = subprocess.run(res.wrap(rootless_ns.enter, argv), env=rootless_ns.env, cwd=rootless_ns.rl.base,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        resolv, hosts, out = r.stdout.split("==\n", 2)
        assert resolv == "nameserver 10.0.2.3\n"
        assert "10.0.2.100\tbox" in hosts.splitlines()
        _check_lookups(out, res)
    finally:
        res.stop()
        server.kill()
        server.wait()
