"""seccomp: Docker's default profile (or a docker-format JSON file) compiled by libseccomp.

| defence | attack it stops | what runc/docker does |
|---|---|---|
| default-deny filter, Docker's allow-list (``seccomp_default.json``) | ``keyctl``/``add_key``/``request_key`` on the host's keys, ``unshare(CLONE_NEWUSER)`` and ``clone`` with namespace flags (the way to a user namespace's full capability set), ``mount``, ``bpf``, ``perf_event_open``, kernel modules, ``AF_VSOCK`` sockets, odd ``personality`` values… | the same profile, same JSON format |
| capability-conditional rules | ``--cap-add SYS_ADMIN`` and the like turn on exactly the calls that need them, as in docker | same |
| ``--security-opt seccomp=unconfined`` / ``=FILE.json`` | — (deliberate opt-out or a site's own profile) | same flags |

The filter is compiled in the container's set-up process *before* ``pivot_root`` (libseccomp is
loaded from the host, never from the image) into a classic BPF program, and loaded with
``prctl(PR_SET_SECCOMP)`` as the very last step before ``execve`` (after no_new_privs and the
capability drop; without no_new_privs before the uid switch, while CAP_SYS_ADMIN still allows it,
as runc does). libseccomp (Debian's ``libseccomp2``) is reached through ctypes: a dozen
functions, no Python binding needed. A missing libseccomp is an error, never a silent
unconfined container.

Semantics follow moby's ``profiles/seccomp``: ``archMap`` picks the native architecture and its
sub-architectures; a rule applies when every ``includes.caps`` capability is in the container's
set and none of ``excludes.caps``; ``includes.arches``/``excludes.arches`` use Go's names
(amd64, arm64, …); ``includes.minKernel`` compares with the running kernel; names libseccomp
does not know are skipped; ``errnoRet`` and ``defaultErrnoRet`` set the errno.
"""  # noqa: E501

from __future__ import annotations

import ctypes
import json
import os

from pyreg.runtime import linux

DEFAULT_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seccomp_default.json")

ACT_KILL_THREAD = 0x00000000
ACT_KILL_PROCESS = 0x80000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
       "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

