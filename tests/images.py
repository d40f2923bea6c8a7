"""Test images built offline from Debian's ``busybox-static`` and generated data.

Every image is written as an OCI image layout directory (``oci-layout``, ``index.json``,
``blobs/sha256/…``) with gzip layers, so ``skopeo copy oci:DIR:TAG docker://…`` and
``podman pull oci:DIR:TAG`` work on it, and as a :class:`TestImage` whose attributes give tests the
exact bytes and digests of the manifest, the config and every layer. Builds are reproducible (fixed
mtimes, owners and gzip headers): the same ``/bin/busybox`` gives the same digests on every run.

The images (session fixtures in ``tests/fixtures/peers.py``):

``busybox_image`` — :func:`build_busybox_image`, one layer, runnable:
    * ``/bin/busybox`` (static, from the host's ``busybox-static`` package) and a relative symlink
      for every applet it lists (``busybox --list-full``): ``/bin/sh``, ``/bin/echo``, ``/bin/ls``,
      ``/bin/cat``, ``/bin/ps``, ``/bin/hostname``, ``/sbin/ip``, ``/usr/bin/id``, ``/bin/sleep``,
      ``/bin/true``, ``/bin/false``, ``/usr/bin/env``, ``/usr/bin/whoami``, ``/bin/mount``, …
      Symlinks are relative (``usr/bin/env -> ../../bin/busybox``) so they never point outside
      the rootfs, whatever an extractor thinks of absolute links.
    * ``/etc/passwd`` and ``/etc/group``: ``root`` (0:0, home ``/root``), ``user`` (1000:1000, home
      ``/home/user``) and ``nobody`` (65534:65534); ``/etc/hostname`` (``pyreg-test``),
      ``/etc/hosts``, ``/etc/resolv.conf`` (empty), ``/etc/motd`` (:data:`MOTD`).
    * empty directories ``/dev /proc /sys /tmp`` (1777) ``/root`` (0700) ``/home/user`` (owned by
      1000) ``/var/tmp /run /mnt``.
    * config: ``Cmd ["sh"]``, ``Env ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]``, ``WorkingDir "/"``,
      ``architecture`` the host's, ``os linux``, matching ``rootfs.diff_ids`` and ``history``.

``five_layer_image`` — :func:`build_five_layer_image`, five layers, the first being the busybox
layer (the very same blob, so cross-repository mounts and "blob exists" skips can be seen):
    2. ``/data/a.txt`` (``"a\\n"``), ``/data/keep/k.txt`` (``"k\\n"``), ``/etc/five-layer`` (``"5\\n"``)
    3. ``/data/random.bin`` (1 MiB of seeded random bytes)
    4. ``/data/gone.txt``, ``/data/opaque/x``, ``/data/opaque/y``, ``/data/opaque/sub/z``
    5. whiteouts: ``/data/.wh.gone.txt`` and ``/data/.wh.random.bin`` delete those two files;
       ``/data/opaque/.wh..wh..opq``
       hides everything layers 1-4 put in ``/data/opaque``, and the layer adds
       ``/data/opaque/new`` (``"new\\n"``); also ``/data/a.txt`` is replaced with ``"A\\n"``.
    :data:`FIVE_LAYER_EXPECTED` is the resulting ``/data`` tree (path -> content, ``None`` for a
    directory); :data:`FIVE_LAYER_ABSENT` lists paths that must not exist after extraction.

``setuid_image`` — :func:`build_setuid_image`, hostile: the busybox layer plus one layer of what
    a local store must keep from every other user of the host (:data:`SETUID_FILES`):
    ``/usr/local/bin/suid-cat`` (the host's coreutils ``cat``, setuid root, 04755), ``sgid-cat``
    (setgid root, 02755), ``cap-cat`` (0755 with the file capability ``cap_dac_read_search=ep``,
    which reads any file), ``/etc/image-secret`` (0644, :data:`IMAGE_SECRET`) and, unless
    ``devices=False`` (an unprivileged extractor refuses device nodes), ``/dev/hostile-null``
    (a 0666 character device, 1:3).

``big_image`` — :func:`build_big_image`, one busybox layer plus one layer holding a single
    ``/big.bin`` file of :data:`BIG_LAYER_SIZE` (256 MiB) seeded random bytes (stored-gzip so
    building takes seconds, not minutes). Built lazily: only tests that ask for it pay for it.

:func:`build_random_image` makes the same shape with any size (the benchmark uses 512 MiB).

``probe`` — :func:`build_probe_image`: the busybox layer plus a static ``/bin/probe`` that makes
    one attacker's system call per verb (``keyread SERIAL``, ``addkey``, ``userns``, ``vsock``,
    ``open PATH r|w|rw``) and prints ``OK`` or ``ERR <errno>``; the confinement tests run it as root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BUSYBOX = Path(os.environ.get("PYREG_TEST_BUSYBOX", "/bin/busybox"))

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z: every tar entry gets it, so digests are stable
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
MOTD = "pyreg busybox test image\n"
BIG_LAYER_SIZE = 256 * 1024 * 1024
SETUID_BINARY = Path("/usr/bin/cat")  # coreutils: keeps its privileges when setuid (busybox drops them)
CAP_DAC_READ_SEARCH = 2
IMAGE_SECRET = b"layer content that only root may read on the host\n"
# what build_setuid_image's second layer holds that must never reach another local user
SETUID_FILES = ("usr/local/bin/suid-cat", "usr/local/bin/sgid-cat", "usr/local/bin/cap-cat",
                "etc/image-secret", "dev/hostile-null")

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"

FIVE_LAYER_EXPECTED: dict[str, bytes | None] = {
    "data": None,
    "data/a.txt": b"A\n",
    "data/keep": None,
    "data/keep/k.txt": b"k\n",
    "data/opaque": None,
    "data/opaque/new": b"new\n",
    "etc/five-layer": b"5\n",
}
FIVE_LAYER_ABSENT = ("data/gone.txt", "data/random.bin", "data/opaque/x", "data/opaque/y", "data/opaque/sub",
                     "data/.wh.gone.txt", "data/opaque/.wh..wh..opq")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_architecture() -> str:
    """The OCI architecture name of this machine (amd64, arm64, …)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine)


