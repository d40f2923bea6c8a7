"""Device access: an allow-list in the devices cgroup (v1) or an eBPF program (v2), plus nodev.

A container has CAP_MKNOD (as in docker), so it can make a node for any major:minor — on a
volume, say — and open it. Three independent defences keep host devices out of reach:

| defence | attack it stops | what runc/docker does |
|---|---|---|
| v1 ``devices`` cgroup: ``a`` denied, then Docker's list allowed | open of a self-made node of a host device (``/dev/hwrng``, ``/dev/loop0``, disks) wherever it lives | the same list (runc's AllowedDevices) |
| v2 BPF_PROG_TYPE_CGROUP_DEVICE program from the same list | the same on cgroup v2 (and on a hybrid host when v2 is forced) | runc generates the same kind of program |
| ``nodev`` on every mount but the allowed /dev nodes: rootfs, /dev tmpfs, volumes (recursively, mount_setattr AT_RECURSIVE), /dev/shm, tmpfs | the same even if the cgroup were gone (e.g. rootless, where no cgroup is made) | docker leaves volumes without nodev: pyreg goes past it |
| ``--device HOST[:CTR][:rwm]`` | — (deliberate: bound into /dev and allowed with exactly those permissions) | same flag |
| ``--privileged`` | — (deliberate: every device allowed, as docker) | same |

Docker's default list: every ``c``/``b`` may be *created* (``m``), and null, zero, full, random,
urandom, tty, console, ptmx and the devpts ptys (136:*) may be used (``rwm``).
"""  # noqa: E501

from __future__ import annotations

import os
import stat
from collections import namedtuple

WILDCARD = -1

BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2


class Rule(namedtuple("Rule", "kind major minor access")):
    """One allow rule: ``kind`` c, b or a (all), major/minor (-1 for ``*``), ``access`` ⊆ rwm.
    (A named tuple: dataclasses costs milliseconds of start-up.)"""

    kind: str
    major: int
    minor: int
    access: str

    def v1(self) -> str:
        def num(n: int) -> str:
            return "*" if n == WILDCARD else str(n)

        return f"{self.kind} {num(self.major)}:{num(self.minor)} {self.access}"

    def to_list(self) -> list[object]:
        return [self.kind, self.major, self.minor, self.access]


DEFAULT_RULES = (
    Rule("c", WILDCARD, WILDCARD, "m"), Rule("b", WILDCARD, WILDCARD, "m"),
    Rule("c", 1, 3, "rwm"),  # null
    Rule("c", 1, 5, "rwm"),  # zero
    Rule("c", 1, 7, "rwm"),  # full
    Rule("c", 1, 8, "rwm"),  # random
    Rule("c", 1, 9, "rwm"),  # urandom
    Rule("c", 5, 0, "rwm"),  # tty
    Rule("c", 5, 1, "rwm"),  # console
    Rule("c", 5, 2, "rwm"),  # ptmx
    Rule("c", 136, WILDCARD, "rwm"),  # the devpts ptys
)
ALLOW_ALL = (Rule("a", WILDCARD, WILDCARD, "rwm"),)


def rules_from(items: list[list[object]] | None) -> tuple[Rule, ...]:
    """Rules saved in a container's config (lists) back to Rules."""
    return tuple(Rule(str(k), int(ma), int(mi), str(a)) for k, ma, mi, a in (items or []))  # type: ignore[call-overload]


def parse_device(spec: str) -> dict[str, object]:
    """``--device HOST[:CONTAINER][:PERMS]`` (docker's syntax) -> {host, path, rule}.

    The host path must be a character or block device; its major:minor is what gets allowed,
    with PERMS (default rwm)."""
    parts = spec.split(":")
    host = parts[0]
    ctr = host
    perms = "rwm"
    if len(parts) == 2:
        if parts[1] and set(parts[1]) <= set("rwm") and not parts[1].startswith("/"):
            perms = parts[1]
        else:
            ctr = parts[1]
    elif len(parts) == 3:
        ctr, perms = parts[1], parts[2]
    elif len(parts) != 1:
        raise ValueError(f"invalid device {spec!r}: expected HOST[:CONTAINER][:PERMISSIONS]")
    if not perms or not set(perms) <= set("rwm"):
        raise ValueError(f"invalid device permissions {perms!r} in {spec!r}: a combination of r, w, m")
    if not host.startswith("/") or not ctr.startswith("/"):
        raise ValueError(f"invalid device {spec!r}: paths must be absolute")
    try:
        st = os.stat(host)
    except OSError as e:
        raise ValueError(f"device {host}: {e.strerror}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise ValueError(f"{host} is not a device node")
    rule = Rule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), "".join(c for c in "rwm" if c in perms))
    return {"host": os.path.abspath(host), "path": os.path.normpath(ctr), "rule": rule.to_list()}


