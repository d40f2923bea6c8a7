"""Directories that only their owner can reach or change: the local store and the runtime's state.

Why this exists: image layers are extracted as the image says (a container needs its setuid
``su``, its file capabilities, its device nodes), so the directories that hold them must keep
every other local user out — or any of them runs the image's setuid-root ``cat`` on the host. So:

* every directory pyreg makes there is 0700, with missing parents made 0700 too (the XDG rule
  for data directories); a mode argument is only ever narrowed by the umask, so a caller's
  ``umask 0`` cannot widen it;
* an existing one of ours that group or others can reach is tightened to 0700 (a store or run
  root made by an older pyreg was 0755);
* a directory that another user owns, or that sits below a directory another user owns or that
  anyone may write to without the sticky bit, is refused (:class:`UnsafeDirError`): its owner
  could rename ours away and put their own — a layer that is a symlink to ``/``, a forged
  ``state.json`` — in its place. This is the ``/tmp/pyreg-$UID`` squatting attack, and the
  checks OpenSSH's ``StrictModes`` makes on ``~/.ssh``.

Light on purpose (``os``, ``stat``, ``contextlib``): ``pyreg run`` calls it on its start-up path.
"""

from __future__ import annotations

import contextlib
import os
import stat

PRIVATE_DIR = 0o700


class UnsafeDirError(PermissionError):
    """A directory another user could change; the message names it and says why."""


def tighten(path: str | os.PathLike[str]) -> bool:
    """chmod a directory of ours to 0700 if group or others have any access; True if it did.

    Symlinks, other users' directories and non-directories are left alone."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or not st.st_mode & 0o077:
        return False
    os.chmod(path, PRIVATE_DIR, follow_symlinks=False)
    return True


def make_private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and its missing parents 0700; tighten ``path`` if it already existed."""
    missing = []
    p = os.path.abspath(os.fspath(path))
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, PRIVATE_DIR)
    tighten(path)


# Directories checked by this process before it entered a user namespace of its own (a rootless
# build): in there every ancestor owned by an unmapped uid, root's too, shows as the overflow uid,
# so their owners can only be judged outside; the check is not repeated inside (this process and
# its forks).
_CHECKED_OUTSIDE: set[str] = set()


def check_before_userns(path: str | os.PathLike[str], what: str) -> None:
    """:func:`check_owned` now, before entering a user namespace; trusted inside it from then."""
    check_owned(path, what)
    _CHECKED_OUTSIDE.add(os.path.realpath(path))


def check_parents(path: str | os.PathLike[str], what: str) -> None:
    """Refuse ``path`` if an existing ancestor of it belongs to another user (not root), or may
    be written by anyone without the sticky bit: its owner, or anyone, could swap ``path``.

    Checked before ``path`` is created, so nothing is made inside a squatted directory."""
    real = os.path.realpath(path)
    if real in _CHECKED_OUTSIDE:
        return
    euid = os.geteuid()
    parent = os.path.dirname(real)
    while True:
        with contextlib.suppress(FileNotFoundError):
            pst = os.stat(parent)
            if pst.st_uid not in (0, euid):
                raise UnsafeDirError(f"{what} {path} is inside {parent}, which belongs to uid "
                                     f"{pst.st_uid}: its owner could swap it for their own; use a "
                                     "directory of your own")
            if pst.st_mode & stat.S_IWOTH and not pst.st_mode & stat.S_ISVTX:
                raise UnsafeDirError(f"{what} {path} is inside {parent}, which anyone may write to "
                                     "(no sticky bit): anyone could swap it for their own")
        up = os.path.dirname(parent)
        if up == parent:
            return
        parent = up


def check_owned(path: str | os.PathLike[str], what: str) -> os.stat_result:
    """Refuse ``path`` unless it is a directory of ours that no other user can swap out.

    ``path`` (symlinks followed: a store may be a link to a bigger disk) must be owned by the
    effective uid, and pass :func:`check_parents`. Returns the ``stat`` of ``path``.
    """
    check_parents(path, what)
    st = os.stat(os.path.realpath(path))
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(f"{what} {path} is not a directory")
    if st.st_uid != euid:
        raise UnsafeDirError(f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {euid}): "
                             "its owner could change what pyreg runs; use one of your own")
    return st