@dataclass(frozen=True)
class Layer:
    """One gzip layer blob stored in a layout's ``blobs/sha256``."""

    digest: str  # of the gzip blob
    diff_id: str  # of the uncompressed tar
    size: int
    path: Path
    media_type: str = OCI_LAYER_GZIP

    def read(self) -> bytes:
        return self.path.read_bytes()

    def descriptor(self, media_type: str | None = None) -> dict[str, object]:
        return {"mediaType": media_type or self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class TestImage:
    """An image in an OCI layout directory, with the bytes and digests tests compare against."""

    __test__ = False  # not a pytest test class

    name: str
    layout: Path
    tag: str
    manifest: bytes
    config: bytes
    layers: tuple[Layer, ...]
    manifest_digest: str = field(init=False)
    config_digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest_digest", sha256_digest(self.manifest))
        object.__setattr__(self, "config_digest", sha256_digest(self.config))

    @property
    def oci_ref(self) -> str:
        """The skopeo/podman source reference: ``oci:DIR:TAG``."""
        return f"oci:{self.layout}:{self.tag}"

    @property
    def manifest_json(self) -> dict[str, object]:
        return json.loads(self.manifest)

    @property
    def config_json(self) -> dict[str, object]:
        return json.loads(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Config and layers: every blob a registry must hold for this image."""
        return [self.config_digest, *self.layer_digests]

    @property
    def total_size(self) -> int:
        return len(self.config) + sum(layer.size for layer in self.layers)

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.layout / "blobs" / algorithm / hexpart

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def docker_manifest(self) -> bytes:
        """The same image as a Docker schema 2 manifest (same config and layer blobs)."""
        doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": self.config_digest, "size": len(self.config)},
            "layers": [layer.descriptor(DOCKER_LAYER_GZIP) for layer in self.layers],
        }
        return canonical_json(doc)


def canonical_json(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()


# --------------------------------------------------------------------------- tar building


class _HashingWriter(io.RawIOBase):
    """A write-through file wrapper that hashes and counts what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        view = memoryview(data)
        self.raw.write(view)
        self.hash.update(view)
        self.count += len(view)
        return len(view)

    def tell(self) -> int:
        return self.count


class _RandomReader(io.RawIOBase):
    """``size`` seeded pseudo-random bytes, produced while read (never all in memory)."""

    def __init__(self, size: int, seed: int) -> None:
        self.left = size
        self.rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        n = min(n, 4 << 20)
        self.left -= n
        return self.rng.randbytes(n)


@dataclass
class Entry:
    """One tar member: a file (data or a stream), directory, symlink or hardlink."""

    path: str
    kind: str = "file"  # file | dir | symlink | link
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    target: str = ""
    stream: BinaryIO | None = None
    size: int = 0
    devmajor: int = 0  # kind "chr": a character device node
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)  # as SCHILY.xattr.* pax records


def _tarinfo(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path.strip("/") + ("/" if entry.kind == "dir" else ""))
    info.mtime = MTIME
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755 if entry.mode is None else entry.mode
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode = 0o777
    elif entry.kind == "link":
        info.type = tarfile.LNKTYPE
        info.linkname = entry.target.strip("/")
        info.mode = 0o644 if entry.mode is None else entry.mode
    elif entry.kind == "chr":
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = entry.devmajor, entry.devminor
        info.mode = 0o666 if entry.mode is None else entry.mode
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644 if entry.mode is None else entry.mode
        info.size = entry.size if entry.stream is not None else len(entry.data)
    if entry.xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                            for k, v in entry.xattrs.items()}
    return info


