"""The container's filesystem: the overlay rootfs, /proc, a minimal /dev, /sys, --device nodes,
the /etc files, the volumes, the read-only root, then runc's masked and read-only paths.

Every mount is made inside the container's private mount namespace, each on an fd resolved
inside the rootfs (runtime/rootfs.py: an image is hostile input), so the host's mount table
never changes and everything disappears with the container's last process. Runs in the
container's set-up process (runtime/process.py), between fork and exec.
"""

from __future__ import annotations

import os
import stat

from pyreg.runtime import devices, linux, rootfs
from pyreg.runtime.errors import ContainerError

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings
if TYPE_CHECKING:
    from pyreg.runtime.record import ContainerConfig

# runc's default masked and read-only paths (the ones docker uses)
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0))
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))


def enter_rootfs(cfg: ContainerConfig, cdir: str) -> None:
    """In the container's new mount namespace: the overlay rootfs (image layers as lower dirs,
    top first; the container's upper/work dir), everything mounted in it, ``pivot_root`` into it,
    then the masks (not with ``--privileged``: docker unmasks /proc and /sys then)."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    rootfs_path = os.path.join(cdir, "rootfs")
    layers = cfg.layers
    rootless = cfg.rootless
    opts = overlay_options(layers, os.path.join(cdir, "upper"), os.path.join(cdir, "work"), rootless)
    if len(opts) > 3900:  # one page of mount data: use short paths relative to the layer store
        os.chdir(os.path.dirname(os.path.dirname(layers[0])))
        rel = [os.path.relpath(p) for p in layers]
        opts = overlay_options(rel, os.path.join(cdir, "upper"), os.path.join(cdir, "work"), rootless)
    if cfg.extra.get("overlay_options"):  # a build step: redirect_dir=off,metacopy=off (build/layers.py)
        opts += "," + str(cfg.extra["overlay_options"])
    linux.mount("overlay", rootfs_path, "overlay", linux.MS_NODEV, opts)
    os.umask(0o022)
    masker = setup_mounts(cfg, cdir, rootfs_path)
    os.chdir(rootfs_path)
    linux.pivot_root(".", ".")
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    if not cfg.privileged:  # docker: --privileged unmasks /proc and /sys
        apply_masks(masker)


def _setup_dev(rootfd: int, rootless: bool = False) -> int:
    """A tmpfs /dev with the usual nodes; returns an ``O_PATH`` fd of its ``null`` (for masks).

    There is no devices cgroup, so device access is kept out by ``nodev``: /dev and the rootfs
    are nodev and each allowed node is a bind mount of the host's, so a node that the container
    makes (it has CAP_MKNOD, as in docker) cannot be opened. The image's /dev must be a plain
    directory; everything below it is made here, by fd, in the fresh tmpfs."""
    target = rootfs.plain_dir(rootfd, "dev")
    try:
        rootfs.mount_fs("tmpfs", "tmpfs", target, linux.MS_NOSUID | linux.MS_NODEV, "mode=755,size=65536k")
    finally:
        os.close(target)
    dev = rootfs.plain_dir(rootfd, "dev")  # now the tmpfs: this fd sees what was mounted
    try:
        if linux.fs_type(dev) != linux.TMPFS_MAGIC:
            raise ContainerError("/dev is not the tmpfs just mounted there")
        for name, major, minor in DEVICES:
            host = f"/dev/{name}"
            st = os.stat(host)
            if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(major, minor):
                raise ContainerError(f"host {host} is not the character device {major}:{minor}")
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                             dir_fd=dev))
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
            try:
                linux.mount(host, rootfs.fd_path(node), None, linux.MS_BIND)
            finally:
                os.close(node)
        subs = {}
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(sub, 0o755, dir_fd=dev)
            subs[sub] = os.open(sub, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dev)
        try:
            # rootless: gid 5 (tty) is not mapped in the user namespace
            rootfs.mount_fs("devpts", "devpts", subs["pts"], linux.MS_NOSUID | linux.MS_NOEXEC,
                            "newinstance,ptmxmode=0666,mode=0620" + ("" if rootless else ",gid=5"))
            rootfs.mount_fs("shm", "tmpfs", subs["shm"], linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
                            "mode=1777,size=65536k")
            try:
                rootfs.mount_fs("mqueue", "mqueue", subs["mqueue"],
                                linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
            except OSError:
                os.rmdir("mqueue", dir_fd=dev)
        finally:
            for fd in subs.values():
                os.close(fd)
        for name, link in DEV_LINKS:
            os.symlink(link, name, dir_fd=dev)
        return os.open("null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
    finally:
        os.close(dev)


def _mount_sys(rootfd: int, cfg: ContainerConfig, masker: rootfs.Masker) -> None:
    """sysfs on the image's plain /sys directory; with ``--network host`` (or rootless, where a
    user namespace may not mount sysfs) the host's /sys, read-only with every mount under it."""
    flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    target = rootfs.plain_dir(rootfd, "sys")
    try:
        host_sys = cfg.network == "host"
        if not host_sys:
            try:
                rootfs.mount_fs("sysfs", "sysfs", target, flags | linux.MS_RDONLY)
            except OSError:
                if not cfg.rootless:
                    raise
                host_sys = True
        if host_sys:
            attrs = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
            rootfs.bind("/sys", target, readonly=True, attrs=attrs,
                        reopen=lambda: rootfs.plain_dir(rootfd, "sys"))
    finally:
        os.close(target)
    mounted = rootfs.plain_dir(rootfd, "sys")
    try:
        if linux.fs_type(mounted) != linux.SYSFS_MAGIC:
            raise ContainerError("/sys is not the sysfs just mounted there")
        masker.expect("/sys", mounted)
    finally:
        os.close(mounted)


