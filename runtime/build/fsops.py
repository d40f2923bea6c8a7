"""The build's own file operations (COPY, ADD, WORKDIR) on an overlay of the layers so far.

The build process first moves into a private mount namespace (:func:`private_mounts`), so every
overlay it mounts to read a stage (``COPY --from``) or to write a step's changes is gone when it
exits, however it exits. A changing step mounts the layers so far with a fresh upper dir (the
same options as a ``RUN``: runtime/build/layers.py) and writes through the merged tree; the
upper dir is then the step's diff, in overlay's notation, exactly as after a ``RUN``.

Writes into the merged tree treat it as hostile: every destination directory is resolved inside
it (runtime/rootfs.py: ``..`` and absolute symlinks stop at its root, no magic links), and files
are made with ``O_NOFOLLOW | O_EXCL`` relative to that directory's fd, so a symlink in an image
never sends a ``COPY`` onto the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator

from pyreg.runtime import linux, rootfs
from pyreg.runtime.build.layers import OVERLAY_BUILD_OPTIONS, OVERLAY_BUILD_OPTIONS_ROOTLESS
from pyreg.runtime.build.records import record

_SKIP_XATTRS = ("trusted.overlay.", "user.overlay.")


_USERNS = False  # this build runs rootless, as root of a user namespace of its own


def in_userns() -> bool:
    """Is this a rootless build (root only in the user namespace :func:`private_mounts` made)?"""
    return _USERNS


def private_mounts(trusted: tuple[str, ...] = ()) -> bool:
    """Unshare the mount namespace; False when that is not possible.

    Rootless (an unprivileged user, as rootless ``pyreg run``): first a user namespace where only
    the user's uid and gid are mapped, as 0, so the build may mount overlays (with ``userxattr``:
    whiteouts as ``user.overlay.*``) and make RUN containers nested in it, and can reach nothing
    the user could not. The run root is pinned first (inside, ``geteuid()`` says 0), and it and
    the ``trusted`` dirs (the store) are checked outside: inside, root's dirs show as nobody's."""
    global _USERNS
    if os.geteuid() != 0:
        from pyreg.runtime import state
        from pyreg.storage.private import check_before_userns

        os.environ["PYREG_RUN_ROOT"] = state.run_root()
        check_before_userns(state.ensure_run_root(), "run root")
        for path in trusted:
            check_before_userns(path, "directory")
        uid, gid = os.geteuid(), os.getegid()
        try:
            linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError:
            return False
        _USERNS = True
    else:
        try:
            linux.unshare(linux.CLONE_NEWNS)
        except OSError:
            return False
    try:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError:
        return False
    return True


def _chown(path: str, uid: int, gid: int, dir_fd: int | None = None, follow_symlinks: bool = True) -> None:
    """``os.chown``; rootless, an owner the user namespace does not map is said plainly."""
    try:
        os.chown(path, uid, gid, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    except OSError as e:
        if e.errno == errno.EINVAL and _USERNS:
            raise ValueError(f"rootless build: only root (0:0) is mapped, files cannot belong to "
                             f"{uid}:{gid}") from None
        raise


def overlay_options() -> str:
    """The build's overlay options; rootless, overlay keeps its xattrs in ``user.*``."""
    return OVERLAY_BUILD_OPTIONS_ROOTLESS + ",userxattr" if _USERNS else OVERLAY_BUILD_OPTIONS


class Mounts:
    """Overlay mounts of this build, under one temporary directory; all undone by :meth:`close`."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.mounted: list[str] = []
        self.views: dict[tuple[str, ...], str] = {}
        self.empty = os.path.join(workdir, "empty")
        self.empty2 = os.path.join(workdir, "empty2")  # a lower-only overlay needs two lowers
        os.makedirs(self.empty, exist_ok=True)
        os.makedirs(self.empty2, exist_ok=True)

    def _dir(self, prefix: str) -> str:
        return tempfile.mkdtemp(prefix=prefix, dir=self.workdir)

    def view(self, layers: list[str]) -> str:
        """A read-only merged view of ``layers`` (base first), mounted once per set of layers."""
        key = tuple(layers)
        if key not in self.views:
            target = self._dir("view-")
            lowers = ":".join(reversed([self.empty, self.empty2, *layers]))
            linux.mount("overlay", target, "overlay", linux.MS_RDONLY | linux.MS_NODEV,
                        f"lowerdir={lowers}" + (",userxattr" if _USERNS else ""))
            self.mounted.append(target)
            self.views[key] = target
        return self.views[key]

    @contextlib.contextmanager
    def writable(self, layers: list[str]) -> Iterator[tuple[str, str]]:
        """(merged dir, upper dir): the layers with a fresh upper dir; unmounted on exit, the
        upper dir kept for the caller to commit (and remove)."""
        base = self._dir("step-")
        upper, work, merged = (os.path.join(base, d) for d in ("upper", "work", "merged"))
        for d in (upper, work, merged):
            os.mkdir(d, 0o755)
        lowers = ":".join(reversed([self.empty, *layers]))
        linux.mount("overlay", merged, "overlay", linux.MS_NODEV,
                    f"lowerdir={lowers},upperdir={upper},workdir={work},{overlay_options()}")
        try:
            yield merged, upper
        finally:
            linux.umount(merged, linux.MNT_DETACH)

    def close(self) -> None:
        for target in reversed(self.mounted):
            with contextlib.suppress(OSError):
                linux.umount(target, linux.MNT_DETACH)
        self.mounted.clear()
        self.views.clear()


# --------------------------------------------------------------------------- reading an image


def read_small(root: str, path: str, limit: int = 4 << 20) -> str | None:
    """A regular file of the tree at ``root`` resolved inside it; None when missing or not one."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = rootfs.resolve(rootfd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(rootfd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit).decode(errors="replace")