def write_layer(blobs_dir: Path, entries: Iterable[Entry], compresslevel: int = 6) -> Layer:
    """Write a gzip tar layer into ``blobs_dir`` (streaming) and return its descriptor data."""
    blobs_dir.mkdir(parents=True, exist_ok=True)
    tmp = blobs_dir / f".tmp-layer-{os.getpid()}-{id(entries)}"
    with open(tmp, "wb") as raw:
        blob_hasher = _HashingWriter(raw)
        gz = gzip.GzipFile(filename="", fileobj=blob_hasher, mode="wb", mtime=0, compresslevel=compresslevel)
        tar_hasher = _HashingWriter(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=tar_hasher, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for entry in entries:
                info = _tarinfo(entry)
                if info.type == tarfile.REGTYPE:
                    tar.addfile(info, entry.stream if entry.stream is not None else io.BytesIO(entry.data))
                else:
                    tar.addfile(info)
        gz.close()
    digest = "sha256:" + blob_hasher.hash.hexdigest()
    path = blobs_dir / digest.split(":", 1)[1]
    os.replace(tmp, path)
    return Layer(digest=digest, diff_id="sha256:" + tar_hasher.hash.hexdigest(), size=blob_hasher.count,
                 path=path)


def _put_blob(blobs_dir: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    path = blobs_dir / digest.split(":", 1)[1]
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return digest


def write_image(layout: Path, name: str, layers: list[Layer], *, tag: str = "latest",
                cmd: list[str] | None = None, history: list[str] | None = None,
                labels: dict[str, str] | None = None, architecture: str | None = None) -> TestImage:
    """Write config, manifest, ``index.json`` and ``oci-layout`` around layers already in ``layout``."""
    blobs = layout / "blobs" / "sha256"
    config_doc: dict[str, object] = {
        "created": CREATED,
        "architecture": architecture or host_architecture(),
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            "Cmd": cmd or ["sh"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.title": name, **(labels or {})},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": CREATED, "created_by": (history or [])[i] if history and i < len(history)
             else f"pyreg tests/images.py {name} layer {i + 1}"}
            for i in range(len(layers))
        ],
    }
    config = canonical_json(config_doc)
    config_digest = _put_blob(blobs, config)
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [layer.descriptor() for layer in layers],
        "annotations": {"org.opencontainers.image.title": name},
    }
    manifest = canonical_json(manifest_doc)
    manifest_digest = _put_blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    (layout / "index.json").write_bytes(canonical_json(index))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    return TestImage(name=name, layout=layout, tag=tag, manifest=manifest, config=config,
                     layers=tuple(layers))