def setup_mounts(cfg: ContainerConfig, cdir: str, rootfs_path: str) -> rootfs.Masker:
    """Every mount of the container, each on an fd resolved inside the rootfs (runtime/rootfs.py);
    returns what the masks, applied after pivot_root, must find mounted."""
    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    rootfd = os.open(rootfs_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = rootfs.plain_dir(rootfd, "proc")
        try:
            rootfs.mount_fs("proc", "proc", target, nosuid_nodev_noexec)
        finally:
            os.close(target)
        proc = rootfs.plain_dir(rootfd, "proc")
        try:
            if linux.fs_type(proc) != linux.PROC_SUPER_MAGIC:
                raise ContainerError("/proc is not the procfs just mounted there")
            null = _setup_dev(rootfd, cfg.rootless)
            masker = rootfs.Masker(null)
            masker.expect("/proc", proc)
        finally:
            os.close(proc)
        devices.bind_devices(rootfd, cfg.devices)
        _mount_sys(rootfd, cfg, masker)
        for name in ("hosts", "hostname", "resolv.conf"):
            target = rootfs.make_file(rootfd, f"/etc/{name}")
            try:
                rootfs.check_target(target, f"/etc/{name}")
                rootfs.bind(os.path.join(cdir, name), target, recursive=False)
            finally:
                os.close(target)
        for host, ctr, ro in cfg.volumes:
            target = (rootfs.mkdir_all(rootfd, ctr) if os.path.isdir(host) else rootfs.make_file(rootfd, ctr))
            try:
                rootfs.check_target(target, f"volume {ctr}")
                # nodev on the whole volume tree: a node made on it opens nothing, whatever the cgroup
                rootfs.bind(host, target, readonly=bool(ro), attrs=linux.MOUNT_ATTR_NODEV,
                            reopen=lambda ctr=ctr: rootfs.resolve(rootfd, ctr))
            finally:
                os.close(target)
    except rootfs.UnsafePath as e:
        raise ContainerError(str(e)) from None
    finally:
        os.close(rootfd)
    if cfg.read_only:
        linux.mount(None, rootfs_path, None,
                    linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NODEV)
    return masker


def apply_masks(masker: rootfs.Masker) -> None:
    """After pivot_root: runc's masked and read-only paths, beneath the /proc and /sys that
    were mounted for this container (checked), never through a symlink."""
    try:
        for path in MASKED_PATHS:
            masker.mask(path)
        for path in READONLY_PATHS:
            masker.readonly(path)
    except rootfs.UnsafePath as e:
        raise ContainerError(str(e)) from None
    finally:
        os.close(masker.null_fd)


def overlay_options(layers: list[str], upper: str, work: str, rootless: bool = False) -> str:
    lower = ":".join(reversed(layers))  # overlay wants the top layer first
    # in a user namespace overlay keeps its metadata in user.overlay.* xattrs (userxattr)
    return f"lowerdir={lower},upperdir={upper},workdir={work}" + (",userxattr" if rootless else "")
