"""Just enough eBPF for a cgroup v2 device filter: a tiny assembler and the bpf() syscall.

cgroup v2 has no ``devices.allow``: the kernel asks a BPF_PROG_TYPE_CGROUP_DEVICE program
attached to the cgroup whether a process may mknod/read/write a device node. runc generates such
a program from the allow-list (libcontainer/cgroups/devices/ebpf); this is the same idea with
the six instructions it needs, through ctypes, with no compiler or BPF library.
"""

from __future__ import annotations

import ctypes
import os
import struct

from pyreg.runtime import linux

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6

# opcodes (include/uapi/linux/bpf.h, bpf_common.h)
LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
ALU64_AND_K = 0x57
ALU64_RSH_K = 0x77
ALU64_MOV_K = 0xB7
ALU64_MOV_X = 0xBF
JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto pc + 1 + off
JNE_X = 0x5D
EXIT = 0x95


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: u8 code, u4 dst | u4 src << 4, s16 off, s32 imm (little-endian
    host order, as the kernel reads it)."""
    return struct.pack("=BBhi", code, (dst & 0xF) | ((src & 0xF) << 4), off, imm)


def _syscall_nr() -> int:
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"bpf: unknown syscall number on {os.uname().machine}")
    return nr


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    r = linux._libc.syscall(ctypes.c_long(_syscall_nr()), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if r < 0:
        raise linux._fail(what)
    return int(r)


def prog_load_cgroup_device(prog: bytes) -> int:
    """Load a device program; returns its fd. The verifier's log is in the error if it refuses."""
    insns = ctypes.create_string_buffer(prog, len(prog))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("=IIQQIIQ", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license_), 0, 0, 0)
    struct.pack_into("16s", attr, 48, b"pyreg_devices")
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as e:
        if e.errno != 13:  # EACCES: the verifier refused; load again with its log to say why
            raise
        struct.pack_into("=IIQ", attr, 24, 1, len(log), ctypes.addressof(log))
        try:
            return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
        except OSError as e2:
            raise OSError(e2.errno, f"{e2.strerror}: {log.value.decode(errors='replace')[-500:]}") from None


def prog_attach_cgroup_device(cgroup_dir: str, prog_fd: int) -> None:
    """Attach a loaded device program to a cgroup v2 directory (no override below it)."""
    cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("=IIII", attr, 0, cg, prog_fd, BPF_CGROUP_DEVICE, 0)
        _bpf(BPF_PROG_ATTACH, attr, f"bpf(BPF_PROG_ATTACH) to {cgroup_dir}")
    finally:
        os.close(cg)