# Go's GOARCH name and libseccomp's name of this machine (the profile speaks both)
_MACHINES = {"x86_64": ("amd64", "x86_64"), "aarch64": ("arm64", "aarch64"),
             "riscv64": ("riscv64", "riscv64"), "ppc64le": ("ppc64le", "ppc64le"),
             "s390x": ("s390x", "s390x"), "i686": ("386", "x86"), "armv7l": ("arm", "arm")}

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class SeccompError(RuntimeError):
    """A profile that cannot be read or compiled; the message says which rule and why."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_lib: ctypes.CDLL | None = None


def _libseccomp() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise SeccompError(f"libseccomp is not installed ({e}); install libseccomp2, or run with "
                               "--security-opt seccomp=unconfined") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_remove.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgCmp)]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _lib = lib
    return _lib


def _action(name: str, errno_ret: int | None, default_errno: int = 1) -> int:
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return ACT_ERRNO | ((default_errno if errno_ret is None else errno_ret) & 0xFFFF)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return ACT_TRAP
    if name == "SCMP_ACT_LOG":
        return ACT_LOG
    if name == "SCMP_ACT_TRACE":
        return ACT_TRACE | ((errno_ret or 0) & 0xFFFF)
    raise SeccompError(f"unsupported seccomp action {name!r}")


def _kernel_at_least(want: str) -> bool:
    def nums(s: str) -> tuple[int, ...]:
        out = []
        for part in s.split("-")[0].split(".")[:3]:
            digits = "".join(c for c in part if c.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return nums(os.uname().release) >= nums(want)


def _applies(rule: dict, caps: set[str], goarch: str) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if exc.get("arches") and goarch in exc["arches"]:
        return False
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    if exc.get("caps") and any(c in caps for c in exc["caps"]):
        return False
    return not (inc.get("minKernel") and not _kernel_at_least(str(inc["minKernel"])))


def load_profile(path: str | None = None) -> bytes:
    """The raw bytes of a profile file (the default one when ``path`` is None)."""
    try:
        with open(path or DEFAULT_PROFILE, "rb") as f:
            return f.read()
    except OSError as e:
        raise SeccompError(f"cannot read seccomp profile {path}: {e.strerror}") from None


def compile_profile(raw: bytes, caps: set[str]) -> bytes:
    """A docker-format profile (bytes of JSON) and the container's capability names -> the
    classic-BPF program (``struct sock_filter[]`` bytes) that libseccomp generates for them."""
    try:
        profile = json.loads(raw)
    except ValueError as e:
        raise SeccompError(f"the seccomp profile is not valid JSON: {e}") from None
    if not isinstance(profile, dict) or "defaultAction" not in profile:
        raise SeccompError("the seccomp profile has no defaultAction")
    lib = _libseccomp()
    machine = os.uname().machine
    goarch, native = _MACHINES.get(machine, (machine, machine))
    default_errno = int(profile.get("defaultErrnoRet") or 1)
    ctx = lib.seccomp_init(_action(profile["defaultAction"], profile.get("defaultErrnoRet"), default_errno))
    if not ctx:
        raise SeccompError("seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, 3, 0)  # SCMP_FLTATR_CTL_NNP: no_new_privs is ours to decide
        # SCMP_FLTATR_CTL_OPTIMIZE = 2: a binary tree of syscall numbers instead of a linear scan
        # (libseccomp >= 2.5; ignored before): it loads faster (the kernel's per-syscall action
        # cache emulates the filter for every syscall number) and runs faster
        lib.seccomp_attr_set(ctx, 8, 2)
        arches = _arches(profile, native)
        for name in arches:
            token = lib.seccomp_arch_resolve_name(name.encode())
            if token == 0:
                continue
            rc = lib.seccomp_arch_add(ctx, token)
            if rc not in (0, -17):  # -EEXIST: the native one is there already
                raise SeccompError(f"seccomp_arch_add {name}: {os.strerror(-rc)}")
        for rule in profile.get("syscalls") or []:
            if not _applies(rule, caps, goarch):
                continue
            action = _action(rule.get("action", ""), rule.get("errnoRet"), default_errno)
            args = rule.get("args") or []
            cmps = (_ArgCmp * max(1, len(args)))()
            for i, a in enumerate(args):
                op = OPS.get(a.get("op", ""))
                if op is None:
                    raise SeccompError(f"unsupported seccomp operator {a.get('op')!r}")
                cmps[i].arg, cmps[i].op = int(a["index"]), op
                cmps[i].datum_a = int(a.get("value", 0)) & (2**64 - 1)
                cmps[i].datum_b = int(a.get("valueTwo", 0)) & (2**64 - 1)
            names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: unknown to this libseccomp, skipped as docker does
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), cmps)
                if rc != 0 and rc != -17:
                    raise SeccompError(f"seccomp rule for {name}: {os.strerror(-rc)}")
        fd = os.memfd_create("pyreg-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc != 0:
                raise SeccompError(f"seccomp_export_bpf: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _arches(profile: dict, native: str) -> list[str]:
    """libseccomp names of the architectures the filter covers: the native one and the
    sub-architectures that the profile's archMap (or legacy ``architectures``) lists for it."""
    out = [native]
    for entry in profile.get("archMap") or []:
        if _scmp_name(entry.get("architecture", "")) == native:
            out += [_scmp_name(s) for s in entry.get("subArchitectures") or []]
    for name in profile.get("architectures") or []:
        out.append(_scmp_name(name))
    return list(dict.fromkeys(out))


def _scmp_name(name: str) -> str:
    return name.removeprefix("SCMP_ARCH_").lower()


try:  # the builtin module: hashlib's OpenSSL import costs ~2 ms of start-up
    from _sha256 import sha256 as _sha256_ctor
except ImportError:  # Python 3.12+: _sha2
    from hashlib import sha256 as _sha256_ctor


def _sha256(data: bytes) -> str:
    return str(_sha256_ctor(data).hexdigest())


def compile_cached(raw: bytes, caps: set[str], cache_dir: str | None) -> bytes:
    """``compile_profile`` through a cache of programs in a root-only directory, keyed by the
    profile's bytes, the capability set, the machine and the kernel (libseccomp's output for the
    same input is the same program: compiling costs milliseconds, reading the file microseconds)."""
    if not cache_dir:
        return compile_profile(raw, caps)
    key = _sha256(b"\0".join([raw, ",".join(sorted(caps)).encode(), os.uname().machine.encode(),
                                     os.uname().release.encode(), b"v2"]))
    path = os.path.join(cache_dir, key + ".bpf")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            # only a file that root wrote and nobody else may change is trusted
            if st.st_uid == 0 and not st.st_mode & 0o022 and st.st_size % 8 == 0 and st.st_size:
                data = os.read(fd, st.st_size + 1)
                if len(data) == st.st_size:
                    return data
        finally:
            os.close(fd)
    prog = compile_profile(raw, caps)
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        wfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(wfd, prog)
        finally:
            os.close(wfd)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written costs time, nothing else
    return prog


def load(prog: bytes) -> None:
    """Install a compiled program on the calling thread (needs no_new_privs or CAP_SYS_ADMIN)."""
    if not prog or len(prog) % 8:
        raise SeccompError("empty or malformed seccomp program")
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if linux._libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                         ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")