# --------------------------------------------------------------------------- cgroup v1


def apply_v1(path: str, rules: tuple[Rule, ...]) -> None:
    """Deny everything, then allow ``rules``, in a v1 ``devices`` cgroup directory."""
    def write(name: str, value: str) -> None:
        fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    if rules == ALLOW_ALL:
        write("devices.allow", "a")
        return
    write("devices.deny", "a")
    for rule in rules:
        write("devices.allow", rule.v1())


# --------------------------------------------------------------------------- cgroup v2 (eBPF)


def program(rules: tuple[Rule, ...]) -> bytes:
    """The BPF_PROG_TYPE_CGROUP_DEVICE program for an allow-list: r0 = 1 if a rule matches.

    Context (struct bpf_cgroup_dev_ctx): u32 access_type = access << 16 | type; u32 major;
    u32 minor. Registers: r2 type, r3 access, r4 major, r5 minor; each rule is a block of
    compares that jumps to the next block on mismatch, else returns 1; the end returns 0.
    """
    from pyreg.runtime.bpf import (
        ALU64_AND_K,
        ALU64_MOV_K,
        ALU64_MOV_X,
        ALU64_RSH_K,
        EXIT,
        JNE_K,
        JNE_X,
        LDX_MEM_W,
        insn,
    )

    out = [
        insn(LDX_MEM_W, 2, 1, 0), insn(ALU64_AND_K, 2, imm=0xFFFF),
        insn(LDX_MEM_W, 3, 1, 0), insn(ALU64_RSH_K, 3, imm=16),
        insn(LDX_MEM_W, 4, 1, 4), insn(LDX_MEM_W, 5, 1, 8),
    ]
    for rule in rules:
        block: list[tuple[int, int, int, int]] = []  # (code, dst, src, imm); jumps get off later
        if rule.kind != "a":
            block.append((JNE_K, 2, 0, BPF_DEVCG_DEV_CHAR if rule.kind == "c" else BPF_DEVCG_DEV_BLOCK))
        mask = ((BPF_DEVCG_ACC_READ if "r" in rule.access else 0)
                | (BPF_DEVCG_ACC_WRITE if "w" in rule.access else 0)
                | (BPF_DEVCG_ACC_MKNOD if "m" in rule.access else 0))
        if mask != 7:  # every requested access bit must be allowed: (access & mask) == access
            block += [(ALU64_MOV_X, 1, 3, 0), (ALU64_AND_K, 1, 0, mask), (JNE_X, 1, 3, 0)]
        if rule.major != WILDCARD:
            block.append((JNE_K, 4, 0, rule.major))
        if rule.minor != WILDCARD:
            block.append((JNE_K, 5, 0, rule.minor))
        n = len(block) + 2  # the block, then r0 = 1; exit
        for i, (code, dst, src, imm) in enumerate(block):
            jump = code in (JNE_K, JNE_X)
            out.append(insn(code, dst, src, n - i - 1 if jump else 0, imm))
        out += [insn(ALU64_MOV_K, 0, imm=1), insn(EXIT)]
    out += [insn(ALU64_MOV_K, 0, imm=0), insn(EXIT)]
    return b"".join(out)


def apply_v2(path: str, rules: tuple[Rule, ...]) -> None:
    """Load the allow-list program and attach it to a cgroup v2 directory. The cgroup keeps the
    program alive; the fd is closed here."""
    if rules == ALLOW_ALL:
        return
    from pyreg.runtime import bpf

    fd = bpf.prog_load_cgroup_device(program(rules))
    try:
        bpf.prog_attach_cgroup_device(path, fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- in the container


def bind_devices(rootfd: int, devices: list[dict[str, object]]) -> None:
    """``--device``: bind each host node onto its path resolved inside the rootfs (under the
    container's /dev, a nodev tmpfs, the node is a bind of the host's, not a mknod)."""
    from pyreg.runtime import linux, rootfs

    for dev in devices:
        target = rootfs.make_file(rootfd, str(dev["path"]), 0o666)
        try:
            rootfs.check_target(target, f"--device {dev['path']}")
            linux.mount(str(dev["host"]), rootfs.fd_path(target), None, linux.MS_BIND)
        finally:
            os.close(target)