# --------------------------------------------------------------------------- the images


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Install paths (``bin/sh``, ``usr/bin/env``, …) of every applet this busybox provides."""
    out = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _relative_target(link_path: str, target: str = "bin/busybox") -> str:
    depth = link_path.count("/")
    return "../" * depth + target if depth else target


def busybox_entries(busybox: Path = BUSYBOX) -> list[Entry]:
    """The entries of the busybox base layer (see the module docstring)."""
    if not busybox.is_file():
        raise FileNotFoundError(f"{busybox} not found: install Debian's busybox-static")
    applets = [a for a in busybox_applets(busybox) if a != "bin/busybox"]
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "var", "run", "mnt",
            "home"}
    dirs.update(os.path.dirname(a) for a in applets if os.path.dirname(a))
    entries = [Entry(d, "dir") for d in sorted(dirs)]
    entries += [
        Entry("tmp", "dir", mode=0o1777),
        Entry("var/tmp", "dir", mode=0o1777),
        Entry("root", "dir", mode=0o700),
        Entry("home/user", "dir", mode=0o755, uid=1000, gid=1000),
        Entry("bin/busybox", data=busybox.read_bytes(), mode=0o755),
        Entry("etc/passwd", data=PASSWD.encode()),
        Entry("etc/group", data=GROUP.encode()),
        Entry("etc/hostname", data=b"pyreg-test\n"),
        Entry("etc/hosts", data=b"127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        Entry("etc/resolv.conf", data=b""),
        Entry("etc/motd", data=MOTD.encode()),
    ]
    entries += [Entry(a, "symlink", target=_relative_target(a)) for a in applets]
    return entries


def _layer_for(layout: Path, entries: list[Entry], compresslevel: int = 6) -> Layer:
    return write_layer(layout / "blobs" / "sha256", entries, compresslevel)


def build_busybox_image(layout: Path, tag: str = "latest") -> TestImage:
    """The one-layer runnable busybox image (see the module docstring)."""
    base = _layer_for(layout, busybox_entries())
    return write_image(layout, "busybox", [base], tag=tag, history=["busybox-static + applet links"])


def build_five_layer_image(layout: Path, tag: str = "latest") -> TestImage:
    """Five layers, the last one with a file whiteout and an opaque directory (see the docstring)."""
    rng = random.Random(5)
    layers = [
        _layer_for(layout, busybox_entries()),
        _layer_for(layout, [
            Entry("data", "dir"), Entry("data/a.txt", data=b"a\n"), Entry("data/keep", "dir"),
            Entry("data/keep/k.txt", data=b"k\n"), Entry("etc", "dir"),
            Entry("etc/five-layer", data=b"5\n"),
        ]),
        _layer_for(layout, [Entry("data", "dir"), Entry("data/random.bin", data=rng.randbytes(1 << 20))]),
        _layer_for(layout, [
            Entry("data", "dir"), Entry("data/gone.txt", data=b"gone\n"), Entry("data/opaque", "dir"),
            Entry("data/opaque/x", data=b"x\n"), Entry("data/opaque/y", data=b"y\n"),
            Entry("data/opaque/sub", "dir"), Entry("data/opaque/sub/z", data=b"z\n"),
        ]),
        _layer_for(layout, [
            Entry("data", "dir"), Entry("data/.wh.gone.txt"), Entry("data/.wh.random.bin"),
            Entry("data/a.txt", data=b"A\n"), Entry("data/opaque", "dir"),
            Entry("data/opaque/.wh..wh..opq"), Entry("data/opaque/new", data=b"new\n"),
        ]),
    ]
    return write_image(layout, "five-layer", layers, tag=tag,
                       history=["busybox", "add a.txt keep/", "add random.bin", "add gone.txt opaque/",
                                "whiteouts: gone.txt random.bin, opaque dir opaque/"])


def file_capability(*caps: int) -> bytes:
    """A ``security.capability`` value (VFS_CAP_REVISION_2): ``caps`` permitted and effective."""
    permitted = sum(1 << c for c in caps)
    return struct.pack("<IIIII", 0x02000000 | 0x1, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


def build_setuid_image(layout: Path, tag: str = "latest", *, devices: bool = True) -> TestImage:
    """The hostile image: busybox plus one layer of :data:`SETUID_FILES` (see the docstring)."""
    if not SETUID_BINARY.is_file():
        raise FileNotFoundError(f"{SETUID_BINARY} not found (coreutils)")
    cat = SETUID_BINARY.read_bytes()
    entries = [  # "./" as many layer tools write it: the layer root is 0755, opened up by the image
        Entry(".", "dir"), Entry("usr", "dir"), Entry("usr/local", "dir"), Entry("usr/local/bin", "dir"),
        Entry("etc", "dir"),
        Entry("usr/local/bin/suid-cat", data=cat, mode=0o4755),
        Entry("usr/local/bin/sgid-cat", data=cat, mode=0o2755),
        Entry("usr/local/bin/cap-cat", data=cat, mode=0o755,
              xattrs={"security.capability": file_capability(CAP_DAC_READ_SEARCH)}),
        Entry("etc/image-secret", data=IMAGE_SECRET),
    ]
    if devices:
        entries += [Entry("dev", "dir"), Entry("dev/hostile-null", "chr", devmajor=1, devminor=3)]
    layers = [_layer_for(layout, busybox_entries()), _layer_for(layout, entries)]
    return write_image(layout, "setuid", layers, tag=tag,
                       history=["busybox", "setuid, setgid, file-capability copies of cat; a device node"])


def build_random_image(layout: Path, size: int, *, tag: str = "latest", seed: int = 256,
                       name: str = "big", with_busybox: bool = True) -> TestImage:
    """An image whose last layer holds one ``/big.bin`` of ``size`` seeded random bytes.

    The layer is gzip at level 0 (stored blocks): random data does not compress anyway, and this
    keeps building a 512 MiB layer to a few seconds of hashing.
    """
    layers = [_layer_for(layout, busybox_entries())] if with_busybox else []
    stream = _RandomReader(size, seed)
    layers.append(_layer_for(layout, [Entry("big.bin", stream=stream, size=size)], compresslevel=0))
    return write_image(layout, name, layers, tag=tag)


def build_big_image(layout: Path, tag: str = "latest") -> TestImage:
    """The ≥ 256 MiB image: busybox plus a 256 MiB random layer."""
    return build_random_image(layout, BIG_LAYER_SIZE, tag=tag)


# A static probe for the confinement tests: each verb makes one system call the way an attacker's
# binary would and prints "OK" or "ERR <errno>", so a test reads what the kernel said.
PROBE_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int report(long r) {
    if (r < 0) { printf("ERR %d\n", errno); return 1; }
    printf("OK\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *verb = argv[1];
    if (!strcmp(verb, "keyread") && argc == 3) {          /* keyctl(KEYCTL_READ, serial) */
        char buf[256];
        long r = syscall(SYS_keyctl, 11, atol(argv[2]), buf, sizeof buf - 1);
        if (r >= 0) { buf[r < 255 ? r : 255] = 0; printf("OK %s\n", buf); return 0; }
        return report(r);
    }
    if (!strcmp(verb, "addkey"))                           /* add_key to the session keyring */
        return report(syscall(SYS_add_key, "user", "pyreg-probe", "x", 1, -3));
    if (!strcmp(verb, "userns")) return report(unshare(CLONE_NEWUSER));
    if (!strcmp(verb, "vsock")) return report(socket(40, SOCK_STREAM, 0));
    if (!strcmp(verb, "open") && argc == 4) {             /* open and close: no byte moves */
        int flags = !strcmp(argv[3], "rw") ? O_RDWR : !strcmp(argv[3], "w") ? O_WRONLY : O_RDONLY;
        int fd = open(argv[2], flags | O_NONBLOCK | O_NOCTTY);
        if (fd >= 0) close(fd);
        return report(fd);
    }
    return 2;
}
"""


