"""Transport strings (skopeo's and crane's) -> image sources and targets (storage/transports/).

    docker://HOST/REPO[:TAG|@DIGEST]    a registry (a bare reference means the same)
    oci:DIR[:NAME]                      an OCI layout directory, NAME its ref.name entry
    oci-archive:FILE[:NAME]             a tar of an OCI layout
    docker-archive:FILE[:NAME:TAG|:@N]  docker save's format (N: the Nth image of manifest.json)
    dir:DIR                             skopeo's directory format
    a path                              an OCI layout directory (DIR[:NAME]) or an archive file

As in skopeo, the path ends at the first ``:`` after the transport. A registry is read as a
``RemoteStore`` (storage/remote/) like any other store, and written with client/transfer.py's
push (skip, mount from the repositories a blob was seen in, parallel uploads).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pyreg.storage import graph
from pyreg.storage import mediatypes as mt
from pyreg.storage.content import ContentStore, copy_graph
from pyreg.storage.localstore import ImageRecord, LocalStore
from pyreg.storage.reference import Reference, ReferenceError, parse
from pyreg.storage.transports import ArchiveError, Image, Target, copy_images, manifest_of, select
from pyreg.storage.transports.dirstore import DirSource, DirTarget
from pyreg.storage.transports.dockerarchive import DockerArchiveSource, DockerArchiveTarget
from pyreg.storage.transports.layout import LayoutSource, LayoutTarget, is_layout
from pyreg.storage.transports.ociarchive import ArchiveTarget, OciArchiveSource, Output
from pyreg.storage.transports.tarfiles import TarIndex

TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "dir")


@dataclass(frozen=True)
class Spec:
    """A parsed transport string. ``name``: the image's name inside a layout or archive."""

    transport: str
    path: Path | None = None
    name: str | None = None
    ref: Reference | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text


def looks_like_path(text: str) -> bool:
    """A string meant as a file or directory, never a reference (``./x``, ``/x``, ``x.tar``)."""
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or \
        text.endswith((".tar", ".tar.gz", ".tgz"))


def parse_spec(text: str) -> Spec:
    """A transport string; a bare path is an OCI layout or an archive, anything else a reference."""
    transport, sep, rest = text.partition(":")
    if text.startswith("docker://"):
        return Spec("docker", ref=parse(text.removeprefix("docker://")), text=text)
    if sep and transport in TRANSPORTS:
        path, _, name = rest.partition(":")
        if not path:
            raise ArchiveError(f"{text}: {transport}: needs a path")
        if transport == "dir" and name:
            raise ArchiveError(f"{text}: dir: takes no image name")
        return Spec(transport, Path(path).expanduser(), name or None, text=text)
    if looks_like_path(text) or Path(text).exists():
        return _bare_path(text)
    try:
        return Spec("docker", ref=parse(text), text=text)
    except ReferenceError as exc:
        raise ReferenceError(f"{text}: neither a transport (docker://, oci:, oci-archive:, "
                             f"docker-archive:, dir:) nor a valid reference ({exc})") from None


def _bare_path(text: str) -> Spec:
    path = Path(text).expanduser()
    if path.is_dir():
        if is_layout(path):
            return Spec("oci", path, text=text)
        if (path / "manifest.json").is_file() and (path / "version").is_file():
            return Spec("dir", path, text=text)
        raise ArchiveError(f"{text}: a directory, but not an OCI image layout (no oci-layout and "
                             "index.json) nor a dir: image")
    if path.is_file():
        return Spec("archive", path, text=text)
    head, sep, name = text.rpartition(":")
    if sep and head and is_layout(Path(head).expanduser()):
        return Spec("oci", Path(head).expanduser(), name, text=text)
    if sep and head and Path(head).expanduser().is_file():
        return Spec("archive", Path(head).expanduser(), name, text=text)
    raise ArchiveError(f"{text}: no such file or directory (expected an OCI layout directory "
                         "or an image archive)")


# --------------------------------------------------------------------------- sources

@dataclass
class Opened:
    """An open source: its store and the images chosen from it."""

    store: ContentStore
    images: list[Image]
    registry: tuple[str, str] | None = None  # (registry, repository) a registry source came from


def normalize(name: str) -> str:
    """A name from an archive as a full reference (``busybox:1`` -> ``<default>/library/busybox:1``);
    unchanged when it is not a reference at all (a bare tag in an oci: layout)."""
    try:
        return str(parse(name))
    except (ReferenceError, ValueError):
        return name


