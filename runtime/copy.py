"""``pyreg cp``: files between a container and the host, never following a symlink out.

A running container's filesystem is reached through ``/proc/PID/root`` of its PID 1 (pid checked
against its recorded start time). A stopped one's, as docker does, is its overlay (its upper dir
over its image layers) mounted for the copy in a child process's private mount namespace (in a
user namespace when rootless): writes land in the upper dir, and nothing is mounted on the host.
Either way, the container-side path is resolved with ``rootfs.resolve`` —
``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)``: ``..`` and absolute symlinks stop at the
container's root, ``/proc/*/fd`` and friends are refused. Below that, every entry on either side
is opened relative to its parent's fd with ``O_NOFOLLOW``: a symlink is copied as a symlink, never
followed, so a container that swaps a directory for a link to a host path mid-copy gets an error,
not a host file. ``-`` is a tar stream on stdin/stdout, as docker's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tarfile
from collections.abc import Callable
from typing import IO

from pyreg.runtime import rootfs, state

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class CopyError(OSError):
    pass


def container_root(rec: Container) -> int:
    """An fd for the running container's ``/``; ``CopyError`` when it is not running."""
    pid = int(rec.pid or 0)
    if rec.status != "running" or not pid:
        raise CopyError(errno.ESRCH, f"container {rec.name} is not running (pyreg cp needs a running one)")
    fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if state.proc_start_time(pid) != rec.pid_start:
        os.close(fd)
        raise CopyError(errno.ESRCH, f"container {rec.name} is not running")
    return fd


def _with_root(rec: Container, body: Callable[[int], None], stdout: IO[bytes] | None = None) -> None:
    """``body(fd of the container's /)`` for a running container, or in a child process that
    mounts a stopped one's overlay (its errors come back as CopyError)."""
    if rec.status == "running" and rec.pid:
        root = container_root(rec)
        try:
            body(root)
        finally:
            os.close(root)
        return
    cfg = rec.config
    cdir = state.container_dir(rec.id)
    if not cfg.layers or not os.path.isdir(os.path.join(cdir, "upper")):
        raise CopyError(errno.ENOENT, f"container {rec.name} has no filesystem to copy from")
    if stdout is not None:
        stdout.flush()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(err_r)
            try:
                root = _mount_stopped(rec, cdir)
                body(root)
                if stdout is not None:
                    stdout.flush()
                code = 0
            except (OSError, ValueError) as e:
                text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                doc = {"errno": getattr(e, "errno", None) or errno.EIO,
                       "filename": getattr(e, "filename", None), "message": text}
                os.write(err_w, json.dumps(doc).encode())
            except BaseException as e:
                doc = {"errno": errno.EIO, "message": f"{type(e).__name__}: {e}"}
                os.write(err_w, json.dumps(doc).encode())
        finally:
            os._exit(code)
    os.close(err_w)
    from pyreg.runtime.process import read_to_end

    data = read_to_end(err_r)
    _, status = os.waitpid(pid, 0)
    if data:
        doc = json.loads(data)
        raise CopyError(int(doc["errno"]), str(doc["message"]), doc.get("filename"))
    if os.waitstatus_to_exitcode(status) != 0:
        raise CopyError(errno.EIO, "copying from the stopped container failed")


def _mount_stopped(rec: Container, cdir: str) -> int:
    """In this (child) process: a private mount namespace with the container's overlay mounted on
    its ``rootfs`` directory; an fd for it. The working directory is kept (host paths)."""
    from pyreg.runtime import linux, mounts
    from pyreg.runtime.process import enter_user_namespace

    cfg = rec.config
    if cfg.rootless:
        enter_user_namespace()
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing propagates to the host
    target = os.path.join(cdir, "rootfs")
    upper, work = os.path.join(cdir, "upper"), os.path.join(cdir, "work")
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        opts = mounts.overlay_options(cfg.layers, upper, work, cfg.rootless)
        if len(opts) > 3900:  # one page of mount data: short paths, as the running case mounts it
            os.chdir(os.path.dirname(os.path.dirname(cfg.layers[0])))
            opts = mounts.overlay_options([os.path.relpath(p) for p in cfg.layers], upper, work, cfg.rootless)
        try:
            linux.mount("overlay", target, "overlay", linux.MS_NODEV | linux.MS_NOSUID, opts)
        except OSError as e:
            raise CopyError(e.errno, f"cannot mount the stopped container {rec.name}'s filesystem: "
                            f"{e.strerror or e}") from None
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    return os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _split(path: str) -> tuple[str, str]:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or parts[-1] == "..":
        return "/".join(parts), ""
    return "/".join(parts[:-1]), parts[-1]