def build_probe_image(layout: Path, tag: str = "latest", cc: str = "gcc") -> TestImage:
    """The busybox image plus ``/bin/probe``, compiled statically from :data:`PROBE_C` with the
    host's C compiler (Debian's gcc + libc6-dev): the hostile image of the confinement tests.
    Raises FileNotFoundError when there is no compiler."""
    import tempfile

    if not shutil.which(cc):
        raise FileNotFoundError(f"{cc} not found: install Debian's gcc and libc6-dev")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(PROBE_C)
        out = Path(tmp) / "probe"
        subprocess.run([cc, "-static", "-O1", "-o", str(out), str(src)], check=True, capture_output=True)
        probe = out.read_bytes()
    layers = [_layer_for(layout, busybox_entries()),
              _layer_for(layout, [Entry("bin", "dir"), Entry("bin/probe", data=probe, mode=0o755)])]
    return write_image(layout, "probe", layers, tag=tag, history=["busybox", "static probe"])
# --------------------------------------------------------------------------- hostile images

# Runtime containment (issue 10): the busybox image with entries replaced, each an attack that a
# runtime must refuse or contain. name -> {path: the replacing entry, or None to drop it}.
HOSTILE_IMAGES: dict[str, dict[str, Entry | None]] = {
    # a procfs mounted through the link would miss every mask: core_pattern writable = host root
    "proc-symlink": {"proc": Entry("proc", "symlink", target="/newproc"), "newproc": Entry("newproc", "dir")},
    "sys-symlink": {"sys": Entry("sys", "symlink", target="/newsys"), "newsys": Entry("newsys", "dir")},
    "dev-symlink": {"dev": Entry("dev", "symlink", target="/newdev"), "newdev": Entry("newdev", "dir")},
    # the runtime's /etc/hosts bind mount would land on a kernel knob
    "hosts-to-procfs": {"etc/hosts": Entry("etc/hosts", "symlink", target="/proc/sys/kernel/core_pattern")},
    # ``-u`` reads an endless file
    "passwd-dev-zero": {"etc/passwd": Entry("etc/passwd", "symlink", target="/dev/zero")},
    # a -v destination through a symlink into procfs
    "volume-link-to-procfs": {"data": Entry("data", "symlink", target="/proc/sys/kernel")},
}