def _choose(images: list[Image], name: str | None, where: str) -> list[Image]:
    """The image named ``name`` (verbatim, else as a reference), or the only one."""
    if name is None:
        if len(images) != 1:
            names = ", ".join(n for i in images for n in i.names) or f"{len(images)} unnamed"
            raise ArchiveError(f"{where} holds {len(images)} images ({names}): name one as {where}:NAME")
        return images
    if name.startswith("@") and name[1:].isdigit():
        index = int(name[1:])
        if index >= len(images):
            raise ArchiveError(f"{where} has no image @{index} (it holds {len(images)})")
        return [images[index]]
    hits = [i for i in images if name in i.names]
    if not hits:
        wanted = normalize(name)
        hits = [i for i in images if wanted in (normalize(n) for n in i.names)]
    if not hits:
        known = ", ".join(n for i in images for n in i.names) or "no names"
        raise ArchiveError(f"no image named {name!r} in {where} (it has: {known})")
    return [Image(hits[0].descriptor, [name])]


def open_tar(path: Path | None, stream: IO[bytes] | None = None) -> TarIndex:
    """A tar file (or a non-seekable stream, spooled to a temp file first) indexed by name."""
    if stream is not None:
        spool = tempfile.TemporaryFile(prefix="pyreg-load-")  # noqa: SIM115 - closed with the index
        import shutil

        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        try:
            return TarIndex(spool, "stdin", owned=True)
        except BaseException:
            spool.close()
            raise
    assert path is not None
    f = open(path, "rb")  # noqa: SIM115 - closed with the index
    try:
        return TarIndex(f, str(path), owned=True)
    except BaseException:
        f.close()
        raise


def archive_source(tar: TarIndex, kind: str = "archive") -> tuple[ContentStore, list[Image]]:
    """An archive's store and images. ``archive``: either kind, the OCI layout preferred (it keeps
    the images' own manifests) with names completed from ``manifest.json`` (docker 25+ writes both)."""
    if kind == "docker-archive":
        docker = DockerArchiveSource(tar)
        return docker, docker.images()
    has_index, has_manifest = "index.json" in tar, "manifest.json" in tar
    if kind == "oci-archive" or (has_index and "oci-layout" in tar):
        oci = OciArchiveSource(tar)
        images = oci.images()
        if has_manifest and kind == "archive" and any(not i.names for i in images):
            _names_from_manifest_json(tar, oci, images)
        return oci, images
    if has_manifest:
        docker = DockerArchiveSource(tar)
        return docker, docker.images()
    raise ArchiveError(f"{tar.where}: neither an OCI archive (index.json) nor a docker archive "
                       "(manifest.json)")


def _names_from_manifest_json(tar: TarIndex, oci: OciArchiveSource, images: list[Image]) -> None:
    import json

    try:
        items = json.loads(tar.read("manifest.json"))
        by_config = {str(i["Config"]).rpartition("/")[2]: list(i.get("RepoTags") or []) for i in items}
    except (ValueError, TypeError, KeyError, AttributeError):
        return
    for image in images:
        if image.names or image.descriptor.media_type not in mt.IMAGE_MANIFESTS:
            continue
        config = manifest_of(oci, image.descriptor).config
        if config is not None:
            image.names = by_config.get(config.digest.hex, [])


@contextlib.contextmanager
def open_source(spec: Spec, *, insecure: bool = False, parallel: int = 4) -> Iterator[Opened]:
    """The images ``spec`` names, in a store ``copy_graph`` reads."""
    if spec.transport == "docker":
        assert spec.ref is not None
        from pyreg.client.remote import connect
        from pyreg.storage.remote.store import RemoteStore

        ref = spec.ref
        with connect(ref.registry, insecure=insecure, pool=parallel) as rc:
            remote = RemoteStore(rc, ref.repository)
            root = remote.resolve(ref.reference, verify=ref.digest)
            yield Opened(remote, [Image(root, [str(ref)] if ref.tag else [])], (ref.registry, ref.repository))
        return
    assert spec.path is not None
    if spec.transport == "oci":
        layout = LayoutSource(spec.path)
        yield Opened(layout.store, _choose(layout.images(), spec.name, str(spec.path)))
        return
    if spec.transport == "dir":
        d = DirSource(spec.path)
        yield Opened(d.store, d.images())
        return
    if not spec.path.is_file():
        raise ArchiveError(f"{spec.path}: no such file (an {spec.transport} is a tar file)")
    tar = open_tar(spec.path)
    try:
        store, images = archive_source(tar, spec.transport)
        yield Opened(store, _choose(images, spec.name, str(spec.path)))
    finally:
        tar.close()


# --------------------------------------------------------------------------- registry

def fetch(ref: Reference, store: LocalStore, *, insecure: bool = False, all_platforms: bool = True,
          progress: Any = None) -> Image:
    """Copy ``ref``'s graph from its registry into ``store`` (verified, not named there). Without
    ``all_platforms`` an index gives this host's child."""
    opened: Opened
    with open_source(Spec("docker", ref=ref, text=str(ref)), insecure=insecure) as opened, store.writing():
        (image,) = opened.images
        chosen = image if all_platforms else select(opened.store, image, graph.Platform.host())
        copied = copy_graph(opened.store, store, chosen.descriptor, parallel=4, progress=progress,
                            verb="pulled")
    from pyreg.client import origins

    # where these blobs came from: a later push to that registry mounts them instead of uploading
    origins.record(store.root, [c.descriptor for c in copied if c.status != "absent"], ref.registry,
                   ref.repository)
    return chosen


