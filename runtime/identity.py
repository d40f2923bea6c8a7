"""Who the command runs as: ``user[:group]`` resolved through the image's /etc/passwd and
/etc/group, read inside the container's root (run after pivot_root or setns) as regular files of
bounded size, since an image is hostile input (``/etc/passwd -> /dev/zero``, a FIFO)."""

from __future__ import annotations

import os
import stat

from pyreg.runtime import rootfs
from pyreg.runtime.errors import ContainerError

PASSWD_MAX = 4 << 20  # the image's /etc/passwd and /etc/group are read up to this size


def _read_image_file(path: str, limit: int = PASSWD_MAX) -> str | None:
    """A small regular file of the container (run after pivot_root or setns, so ``/`` is its
    root), resolved in that root; None when it is missing or not a regular file (a FIFO, a
    device such as /dev/zero, a symlink out of the root), as runc treats an unreadable passwd."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        probe = rootfs.resolve(root, path)  # O_PATH: opens no device, blocks on no FIFO
        try:
            st = os.fstat(probe)
        finally:
            os.close(probe)
        if not stat.S_ISREG(st.st_mode):
            return None
        fd = rootfs.resolve(root, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            return None  # swapped while we looked
        if st.st_size > limit:
            raise ContainerError(f"{path} in the image is larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, min(65536, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ContainerError(f"{path} in the image is larger than {limit} bytes")
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def resolve_user(spec: str, etc: str = "/etc") -> tuple[int, int, list[int], str]:
    """``user[:group]`` (names or ids) -> uid, gid, supplementary gids, home, via the image's files."""
    user, _, group = (spec or "").partition(":")

    def entries(name: str) -> list[list[str]]:
        text = _read_image_file(os.path.join(etc, name))
        if text is None:
            return []
        return [ln.split(":") for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]

    passwd = [e for e in entries("passwd") if len(e) >= 7]
    groups = [e for e in entries("group") if len(e) >= 4]
    entry = None
    if user == "" or user.isdigit():
        uid = int(user or 0)
        entry = next((e for e in passwd if e[2] == str(uid)), None)
    else:
        entry = next((e for e in passwd if e[0] == user), None)
        if entry is None:
            raise ContainerError(f"unable to find user {user}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    name = entry[0] if entry else None
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((e for e in groups if e[0] == group), None)
            if g is None:
                raise ContainerError(f"unable to find group {group}: no matching entries in group file")
            gid = int(g[2])
    extra = sorted({int(g[2]) for g in groups if name and name in g[3].split(",") and g[2].isdigit()}
                   | {gid})
    return uid, gid, extra, home or "/"