def _copy_entry(src_dir: int, name: str, dst_dir: int, dst_name: str) -> None:
    """``name`` in ``src_dir`` to ``dst_name`` in ``dst_dir``: files, dirs (recursively) and
    symlinks (as links); devices, fifos and sockets are skipped, as docker's tar does not make
    them for a non-root reader. Nothing is followed on either side."""
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(name, dir_fd=src_dir)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.stat(dst_name, dir_fd=dst_dir, follow_symlinks=False).st_mode):
                os.unlink(dst_name, dir_fd=dst_dir)
        os.symlink(target, dst_name, dir_fd=dst_dir)
    elif stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileExistsError):
            os.mkdir(dst_name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dst_dir)
        s = os.open(name, _DIR, dir_fd=src_dir)
        try:
            d = os.open(dst_name, _DIR, dir_fd=dst_dir)
            try:
                for entry in sorted(os.listdir(s)):
                    _copy_entry(s, entry, d, entry)
                os.chmod(d, stat.S_IMODE(st.st_mode))
            finally:
                os.close(d)
        finally:
            os.close(s)
    elif stat.S_ISREG(st.st_mode):
        s = os.open(name, _FILE, dir_fd=src_dir)
        try:
            if not stat.S_ISREG(os.fstat(s).st_mode):  # swapped since the lstat
                raise CopyError(errno.EINVAL, f"{name}: changed while copying")
            d = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                        stat.S_IMODE(st.st_mode), dir_fd=dst_dir)
            try:
                if not stat.S_ISREG(os.fstat(d).st_mode):
                    raise CopyError(errno.EINVAL, f"{dst_name}: not a regular file")
                while chunk := os.read(s, 1 << 20):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(d, view):]
                os.fchmod(d, stat.S_IMODE(st.st_mode))
            finally:
                os.close(d)
        finally:
            os.close(s)


def _tar_entry(tar: tarfile.TarFile, src_dir: int, name: str, arcname: str) -> None:
    """The same walk into a tar stream (``cp CONTAINER:PATH -``)."""
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    ti = tarfile.TarInfo(arcname)
    ti.mode, ti.mtime, ti.uid, ti.gid = stat.S_IMODE(st.st_mode), int(st.st_mtime), st.st_uid, st.st_gid
    if stat.S_ISLNK(st.st_mode):
        ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=src_dir)
        tar.addfile(ti)
    elif stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
        s = os.open(name, _DIR, dir_fd=src_dir)
        try:
            for entry in sorted(os.listdir(s)):
                _tar_entry(tar, s, entry, f"{arcname}/{entry}")
        finally:
            os.close(s)
    elif stat.S_ISREG(st.st_mode):
        s = os.open(name, _FILE, dir_fd=src_dir)
        try:
            with os.fdopen(os.dup(s), "rb") as f:
                ti.size = os.fstat(s).st_size
                tar.addfile(ti, f)
        finally:
            os.close(s)


def _resolve_parent(root: int, path: str, in_container: bool = True) -> tuple[int, str]:
    """The container directory holding ``path``'s last component (resolved in the root), and
    that component (``.`` for the root itself)."""
    parent, name = _split(path)
    return rootfs.resolve(root, parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name or "."


def copy_out(rec: Container, src: str, dest: str, stdout: IO[bytes] | None = None) -> None:
    def body(root: int) -> None:
        src_parent, src_name = _resolve_parent(root, src, True)
        try:
            if dest == "-":
                with tarfile.open(fileobj=stdout, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _tar_entry(tar, src_parent, src_name, os.path.basename(src.rstrip("/")) or ".")
                return
            dst_parent, dst_name = _host_target(dest, os.path.basename(src.rstrip("/")))
            try:
                _copy_entry(src_parent, src_name, dst_parent, dst_name)
            finally:
                os.close(dst_parent)
        finally:
            os.close(src_parent)

    _with_root(rec, body, stdout if dest == "-" else None)


def _host_target(dest: str, src_base: str) -> tuple[int, str]:
    """docker's rule: into ``dest`` when it is a directory, else as ``dest``."""
    if os.path.isdir(dest):
        return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), src_base or "."
    parent = os.path.dirname(dest.rstrip("/")) or "."
    return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), os.path.basename(dest.rstrip("/"))


def copy_in(rec: Container, src: str, dest: str, stdin: IO[bytes] | None = None) -> None:
    def body(root: int) -> None:
        if src == "-":  # a tar stream, extracted into the directory dest with the layer extractor
            from pyreg.runtime.extract import _Extractor

            d = rootfs.resolve(root, dest, os.O_RDONLY | os.O_DIRECTORY)
            try:
                ex = _Extractor(f"/proc/self/fd/{d}/.", "apply", os.geteuid() == 0)
                try:
                    with tarfile.open(fileobj=stdin, mode="r|") as tar:
                        for ti in tar:
                            ex.add(tar, ti)
                    ex.finish()
                finally:
                    ex.close()
            finally:
                os.close(d)
            return
        base = os.path.basename(os.path.abspath(src))
        try:  # dest an existing directory in the container: into it
            dst_parent, dst_name = rootfs.resolve(root, dest, os.O_RDONLY | os.O_DIRECTORY), base
        except (NotADirectoryError, FileNotFoundError):
            dst_parent, dst_name = _resolve_parent(root, dest, True)
        try:
            src_abs = os.path.abspath(src)
            sp = os.open(os.path.dirname(src_abs), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _copy_entry(sp, os.path.basename(src_abs) or ".", dst_parent, dst_name)
            finally:
                os.close(sp)
        finally:
            os.close(dst_parent)

    _with_root(rec, body)