def push_source(store: ContentStore, image: Image, mount_from: tuple[str, str] | None = None) -> Any:
    """client/transfer.py's push Source for an image in any store (the local store's blob
    origins give push its mounts)."""
    from pyreg.client.transfer import Source

    local_root = store.root if isinstance(store, LocalStore) else None
    return Source(image.descriptor, store, mount_from, image.names[0] if image.names else "", local_root)


# --------------------------------------------------------------------------- targets

class LocalTarget:
    """The local store as a target: blobs verified into it, names tagged only once every image's
    graph is in (a failed load names nothing; what it wrote is swept by ``pyreg prune``)."""

    def __init__(self, store: LocalStore) -> None:
        self._store = store
        self.added: list[Image] = []
        self.records: list[ImageRecord] = []
        self._lock = store.writing()
        self._lock.__enter__()

    @property
    def store(self) -> ContentStore:
        return self._store

    def add(self, image: Image, source: ContentStore) -> None:
        self.added.append(image)

    def close(self) -> None:
        try:
            for image in self.added:
                d = image.descriptor
                for name in image.names or [str(d.digest)]:
                    self.records.append(self._store.tag(name, d.digest, d.media_type, d.size, d.platform))
        finally:
            self._lock.__exit__(None, None, None)

    def abort(self) -> None:
        self._lock.__exit__(None, None, None)


def open_target(spec: Spec, out: IO[bytes] | None = None) -> Target:
    """A file or directory target; ``out``: write an archive to this stream instead."""
    assert spec.path is not None or out is not None
    if spec.transport in ("oci-archive", "docker-archive"):
        output = Output(stream=out) if out is not None else Output(path=spec.path)
        return DockerArchiveTarget(output) if spec.transport == "docker-archive" else ArchiveTarget(output)
    assert spec.path is not None
    if spec.transport == "oci":
        return LayoutTarget(spec.path)
    if spec.transport == "dir":
        return DirTarget(spec.path)
    raise ArchiveError(f"{spec}: cannot write to this (a bare archive path is ambiguous: say "
                         "oci-archive:FILE or docker-archive:FILE)")


def target_names(spec: Spec, image: Image) -> list[str]:
    """The names an image gets in the target: the one in the spec, else (archives) the source's."""
    if spec.transport == "docker-archive":
        if spec.name:
            return [normalize(spec.name)]
        return [normalize(n) for n in image.names if ":" in n or "/" in n]
    if spec.transport in ("oci", "oci-archive"):
        return [spec.name] if spec.name else []
    return []


# --------------------------------------------------------------------------- copy

@dataclass
class CopyResult:
    reference: str
    digest: str
    media_type: str
    blobs: list[Any]

    def as_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "mediaType": self.media_type,
                "blobs": [b if isinstance(b, dict) else b.__dict__ for b in self.blobs]}


def copy(src: Spec, dst: Spec, *, platform: graph.Platform | None = None, insecure: bool = False,
         parallel: int = 4, progress: Any = None) -> CopyResult:
    """Any transport to any transport."""
    from pyreg.client import transfer

    if src.transport == "docker" and dst.transport == "docker":
        assert src.ref is not None and dst.ref is not None
        r = transfer.copy(src.ref, dst.ref, all_platforms=platform is None, platform=platform,
                          parallel=parallel, insecure=insecure, progress=progress)
        return CopyResult(r.reference, r.digest, r.media_type, r.blobs)
    if dst.transport == "archive":
        raise ArchiveError(f"{dst}: say oci-archive:{dst.path} or docker-archive:{dst.path} "
                           "to write an archive")
    with open_source(src, insecure=insecure, parallel=parallel) as opened:
        (image,) = opened.images
        if dst.transport == "docker":
            assert dst.ref is not None
            chosen = select(opened.store, image, platform)
            mount = opened.registry if opened.registry and opened.registry[0] == dst.ref.registry else None
            r = transfer.push(push_source(opened.store, chosen, mount), dst.ref, parallel=parallel,
                              insecure=insecure, progress=progress)
            return CopyResult(r.reference, r.digest, r.media_type, r.blobs)
        target = open_target(dst)
        # threads only between a registry and a directory: a tar is read and written in order
        threads = parallel if src.transport == "docker" and dst.transport in ("oci", "dir") else 1
        (done,) = copy_images(opened.store, [Image(image.descriptor, target_names(dst, image))], target,
                              platform=platform, parallel=threads,
                              progress=progress if src.transport == "docker" else None)
        return CopyResult(str(dst), str(done.descriptor.digest), done.descriptor.media_type, [])
