"""Mount destinations resolved inside the container's rootfs, never through a symlink out of it.

An image is hostile input: any path in it may be a symlink (``/proc -> /newproc``,
``/etc/hosts -> /proc/sys/kernel/core_pattern``, ``/etc/passwd -> /dev/zero``). Every path the
runtime touches inside the rootfs is therefore resolved here, relative to an fd of the rootfs, as
if that fd were ``/``: with ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`` where the kernel
has it (5.6+), a component-by-component ``O_NOFOLLOW`` walk otherwise. What comes back is an fd,
and mounts go onto that fd (``move_mount`` of a detached tree, or ``/proc/self/fd/N``), so no path
is looked up twice and nothing can be swapped between the check and the mount.

Defences (defence | attack it stops | what runc does), for runtime/README.md:

- every mount target resolved in the root and mounted by fd (``resolve``, ``mkdir_all``,
  ``make_file``) | ``-v x:/a`` or ``/etc/hosts`` through a symlink out of the rootfs puts a
  mount on the host's tree | the same: securejoin, mount on ``/proc/self/fd/N`` (1.2: open_tree)
- procfs, sysfs and the /dev tmpfs only on a plain directory of the rootfs (``plain_dir``) |
  ``/proc -> /newproc``: a procfs that the masks miss, core_pattern writable = host root |
  the same for proc and sysfs ("must be mounted on ordinary directory")
- no mount destination on procfs, sysfs or a cgroup fs (``check_target``) | ``/etc/hosts ->
  /proc/sys/…``, ``-v x:/proc/…`` | checkProcMount (procfs only, with a whitelist)
- masks and read-only paths applied after pivot_root, beneath /proc and /sys with no symlink
  and no mount crossing, and only if the fs there is the one mounted (``Masker``) | masks
  applied to host paths or skipped as missing; a symlink redirecting a read-only remount |
  the same (masks after pivot_root, by fd, checked to be procfs)
- read-only binds made read-only before they are attached, every submount too (``bind``,
  ``set_tree_attrs``) | ``--network host``: the cgroup mounts under /sys left writable,
  the container leaves its cgroup | mount_setattr where available, else remounts
- workdir resolved in the root with no magic link (``mkdir_all``) | ``exec -w /proc/self/fd/N``
  lands on a host directory | securejoin
- no exec of a program, or of a ``#!`` interpreter, reached through a /proc magic link
  (``check_program``) | ``/proc/self/exe`` as the command runs the host Python as container
  root, which can chmod it or, once it exits, overwrite it (CVE-2019-5736) | runs a sealed memfd
  copy of itself (or runc-dmz), so /proc/self/exe is nothing of the host's
- (exec.py) ``pyreg exec``: every inherited fd above 2 closed before setns | ``exec C cat
  /proc/self/fd/3 3</etc/shadow`` | runc exec passes only the fds it is told to
- (exec.py, process.py) the exec helper and PID 1 non-dumpable until their exec (``--init``: for good) |
  container root opening /proc/PID/exe, fd/, environ of a host process in its pid namespace |
  the same (runc init is non-dumpable, and a memfd binary)
- (identity.py) the image's passwd/group resolved in the root, regular files only, at most
  4 MiB | ``/etc/passwd -> /dev/zero`` eats memory until the OOM killer; a FIFO blocks the
  start | runc reads through securejoin, unbounded
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat

from pyreg.runtime import linux

_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_BENEATH = linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS | linux.RESOLVE_NO_XDEV
_MAX_LINKS = 40

# None: not known yet; set on first use (ENOSYS -> the fallbacks). PYREG_OLD_KERNEL=1 takes the
# fallbacks as a kernel before 5.12 would (the tests run both ways).
_OLD_KERNEL = os.environ.get("PYREG_OLD_KERNEL") == "1"
HAVE_OPENAT2: bool | None = False if _OLD_KERNEL else None
HAVE_MOUNT_API: bool | None = False if _OLD_KERNEL else None

KERNEL_FS = {linux.PROC_SUPER_MAGIC: "procfs", linux.SYSFS_MAGIC: "sysfs",
             linux.CGROUP_SUPER_MAGIC: "cgroupfs", linux.CGROUP2_SUPER_MAGIC: "cgroup2"}


class UnsafePath(OSError):
    """A path of the image that would take a mount or a read out of the rootfs, or onto a
    kernel filesystem: the container is refused."""


def fd_path(fd: int) -> str:
    """The magic link that mount(2) follows to exactly what ``fd`` refers to."""
    return f"/proc/self/fd/{fd}"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


# --------------------------------------------------------------------------- resolution


def resolve(rootfd: int, path: str, flags: int = os.O_PATH) -> int:
    """``path`` opened with ``flags`` as if ``rootfd`` were ``/``: ``..`` and absolute symlinks
    stop at the root, magic links (``/proc/*/fd``, ``exe``, ``cwd``, ``root``) are refused."""
    global HAVE_OPENAT2
    rel = "/".join(_parts(path)) or "."
    if HAVE_OPENAT2 is not False:
        for _ in range(16):  # EAGAIN: a rename or mount raced the lookup; the kernel asks to retry
            try:
                fd = linux.openat2(rootfd, rel, flags, _IN_ROOT)
                HAVE_OPENAT2 = True
                return fd
            except OSError as e:
                if e.errno == errno.ENOSYS:
                    HAVE_OPENAT2 = False
                    break
                if e.errno != errno.EAGAIN:
                    raise OSError(e.errno, f"{path}: {os.strerror(e.errno or 0)}") from None
        else:
            raise OSError(errno.EAGAIN, f"{path}: lookup keeps racing with renames")
    return _walk(rootfd, path, flags)


def _walk(rootfd: int, path: str, flags: int) -> int:
    """The fallback of :func:`resolve`: one ``O_NOFOLLOW`` component at a time, symlinks read
    and re-walked from the rootfs fd, ``..`` never above it."""
    parts = _parts(path)
    stack = [os.dup(rootfd)]  # the directories from the root down to the current one
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and _is_magic(fd, stack[-1]):
                os.close(fd)
                raise OSError(errno.ELOOP, f"{path}: /{name} is a magic link of /proc")
            if stat.S_ISLNK(mode):
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, f"{path}: {os.strerror(errno.ELOOP)}")
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts = _parts(target) + parts
                continue
            if not parts and not flags & os.O_PATH:  # the last one, opened for real
                os.close(fd)
                fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            elif parts and not stat.S_ISDIR(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, f"{path}: {os.strerror(errno.ENOTDIR)}")
            stack.append(fd)
        if len(stack) == 1:
            return os.open(".", flags | os.O_CLOEXEC, dir_fd=stack[0])
        if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(stack[-1]).st_mode):
            raise OSError(errno.ENOTDIR, f"{path}: {os.strerror(errno.ENOTDIR)}")
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _is_magic(link: int, parent: int) -> bool:
    """A procfs symlink below the procfs root (``/proc/PID/exe``, ``cwd``, ``root``, ``fd/N``,
    ``ns/…``): what RESOLVE_NO_MAGICLINKS refuses. ``/proc/self`` and ``/proc/mounts`` are plain."""
    return linux.fs_type(link) == linux.PROC_SUPER_MAGIC and os.fstat(parent).st_ino != 1  # PROC_ROOT_INO


def _head(root: int, path: str) -> bytes:
    """The first bytes of a regular file resolved in the root (b"" for anything else)."""
    fd = resolve(root, path)  # O_PATH: opens no device, blocks on no FIFO
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
    finally:
        os.close(fd)
    fd = resolve(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        return os.read(fd, 256)
    finally:
        os.close(fd)


def _through_magic(root: int, path: str, message: str) -> bool:
    """Was an ELOOP of :func:`resolve` a magic link rather than a loop of plain symlinks?
    (openat2 says ELOOP for both; the walk tells them apart.)"""
    if "magic link" in message:
        return True
    try:
        os.close(_walk(root, path, os.O_PATH))
    except OSError as e:
        return "magic link" in str(e)
    return False


def check_program(name: str, search_path: str) -> None:
    """Refuse to exec a program, or the ``#!`` interpreter of a script, that is reached through a
    magic link (``/proc/self/exe``, ``/proc/1/fd/N``): that would run a binary from outside the
    rootfs, such as this runtime's own host Python, as container root (CVE-2019-5736). Only the
    candidate that execvp would try first is checked; a missing program is left to execvp."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(5):  # the kernel follows at most 4 levels of #! interpreters
            dirs = [""] if "/" in name else search_path.split(":")
            candidates = [os.path.join(os.getcwd(), d, name) for d in dirs]  # an absolute name wins
            for cand in candidates:
                try:
                    head = _head(root, cand)
                except OSError as e:
                    if e.errno == errno.ELOOP and _through_magic(root, cand, str(e)):
                        raise UnsafePath(errno.EPERM, f"{cand} leads out of the container through a "
                                         "magic link of /proc: refusing to exec it") from None
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                        continue
                    return  # execvp will report it
                break
            else:
                return
            if not head.startswith(b"#!"):
                return
            words = head[2:].split(b"\n", 1)[0].split()
            if not words:
                return
            name = os.fsdecode(words[0])
    finally:
        os.close(root)


def mkdir_all(rootfd: int, path: str, mode: int = 0o755) -> int:
    """The directory ``path`` (made where missing) resolved in the root; an ``O_PATH`` fd."""
    parts = _parts(path)
    cur = os.dup(rootfd)
    try:
        for i, name in enumerate(parts):
            prefix = "/".join(parts[: i + 1])
            try:
                nxt = resolve(rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                check_target(cur, f"mkdir {path}")  # a mkdir in cgroupfs makes a host cgroup
                with contextlib.suppress(FileExistsError):  # or a dangling symlink: see below
                    os.mkdir(name, mode, dir_fd=cur)
                try:
                    nxt = resolve(rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    raise UnsafePath(errno.ENOENT, f"{path}: /{prefix} is a dangling symlink") from None
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def make_file(rootfd: int, path: str, mode: int = 0o644) -> int:
    """The file ``path`` (made empty where missing, parents too) resolved in the root; ``O_PATH``."""
    parts = _parts(path)
    if not parts or parts[-1] == "..":
        raise UnsafePath(errno.EINVAL, f"{path}: not a file path")
    try:
        return resolve(rootfd, path)
    except FileNotFoundError:
        pass
    parent = mkdir_all(rootfd, "/".join(parts[:-1]))
    try:
        check_target(parent, f"create {path}")
        with contextlib.suppress(FileExistsError):  # a dangling symlink: resolve() says ENOENT
            os.close(os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             mode, dir_fd=parent))
        return resolve(rootfd, path)
    finally:
        os.close(parent)


def plain_dir(rootfd: int, name: str, mode: int = 0o755) -> int:
    """The top-level directory ``name`` (``proc``, ``sys``, ``dev``) of the rootfs, made if
    missing; refused unless it is a real directory (never a symlink), as runc refuses to put
    procfs or sysfs anywhere but on an ordinary directory."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=rootfd)
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=rootfd)
    except OSError as e:
        raise UnsafePath(e.errno, f"/{name}: {e.strerror}") from None
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(errno.ENOTDIR, f"/{name} in the image is not a directory (a symlink?): "
                         f"refusing to mount {name} there")
    return fd


def check_target(fd: int, what: str) -> None:
    """Refuse a mount whose destination lies on procfs, sysfs or a cgroup filesystem."""
    kind = KERNEL_FS.get(linux.fs_type(fd))
    if kind is not None:
        raise UnsafePath(errno.EPERM, f"{what}: the destination is on {kind}: refusing to mount there")


# --------------------------------------------------------------------------- mounting on fds


def _new_mount_api() -> bool:
    global HAVE_MOUNT_API
    if HAVE_MOUNT_API is None:
        try:
            linux.mount_setattr(-1, linux.MOUNT_ATTR_RDONLY)  # EBADF, or ENOSYS before 5.12
            HAVE_MOUNT_API = True
        except OSError as e:
            HAVE_MOUNT_API = e.errno != errno.ENOSYS
    return bool(HAVE_MOUNT_API)


def mount_fs(source: str, fstype: str, target_fd: int, flags: int = 0, data: str | None = None) -> None:
    linux.mount(source, fd_path(target_fd), fstype, flags, data)


def bind(src: str | int, target_fd: int, *, readonly: bool = False, recursive: bool = True, attrs: int = 0,
         reopen: object = None) -> None:
    """Bind ``src`` (a host path, or an fd of this mount namespace) onto ``target_fd``. With
    ``readonly`` the tree is read-only — every submount too — and ``attrs`` (MOUNT_ATTR_NOSUID,
    _NODEV, _NOEXEC) hold on the whole tree, set before it is attached (open_tree,
    mount_setattr, move_mount). Old kernels: mount, then remount each mount of the new tree;
    ``reopen`` (a callable returning a fresh fd of the target) finds the new mount, as the old fd
    still points below it."""
    tree_attrs = attrs | (linux.MOUNT_ATTR_RDONLY if readonly else 0)
    if _new_mount_api():
        flags = linux.OPEN_TREE_CLONE | (linux.AT_RECURSIVE if recursive else 0)
        tree = (linux.open_tree(src, "", flags | linux.AT_EMPTY_PATH) if isinstance(src, int)
                else linux.open_tree(-100, src, flags))
        try:
            if tree_attrs:
                linux.mount_setattr(tree, tree_attrs, recursive=True)
            linux.move_mount(tree, target_fd)
        finally:
            os.close(tree)
        return
    source = fd_path(src) if isinstance(src, int) else src
    linux.mount(source, fd_path(target_fd), None, linux.MS_BIND | (linux.MS_REC if recursive else 0))
    if tree_attrs:
        if not callable(reopen):
            raise OSError(errno.EINVAL, "bind: mount attributes need reopen on this kernel")
        fd = reopen()
        try:
            set_tree_attrs(fd, tree_attrs)
        finally:
            os.close(fd)


def _ms_flags(attrs: int) -> int:
    flags = linux.MS_RDONLY if attrs & linux.MOUNT_ATTR_RDONLY else 0
    flags |= linux.MS_NOSUID if attrs & linux.MOUNT_ATTR_NOSUID else 0
    flags |= linux.MS_NODEV if attrs & linux.MOUNT_ATTR_NODEV else 0
    return flags | (linux.MS_NOEXEC if attrs & linux.MOUNT_ATTR_NOEXEC else 0)


def _unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def set_tree_attrs(fd: int, attrs: int) -> None:
    """Add ``attrs`` (MOUNT_ATTR_*) to the mount ``fd`` is the root of and every mount below it;
    what each mount already has (read-only, nosuid, nodev, noexec) is kept."""
    if _new_mount_api():
        linux.mount_setattr(fd, attrs, recursive=True)
        return
    top = os.readlink(fd_path(fd))
    with open("/proc/self/mountinfo") as f:
        points = [_unescape(line.split()[4]) for line in f]
    under = [p for p in points if p == top or p.startswith(top.rstrip("/") + "/")]
    for point in sorted(set(under), key=len):
        # MS_REMOUNT|MS_BIND replaces the flags: keep each mount's own
        st = os.statvfs(point)
        keep = st.f_flag & (linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
        linux.mount(None, point, None, linux.MS_BIND | linux.MS_REMOUNT | keep | _ms_flags(attrs))


# --------------------------------------------------------------------------- masks after pivot_root


class Masker:
    """runc's masked and read-only paths, applied after pivot_root beneath a mount that is
    checked to be the very procfs (or sysfs) mounted for this container."""

    def __init__(self, null_fd: int) -> None:
        self.null_fd = null_fd  # O_PATH fd of the container's /dev/null bind (in this mount namespace)
        self.bases: dict[str, tuple[int, int]] = {}  # "/proc" -> (fs magic, st_dev) as mounted

    def expect(self, top: str, fd: int) -> None:
        """Record what was mounted at ``top`` (an fd of the mount's root, reopened after the mount)."""
        self.bases[top] = (linux.fs_type(fd), os.fstat(fd).st_dev)

    def _beneath(self, path: str, onto_mount: bool = False) -> int | None:
        """An ``O_PATH`` fd of ``path`` on the recorded mount, no symlink followed; None if absent.
        With ``onto_mount`` the last step may enter a mount on top (one this class just made)."""
        if onto_mount:
            parent = self._beneath(path.rsplit("/", 1)[0])
            if parent is None:
                return None
            try:
                name = path.rsplit("/", 1)[1]
                return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            finally:
                os.close(parent)
        top = "/" + _parts(path)[0]
        if top not in self.bases:
            raise UnsafePath(errno.EINVAL, f"{path}: no mount was recorded for {top}")
        magic, dev = self.bases[top]
        base = os.open(top, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(base)
            if linux.fs_type(base) != magic or st.st_dev != dev:
                raise UnsafePath(errno.EXDEV, f"{top} is not the filesystem mounted there for the container")
            rel = "/".join(_parts(path)[1:]) or "."
            try:
                if HAVE_OPENAT2 is not False:
                    try:
                        return linux.openat2(base, rel, os.O_PATH, _BENEATH)
                    except OSError as e:
                        if e.errno != errno.ENOSYS:
                            raise
                return self._beneath_walk(base, rel, dev)
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                    raise UnsafePath(e.errno, f"{path}: crosses a symlink or a mount; refusing") from None
                raise
        finally:
            os.close(base)

    @staticmethod
    def _beneath_walk(base: int, rel: str, dev: int) -> int:
        fd = os.dup(base)
        for name in _parts(rel):
            if name == "..":
                os.close(fd)
                raise OSError(errno.EXDEV, "..")
            try:
                nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            finally:
                os.close(fd)
            st = os.fstat(nxt)
            fd = nxt
            if stat.S_ISLNK(st.st_mode) or st.st_dev != dev:
                os.close(fd)
                raise OSError(errno.ELOOP, name)
        return fd

    def mask(self, path: str) -> None:
        """Hide ``path``: an empty read-only tmpfs on a directory, /dev/null on anything else."""
        fd = self._beneath(path)
        if fd is None:
            return
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                mount_fs("tmpfs", "tmpfs", fd, linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
                         | linux.MS_NOEXEC)
            else:
                linux.mount(fd_path(self.null_fd), fd_path(fd), None, linux.MS_BIND)
        finally:
            os.close(fd)

    def readonly(self, path: str) -> None:
        """``path`` and everything below it read-only, nosuid, nodev, noexec."""
        fd = self._beneath(path)
        if fd is None:
            return
        try:
            attrs = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC

            def reopen() -> int:
                again = self._beneath(path, onto_mount=True)
                if again is None:
                    raise UnsafePath(errno.ENOENT, f"{path} vanished")
                return again

            bind(fd, fd, readonly=True, attrs=attrs, reopen=reopen)
        finally:
            os.close(fd)
