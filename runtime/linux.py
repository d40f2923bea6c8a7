"""The few Linux system calls the runtime needs, through ctypes on libc.

Python 3.11 has no ``os.unshare``/``os.setns``; ctypes costs a couple of milliseconds to import,
far less than a helper binary would. Every wrapper raises OSError with the errno and a message
naming what failed.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# every capability the kernel knows, by number (include/uapi/linux/capability.h)
CAPS = {
    name: i for i, name in enumerate((
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
        "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"))
}

# Docker's default capability set (moby oci/caps/defaults.go)
DEFAULT_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}


_SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 271, "s390x": 280}
KEYCTL_JOIN_SESSION_KEYRING = 1
AT_FDCWD = -100


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail("setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        raise _fail(f"mount {fstype or ''} {source or ''} on {target}".replace("  ", " "))


def umount(target: str, flags: int = 0) -> None:
    if _libc.umount2(_b(target), ctypes.c_int(flags)) != 0:
        raise _fail(f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    if _libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)) != 0:
        raise _fail("pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    if _libc.sethostname(raw, ctypes.c_size_t(len(raw))) != 0:
        raise _fail("sethostname")


def prctl(option: int, arg2: int = 0) -> int:
    r = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                    ctypes.c_ulong(0))
    if r < 0:
        raise _fail(f"prctl({option})")
    return int(r)


def set_name(name: str) -> None:
    """The process's comm (what ps shows), PR_SET_NAME."""
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(15), ctypes.c_char_p(name.encode()[:15]), zero, zero, zero) != 0:
        raise _fail("prctl(PR_SET_NAME)")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding_set(keep: set[int]) -> None:
    """Remove every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_cap() + 1):
        if cap not in keep:
            try:
                prctl(PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != 22:  # EINVAL: the kernel does not know this one
                    raise


def capset(effective: set[int], permitted: set[int], inheritable: set[int]) -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    for i in range(2):
        def mask(caps: set[int], i: int = i) -> int:
            return sum(1 << (c - 32 * i) for c in caps if 32 * i <= c < 32 * (i + 1))

        data[i].effective = mask(effective)
        data[i].permitted = mask(permitted)
        data[i].inheritable = mask(inheritable)
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise _fail("capset")


def set_loopback_up() -> None:
    """``ip link set lo up`` in the current network namespace (SIOCSIFFLAGS on a dgram socket)."""
    fd = _libc.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM | SOCK_CLOEXEC
    if fd < 0:
        raise _fail("socket")
    try:
        ifreq = ctypes.create_string_buffer(b"lo", 40)
        if _libc.ioctl(fd, ctypes.c_ulong(0x8913), ifreq) != 0:  # SIOCGIFFLAGS
            raise _fail("SIOCGIFFLAGS lo")
        raw = bytearray(ifreq.raw)
        flags = int.from_bytes(raw[16:18], "little") | 0x1 | 0x40  # IFF_UP | IFF_RUNNING
        raw[16:18] = flags.to_bytes(2, "little")
        ifreq = ctypes.create_string_buffer(bytes(raw), 40)
        if _libc.ioctl(fd, ctypes.c_ulong(0x8914), ifreq) != 0:  # SIOCSIFFLAGS
            raise _fail("SIOCSIFFLAGS lo")
    finally:
        os.close(fd)


def join_session_keyring() -> int:
    """Join a new anonymous session keyring (keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)), so the
    keys of the caller's session (e.g. the host root's login session) are no longer possessed."""
    nr = _SYS_KEYCTL.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"keyctl: unknown syscall number on {os.uname().machine}")
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None))
    if r < 0:
        raise _fail("keyctl(KEYCTL_JOIN_SESSION_KEYRING)")
    return int(r)


# --------------------------------------------------------------------------- safe paths and mounts
# The syscalls added since 5.2 have one number on every architecture (the unified table from 424).

PR_SET_DUMPABLE = 4

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270
TMPFS_MAGIC = 0x01021994

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442

_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): ``path`` below ``dirfd`` under the ``RESOLVE_*`` rules; ENOSYS before 5.6."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        raise _fail(f"openat2 {path}")
    return int(fd)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE a detached copy of the mount at ``path`` (a bind mount
    not attached anywhere yet, so it can be made read-only before anyone sees it)."""
    fd = _libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), ctypes.c_int(dirfd), _b(path),
                       ctypes.c_uint(flags | os.O_CLOEXEC))
    if fd < 0:
        raise _fail(f"open_tree {path}")
    return int(fd)


def move_mount(from_fd: int, to_fd: int) -> None:
    """move_mount(2) of the detached tree ``from_fd`` onto the directory or file ``to_fd``."""
    r = _libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), ctypes.c_int(from_fd), b"", ctypes.c_int(to_fd), b"",
                      ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))
    if r != 0:
        raise _fail("move_mount")


def mount_setattr(fd: int, attr_set: int, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount ``fd`` refers to (and, recursively, every mount below it)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    r = _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(fd), b"",
                      ctypes.c_uint(AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)), ctypes.byref(attr),
                      ctypes.c_size_t(ctypes.sizeof(attr)))
    if r != 0:
        raise _fail("mount_setattr")


def fs_type(fd: int) -> int:
    """The filesystem magic (``f_type`` of fstatfs) of what ``fd`` refers to."""
    buf = ctypes.create_string_buffer(128)  # struct statfs: f_type is the first word
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        raise _fail("fstatfs")
    return int(ctypes.c_long.from_buffer(buf).value) & 0xFFFFFFFF