def build_hostile_image(layout: Path, kind: str, tag: str = "latest") -> TestImage:
    """One-layer busybox image with the :data:`HOSTILE_IMAGES` ``kind`` changes applied."""
    replace = HOSTILE_IMAGES[kind]
    entries = [e for e in busybox_entries() if e.path not in replace]
    entries += [e for e in replace.values() if e is not None]
    return write_image(layout, f"hostile-{kind}", [_layer_for(layout, entries)], tag=tag,
                       history=[f"busybox-static, hostile: {kind}"])


def build_loader_image(layout: Path, binary: str, tag: str = "latest") -> TestImage:
    """busybox plus the ELF interpreter and shared libraries of the host program ``binary`` (from
    ``ldd``), at their host paths: in it the host's program would really run if a runtime let the
    container exec it through ``/proc/self/exe`` (CVE-2019-5736). Also ``/usr/bin/evil ->
    /proc/self/exe`` and a script ``/usr/bin/evil.sh`` whose ``#!`` is ``/proc/self/exe``."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    libs = sorted({m for m in re.findall(r"(/\S+) \(0x", out)})
    entries = busybox_entries()
    have = {e.path for e in entries}
    for lib in libs:
        parts = lib.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in have:
                have.add(d)
                entries.append(Entry(d, "dir"))
        entries.append(Entry(lib.strip("/"), data=Path(lib).read_bytes(), mode=0o755))
    entries += [
        Entry("usr/bin/evil", "symlink", target="/proc/self/exe"),
        Entry("usr/bin/evil.sh", data=b"#!/proc/self/exe\nprint('HOST PYTHON RAN')\n", mode=0o755),
    ]
    return write_image(layout, "loader", [_layer_for(layout, entries, compresslevel=1)], tag=tag,
                       history=[f"busybox-static + the libraries of {binary}"])


@dataclass(frozen=True)
class TestIndex:
    """A multi-platform OCI image index in a layout, its children being ordinary images."""

    __test__ = False

    layout: Path
    tag: str
    index: bytes
    children: tuple[TestImage, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.index)

    @property
    def oci_ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def build_index_image(layout: Path, tag: str = "multi") -> TestIndex:
    """An OCI image index with two children: the busybox image for this host's architecture, and a
    one-file image (``/etc/arch``) for linux/arm64 (amd64 on an arm64 host). Index ``platform``
    fields match the children's configs; ``skopeo copy --all`` moves all of it."""
    other = "arm64" if host_architecture() != "arm64" else "amd64"
    native = write_image(layout, "busybox", [_layer_for(layout, busybox_entries())])
    foreign_layer = _layer_for(layout, [Entry("etc", "dir"), Entry("etc/arch", data=f"{other}\n".encode())])
    foreign = write_image(layout, "foreign", [foreign_layer], architecture=other, cmd=["true"])
    blobs = layout / "blobs" / "sha256"
    index_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
             "platform": {"architecture": arch, "os": "linux"}}
            for img, arch in ((native, host_architecture()), (foreign, other))
        ],
    }
    index = canonical_json(index_doc)
    digest = _put_blob(blobs, index)
    (layout / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": digest, "size": len(index),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    return TestIndex(layout=layout, tag=tag, index=index, children=(native, foreign))


# --------------------------------------------------------------------------- reading back


def read_layout(layout: Path, tag: str = "latest") -> TestImage:
    """Load an image (gzip layers) from an OCI layout, e.g. one that ``skopeo copy`` wrote."""
    index = json.loads((layout / "index.json").read_bytes())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            break
    else:
        raise KeyError(f"no tag {tag!r} in {layout}/index.json")
    blobs = layout / "blobs"
    manifest = (blobs / desc["digest"].replace(":", "/")).read_bytes()
    doc = json.loads(manifest)
    config = (blobs / doc["config"]["digest"].replace(":", "/")).read_bytes()
    diff_ids = json.loads(config).get("rootfs", {}).get("diff_ids", [])
    layers = tuple(
        Layer(digest=d["digest"], diff_id=diff_ids[i] if i < len(diff_ids) else "", size=d["size"],
              path=blobs / d["digest"].replace(":", "/"), media_type=d["mediaType"])
        for i, d in enumerate(doc.get("layers", []))
    )
    return TestImage(name=layout.name, layout=layout, tag=tag, manifest=manifest, config=config,
                     layers=layers)


def layer_members(layer: Layer) -> Iterator[tarfile.TarInfo]:
    """The tar members of a gzip layer, in order (for tests that look inside)."""
    with tarfile.open(layer.path, mode="r:gz") as tar:
        yield from tar


def copy_layout(src: Path, dest: Path) -> Path:
    """A private copy of a layout that a test may add to (blobs are hardlinked: never edit them in place)."""

    def link_blobs(s: str, d: str) -> object:
        return os.link(s, d) if os.sep + "blobs" + os.sep in s else shutil.copy2(s, d)

    shutil.copytree(src, dest, copy_function=link_blobs)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.images busybox|five-layer|index|big|setuid DIR``: write a test image layout."""
    import argparse

    builders = {"busybox": build_busybox_image, "five-layer": build_five_layer_image,
                "probe": build_probe_image,
                "index": build_index_image, "big": build_big_image, "setuid": build_setuid_image}
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=main.__doc__)
    parser.add_argument("image", choices=sorted(builders))
    parser.add_argument("dir", type=Path, help="OCI layout directory to create")
    args = parser.parse_args(argv)
    built = builders[args.image](args.dir)
    print(f"{built.oci_ref}  {built.digest if isinstance(built, TestIndex) else built.manifest_digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