def lookup_ids(root: str, spec: str) -> tuple[int, int]:
    """``user[:group]`` (names or numbers) -> uid, gid through the tree's /etc/passwd and group."""
    user, _, group = spec.partition(":")

    def table(name: str) -> list[list[str]]:
        text = read_small(root, f"/etc/{name}") or ""
        return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]

    if user.isdigit():
        uid = int(user)
        gid = uid if not group else 0
    else:
        entry = next((e for e in table("passwd") if len(e) >= 4 and e[0] == user), None)
        if entry is None:
            raise ValueError(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid = int(entry[2]), int(entry[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in table("group") if len(e) >= 3 and e[0] == group), None)
            if g is None:
                raise ValueError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
    return uid, gid


def is_dir_in(root: str, path: str) -> bool:
    """Is ``path`` a directory in the tree (symlinks followed inside it)?"""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = rootfs.resolve(rootfd, path)
    except OSError:
        return False
    finally:
        os.close(rootfd)
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def exists_in(root: str, path: str) -> bool:
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(rootfs.resolve(rootfd, path))
        return True
    except OSError:
        return False
    finally:
        os.close(rootfd)


# --------------------------------------------------------------------------- writing


@record
class Owner:
    """What copied entries get: ``uid``/``gid`` None keep the source's, ``mode`` None too."""

    uid: int | None = 0
    gid: int | None = 0
    mode: int | None = None


def mkdir_in(root: str, path: str, owner: tuple[int, int] | None = None) -> None:
    """``WORKDIR``: the directory and its missing parents made inside the tree, the ones made
    owned by ``owner`` (BuildKit: the stage's USER)."""
    parts = [p for p in path.split("/") if p]
    missing = [i for i in range(1, len(parts) + 1) if not exists_in(root, "/".join(parts[:i]))]
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(mkdir_through(rootfd, path))
        if owner is not None:
            for i in missing:
                fd = rootfs.resolve(rootfd, "/".join(parts[:i]))
                try:
                    _chown(rootfs.fd_path(fd), *owner)
                finally:
                    os.close(fd)
    finally:
        os.close(rootfd)


def mkdir_through(rootfd: int, path: str, mode: int = 0o755) -> int:
    """The directory ``path`` resolved in the root, made where missing; an ``O_PATH`` fd.

    Unlike ``rootfs.mkdir_all`` (the runtime's mount targets, which refuses them), a symlink
    whose target does not exist is followed and its target made, as BuildKit's COPY does (its
    mkdir resolves each symlink in the root, continuity's ``RootPath``): ``/app -> /opt/app``
    and ``COPY x /app/`` make ``/opt/app``. The target is re-resolved from the rootfs fd with
    ``..`` and absolute links stopping at the root, and every directory is made relative to a
    directory fd resolved inside it, so nothing is ever made outside the image.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    for _ in range(40):  # symlinks followed, as the kernel's MAXSYMLINKS
        redirected = None
        cur = os.dup(rootfd)
        try:
            for i, name in enumerate(parts):
                prefix = "/".join(parts[: i + 1])
                try:
                    nxt = rootfs.resolve(rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    try:
                        st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                    except FileNotFoundError:
                        st = None
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        target = os.readlink(name, dir_fd=cur)
                        base = [] if target.startswith("/") else parts[:i]
                        redirected = [*base, *(p for p in target.split("/") if p and p != "."),
                                      *parts[i + 1:]]
                        break
                    rootfs.check_target(cur, f"mkdir {path}")
                    with contextlib.suppress(FileExistsError):  # made by a racing writer
                        os.mkdir(name, mode, dir_fd=cur)
                    nxt = rootfs.resolve(rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
                os.close(cur)
                cur = nxt
            if redirected is None:
                return cur
        except BaseException:
            os.close(cur)
            raise
        os.close(cur)
        parts = redirected
    raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")


class Copier:
    """Copies host trees (a context dir, a stage's view) into the merged tree at ``root``."""

    def __init__(self, root: str, owner: Owner, skip: Callable[[str, bool], bool] | None = None) -> None:
        self.root = root
        self.owner = owner
        self.skip = skip  # (relative source path, is a dir) -> left out (.dockerignore)
        self.links: dict[tuple[int, int], tuple[int, str]] = {}
        self.rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.rootfd)
        for fd, _name in self.links.values():
            os.close(fd)
        self.links.clear()

    def _dir_fd(self, path: str) -> tuple[int, bool]:
        """An O_PATH fd of the directory ``path`` of the tree (made if missing), and whether it
        was made now."""
        try:
            fd = rootfs.resolve(self.rootfd, path, os.O_PATH | os.O_DIRECTORY)
            return fd, False
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            raise ValueError(f"cannot copy to {path}: a file is there, not a directory") from None
        return mkdir_through(self.rootfd, path), True

    def _meta(self, path: str, st: os.stat_result, src: str | None) -> None:
        """Owner, mode, xattrs and times of the (non-symlink) entry at the fd path ``path``."""
        uid = self.owner.uid if self.owner.uid is not None else st.st_uid
        gid = self.owner.gid if self.owner.gid is not None else st.st_gid
        _chown(path, uid, gid)  # path is /proc/self/fd/N: followed to the entry itself
        mode = self.owner.mode if self.owner.mode is not None else stat.S_IMODE(st.st_mode)
        os.chmod(path, mode)  # after chown, which clears setuid bits
        if src is not None:
            _copy_xattrs(src, path)
        os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))

    def copy(self, src: str, dest: str, rel: str = "") -> None:
        """Copy the host path ``src`` to the tree path ``dest``: a directory's contents go into
        ``dest`` (as COPY does), anything else becomes ``dest`` itself. ``rel``: the source's
        path for the ``skip`` test."""
        st = os.lstat(src)
        if stat.S_ISDIR(st.st_mode):
            self._copy_dir(src, dest, rel)
            return
        parent, name = os.path.split(dest.rstrip("/") or "/")
        if not name:
            raise ValueError("cannot copy a file to /")
        fd, _ = self._dir_fd(parent)
        try:
            self._copy_entry(src, st, fd, name)
        finally:
            os.close(fd)

    def _copy_dir(self, src: str, dest: str, rel: str) -> bool:
        fd, made = self._dir_fd(dest)
        st = os.lstat(src)
        try:
            for name in sorted(os.listdir(src)):
                child_rel = f"{rel}/{name}" if rel else name
                child = os.path.join(src, name)
                cst = os.lstat(child)
                if self.skip is not None and self.skip(child_rel, stat.S_ISDIR(cst.st_mode)):
                    continue
                if stat.S_ISDIR(cst.st_mode):
                    self._copy_dir(child, dest.rstrip("/") + "/" + name, child_rel)
                else:
                    self._copy_entry(child, cst, fd, name)
            if made:
                self._meta(rootfs.fd_path(fd), st, src)
        finally:
            os.close(fd)
        return made

    def _copy_entry(self, src: str, st: os.stat_result, dirfd: int, name: str) -> None:
        """One non-directory entry ``name`` in the directory ``dirfd`` (replacing a non-dir)."""
        try:
            old = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            if stat.S_ISDIR(old.st_mode):
                raise ValueError(f"cannot replace the directory {name!r} with a file")
            os.unlink(name, dir_fd=dirfd)
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(mode) and st.st_nlink > 1 and key in self.links:
            first_dir, first_name = self.links[key]
            with contextlib.suppress(OSError):
                os.link(first_name, name, src_dir_fd=first_dir, dst_dir_fd=dirfd, follow_symlinks=False)
                return
        if stat.S_ISREG(mode):
            sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                dfd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=dirfd)
                try:
                    _copy_data(sfd, dfd, st.st_size)
                    self._meta(rootfs.fd_path(dfd), st, src)
                finally:
                    os.close(dfd)
            finally:
                os.close(sfd)
            if st.st_nlink > 1:
                self.links[key] = (os.dup(dirfd), name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), name, dir_fd=dirfd)
            uid = self.owner.uid if self.owner.uid is not None else st.st_uid
            gid = self.owner.gid if self.owner.gid is not None else st.st_gid
            _chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_mtime_ns, st.st_mtime_ns), dir_fd=dirfd, follow_symlinks=False)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dirfd)
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                self._meta(rootfs.fd_path(pfd), st, None)
            finally:
                os.close(pfd)
        # sockets are not copied


def _copy_data(sfd: int, dfd: int, size: int) -> None:
    left = size
    while left > 0:
        try:
            n = os.copy_file_range(sfd, dfd, left)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = os.sendfile(dfd, sfd, None, left)
        if n == 0:
            break
        left -= n


def _copy_xattrs(src: str, dest: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for name in names:
        if name.startswith(_SKIP_XATTRS):
            continue
        with contextlib.suppress(OSError):
            os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False))
