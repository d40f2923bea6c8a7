"""pyreg save / load: the local store to and from image archives, through storage/transports/.

``load`` reads an OCI archive, a ``docker save`` / ``podman save`` tarball, or docker 25+'s
tarball that is both (its OCI layout is preferred: it keeps the images' own manifests), from a
file or a stream (stdin is spooled to a temp file: tar members are read in place, by offset).
Every blob is verified on the way in and names are tagged only when every image of the archive is
complete, so a bad archive loads nothing. ``save`` writes docker-archive (the default, which also
carries an OCI layout) or oci-archive, to a file (written aside, renamed when complete) or a stream.
"""

from __future__ import annotations

import lzma
import tarfile
import zlib
from pathlib import Path
from typing import IO

from pyreg.client.transports import LocalTarget, Spec, archive_source, normalize, open_tar, open_target
from pyreg.storage.localstore import ImageRecord, LocalStore
from pyreg.storage.manifest import Descriptor
from pyreg.storage.reference import ReferenceError, parse
from pyreg.storage.transports import ArchiveError, Image, copy_images

FORMATS = ("docker-archive", "oci-archive")

__all__ = ["FORMATS", "ArchiveError", "load", "save"]


def _local_names(names: list[str]) -> list[str]:
    """Archive names as local names: full references; ones that are not references are dropped."""
    out = []
    for name in names:
        try:
            out.append(str(parse(normalize(name))))
        except (ReferenceError, ValueError):
            continue
    return list(dict.fromkeys(out))


def load(path: Path | None, store: LocalStore, tag: str | None = None,
         stream: IO[bytes] | None = None) -> list[ImageRecord]:
    """Import every image of an archive (``path``, or ``stream`` such as stdin); returns the records
    tagged, one per name (an unnamed image is recorded under its digest)."""
    where = str(path) if path is not None else "stdin"
    if path is not None and path.is_dir():
        raise ArchiveError(f"{path}: a directory, not an image archive (for an OCI layout use "
                           f"pyreg copy oci:{path} ...)")
    try:
        tar = open_tar(path, stream)
    except OSError as exc:
        raise ArchiveError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        source, images = archive_source(tar)
        if not images:
            raise ArchiveError(f"{where}: the archive holds no image")
        roots = list(dict.fromkeys(i.descriptor.digest for i in images))
        if tag is not None and len(roots) > 1:
            names = ", ".join(n for i in images for n in i.names) or "unnamed"
            raise ArchiveError(f"--tag is ambiguous: {where} holds {len(roots)} images ({names}); "
                               "load without --tag, then pyreg tag the one you mean")
        wanted = [Image(i.descriptor, [tag] if tag else _local_names(i.names)) for i in images]
        target = LocalTarget(store)
        copy_images(source, wanted, target)
        return target.records
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(f"{where}: damaged archive ({' '.join(str(exc).split()) or type(exc).__name__})"
                           ) from None
    finally:
        tar.close()


def save(records: list[ImageRecord], store: LocalStore, out: Path | None,
         fmt: str = "docker-archive", stream: IO[bytes] | None = None) -> int:
    """Write ``records`` (each under its full name) to an archive; returns the number of blobs."""
    if fmt not in FORMATS:
        raise ArchiveError(f"unknown archive format {fmt!r} (use {' or '.join(FORMATS)})")
    images: dict[str, Image] = {}
    for r in records:
        desc = Descriptor(r.media_type, r.digest, r.size, platform=r.platform)
        image = images.setdefault(str(r.digest), Image(desc, []))
        if r.name not in image.names and not r.name.startswith("sha256:"):
            image.names.append(r.name)
    target = open_target(Spec(fmt, out), out=stream)
    copy_images(store, list(images.values()), target)
    return sum(1 for _ in target.store.walk())
