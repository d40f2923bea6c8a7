"""Image transports as content stores: every format an image can live in, read and written
through storage/content.py's ``ContentStore``, so one ``copy_graph`` moves images between any two.

An image *source* is a store plus the roots it holds (with the names each root carries); a
*target* is a store plus what must be recorded once a root's graph is in it (an ``index.json``
entry, a ``manifest.json`` item, a ``manifest.json`` file). Modules, one per format:

* ``tarfiles``      — tar members read in place by name (no extraction) and tar streams written
                      without seeking; the rules for member names (no ``..``, no absolute paths).
* ``ociarchive``    — ``oci-archive:``: a tar of an OCI image layout.
* ``dockerarchive`` — ``docker-archive:``: ``docker save``'s ``manifest.json`` format, read as a
                      Docker schema 2 graph (layers by diff ID) and written as docker 25+ writes it
                      (``manifest.json`` + ``repositories`` + an OCI layout, in one tar).
* ``dirstore``      — ``dir:``: skopeo's directory format.
* ``layout``        — ``oci:``: an OCI layout directory, named entries as skopeo reads and writes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pyreg.storage import graph
from pyreg.storage.content import ContentNotFound, ContentStore, Progress, copy_graph, fetch_manifest
from pyreg.storage.manifest import Descriptor, Manifest, parse_manifest


class ArchiveError(ValueError):
    """A source or target is not what its transport says: a damaged or hostile archive, a
    directory that is no layout (one line, fit for the user)."""


@dataclass
class Image:
    """A root (a manifest or an index) in a store, with the names it carries there (full
    references such as ``registry/repo:tag``; none for an unnamed image)."""

    descriptor: Descriptor
    names: list[str] = field(default_factory=list)


class Target(Protocol):
    """Where images are copied to: blobs go into ``store``; ``add`` records a root once its whole
    graph is in ``store``; ``close`` finishes (writes indexes, renames into place); ``abort``
    leaves nothing behind that looks complete."""

    @property
    def store(self) -> ContentStore: ...

    def add(self, image: Image, source: ContentStore) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def manifest_of(store: ContentStore, desc: Descriptor) -> Manifest:
    """A manifest or index of ``store`` (a registry's too), read whole, verified and parsed."""
    data = fetch_manifest(store, desc)
    if data is None:
        raise ContentNotFound(desc.digest)
    return parse_manifest(data, desc.media_type)


def has_manifest(store: ContentStore, desc: Descriptor) -> bool:
    return fetch_manifest(store, desc) is not None


def select(store: ContentStore, image: Image, platform: graph.Platform | None) -> Image:
    """``image`` itself, or with ``platform`` and an index root, its child for that platform."""
    if platform is None or not graph.is_manifest(image.descriptor):
        return image
    manifest = manifest_of(store, image.descriptor)
    if not manifest.is_index:
        return image
    return Image(graph.select_platform(manifest, platform), image.names)


def copy_images(source: ContentStore, images: Iterable[Image], target: Target,
                platform: graph.Platform | None = None, *, parallel: int = 1,
                progress: Progress | None = None) -> list[Image]:
    """Copy each image's graph (children before parents, what the target lacks) and record it;
    the target is closed on success and aborted on any failure. ``parallel`` > 1 only where both
    stores take concurrent calls (a tar, read or written, does not)."""
    done = []
    try:
        for image in images:
            chosen = select(source, image, platform)
            copy_graph(source, target.store, chosen.descriptor, parallel=parallel, progress=progress)
            target.add(chosen, source)
            done.append(chosen)
        target.close()
    except BaseException:
        target.abort()
        raise
    return done
