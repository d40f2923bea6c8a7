"""The client-side local image store: an OCI image layout plus extracted layers keyed by chain ID.

``LocalStore`` is a facade over three stores split by concern, as containerd splits them: the
content store (storage/blobstore.py: blobs by digest), the image index (storage/imageindex.py:
names -> descriptors in ``index.json``) and the layer store (storage/layerstore.py: a
snapshotter, extracted layers by chain ID). It keeps what spans them: the layout's creation and
permissions, the ``gc.lock`` that keeps prune from sweeping a pull in flight, ``resolve`` (the
runtime's entry point) and prune (mark from the index through the graph, sweep blobs and layers).

Layout under the store root (``LocalStore.default_root()``)::

    oci-layout                      {"imageLayoutVersion": "1.0.0"}
    index.json                      one descriptor per local image name, annotated with
                                    org.opencontainers.image.ref.name = "registry/repo:tag"
    blobs/sha256/<hex>              manifests, configs and layer blobs (verified before visible)
    layers/sha256/<chainhex>/diff   a layer extracted by the runtime's safe extractor (overlay
                                    whiteouts), shared by every image that has that chain ID
    layers/sha256/<chainhex>/meta.json
    ingest/                         partial downloads, keyed by digest so a re-run resumes them
    locks/                          per-blob and per-layer flock files

So ``skopeo copy oci:<root>:registry/repo:tag …`` (and umoci) read it as they read any layout.

Safety: blobs are written into ``ingest/`` and renamed into ``blobs/`` only after their size and
digest are verified; layers are extracted aside, their diff ID checked against the config, then
renamed into place; ``index.json`` is replaced atomically and only after everything an image
needs is in place. So an interrupted pull leaves nothing half-visible. One writer per blob and
per layer (flock; a second writer waits and then finds the work done). Writers hold a shared
``gc.lock`` for the length of an operation; ``rmi``/``prune`` take it exclusively, so a sweep
never deletes what a concurrent pull has written but not yet tagged.

Permissions (issue 10: an image must never reach the host). Layers are extracted as the image
says — setuid and setgid bits, file capabilities, device nodes — because a container needs its
``su``; so they are kept only where no other user can reach them. Each defence is proved with a
canary in ``tests/test_store_permissions.py`` (a setuid / capability ``cat`` run as ``nobody``):

==================================  ==================================  ====================================
defence                             attack it stops                     docker / containerd
==================================  ==================================  ====================================
store root 0700 (/var/lib/pyreg     nobody runs a pulled image's        docker: /var/lib/docker 0710
and the per-user XDG store alike),  setuid cat from diff/ on            root:root; containerd: root 0711,
blobs included: private images      /etc/shadow, or reads a private     blobs readable by digest, snapshots
stay private                        image's layers                      0700
every store dir 0700: each         the same once an admin opens the    docker: overlay2 layer dirs 0710;
chain-ID dir and the extraction     root up, and in the moment between  containerd: snapshot dirs 0700
staging dir (layers/.ingest) too    extraction and rename
explicit modes: dirs 0700, files    a caller's umask 0 making 0777      dockerd forces umask 0022;
<= 0644, ingest and locks 0600,     dirs (others plant a layer, or a    containerd's ingest dir is 0777 &
O_EXCL|O_NOFOLLOW                   symlink to /)                       umask
an older 0755 store tightened on    the exposure surviving an upgrade   docker chmods its root on every
open (its own dirs, never the                                           start
image's modes)
a store owned by another user, or   swapping a layer dir for a symlink  neither checks (docker checks
below a dir another user owns or    to / under root's feet; squatting   parents' x bit for userns remapping
anyone may write without sticky     the path first                      only)
bit: refused
pyreg save: random                  a symlink planted at a predictable  docker save -o: a 0600 temp file,
O_EXCL|O_NOFOLLOW temp file,        temp name makes root overwrite a    renamed
archive 0600                        file
==================================  ==================================  ====================================

The run root (``runtime.state.ensure_run_root``) follows the same rules, with ``state.json`` and
the resolution cache 0600 (docker: ``/run/docker`` 0700, ``config.v2.json`` 0600; containerd:
``/run/containerd`` 0711). Not revocable: a process that opened a directory of a store while it
was still 0755 keeps that handle; remove and pull the image again to be sure.

This module must not import ``runtime``: callers pass the extractor, a callable
``extract(blob_path, dest_dir, media_type)`` whose result may carry ``.diff_id`` (the runtime's
``runtime.extract.extract_layer`` does) — it is then verified against the image config.

The runtime's entry point is :meth:`LocalStore.resolve`::

    image = LocalStore().resolve("busybox", extractor=extract_layer)
    image.manifest, image.config          # parsed JSON
    image.layer_dirs                      # extracted dirs, base layer FIRST (overlay lowerdir
                                          # wants them reversed: top first)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from pyreg.storage import graph, mediatypes
from pyreg.storage.blobstore import BlobStore, BlobWriter, SizeMismatchError
from pyreg.storage.clientconfig import store_root
from pyreg.storage.content import Info
from pyreg.storage.digest import Digest
from pyreg.storage.frozen import Frozen
from pyreg.storage.imageindex import ImageIndex, ImageNotFoundError, ImageRecord, Match
from pyreg.storage.layerstore import Extractor, LayerStore, chain_ids, config_diff_ids
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, parse_manifest, sniff_media_type
from pyreg.storage.private import UnsafeDirError, check_owned, make_private_dir, tighten
from pyreg.storage.reference import Reference
from pyreg.storage.storefiles import StoreError, atomic_write, filled, flock, rmtree

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from pathlib import Path  # (annotations, and the Path API: not imported on a pull's start-up)
    from typing import IO, Any

    from pyreg.storage.storefiles import StrPath

# The names callers import from here (client/, runtime/, tests) stay here.
__all__ = ["OCI_LAYOUT_VERSION", "BlobWriter", "Extractor", "ImageNotFoundError", "ImageRecord",
           "LocalStore", "Match", "ResolvedImage", "SizeMismatchError", "StoreError", "chain_ids"]

OCI_LAYOUT_VERSION = "1.0.0"


class ResolvedImage(Frozen):
    """What the runtime needs to build a rootfs from a local image."""

    # __init__'s order (repr, pickling)
    __slots__ = (
        "config",
        "config_digest",
        "layer_dirs",
        "layers",
        "manifest",
        "manifest_digest",
        "name",
    )
    name: str
    manifest_digest: Digest
    manifest: dict[str, Any]
    config_digest: Digest
    config: dict[str, Any]
    layer_dirs: list[Path]
    layers: tuple[Descriptor, ...]

    def __init__(self, name: str, manifest_digest: Digest, manifest: dict[str, Any], config_digest: Digest,
                 config: dict[str, Any], layer_dirs: list[Path], layers: tuple[Descriptor, ...] = ()) -> None:
        self._set("name", name)
        self._set("manifest_digest", manifest_digest)
        self._set("manifest", manifest)
        self._set("config_digest", config_digest)
        self._set("config", config)
        self._set("layer_dirs", layer_dirs)
        self._set("layers", layers)


class LocalStore:
    """The local OCI layout + chain-ID layer store. Safe for concurrent processes and threads.

    Implements storage/content.py's ContentStore through its blob store (``self.blobs``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        # the root as a str for the store's own file work (os functions): pathlib, with
        # urllib.parse and ipaddress under it, is ~4 ms of CPU a pull's start-up does not need
        self.rootdir = (os.fspath(root) or ".") if root is not None else store_root()
        self.blobs = BlobStore(self.rootdir)
        self.image_index = ImageIndex(self.rootdir, self.blobs)
        self.layer_store = LayerStore(self.rootdir, self.blobs)
        self._init_layout()

    @property
    def root(self) -> Path:
        """The store's directory (``rootdir`` as a Path)."""
        from pathlib import Path

        return Path(self.rootdir)

    @staticmethod
    def default_root() -> Path:
        """``$PYREG_STORE``, else ``store`` in the client config, else /var/lib/pyreg for root,
        else ``$XDG_DATA_HOME/pyreg`` (``~/.local/share/pyreg``)."""
        from pathlib import Path

        return Path(store_root())

    def _file(self, *parts: str) -> str:
        return os.path.join(self.rootdir, *parts)

    _DIRS = ("blobs", "blobs/sha256", "layers", "layers/sha256", "layers/.ingest", "ingest", "locks")

    def _init_layout(self) -> None:
        """Make a new store's directories, ``oci-layout`` and empty ``index.json`` (what makes it
        an OCI layout for other tools). Those two are written unsynced: they hold nothing to
        lose, a crash can leave them empty at worst (one small write), and an empty one is
        written again here. Two fsyncs less before a fresh store's first pull; ``index.json``
        is synced whenever it names something (``ImageIndex.write``)."""
        self._secure_root()
        layout = self._file("oci-layout")
        if filled(layout) and filled(self.image_index.path):
            return
        for sub in self._DIRS:
            make_private_dir(self._file(sub))
        with flock(self.image_index.lock):
            if not filled(layout):
                version = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode()
                atomic_write(layout, version, sync=False)
            if not filled(self.image_index.path):
                self.image_index.write([], sync=False)

    def _secure_root(self) -> None:
        """Create the root 0700, refuse one that another user owns, tighten an old wide one.

        A store owned by someone else is refused rather than used: its owner could swap a layer
        directory for a symlink to ``/`` between two runs, or plant a setuid file in it.
        """
        if not os.path.exists(self.rootdir):
            make_private_dir(self.rootdir)
        try:
            st = check_owned(self.rootdir, "local store")
        except UnsafeDirError as e:
            raise StoreError(str(e)) from None
        if st.st_mode & 0o077:
            self.tighten()

    def tighten(self) -> int:
        """Make the root and every directory of the store's own 0700 (a store made by an older
        pyreg had 0755 ones); the insides of extracted layers keep the image's modes. Returns how
        many directories changed."""
        from pathlib import Path

        changed = 0
        candidates = [Path(os.path.realpath(self.root)), *(self.root / sub for sub in self._DIRS)]
        for parent in ("layers/sha256", "layers/.ingest", "ingest"):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                candidates += [p for p in (self.root / parent).iterdir() if not p.is_symlink()]
        for path in candidates:
            with contextlib.suppress(FileNotFoundError):
                changed += tighten(path)
        return changed

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold for the length of a pull / load / push-from-layout: keeps prune from sweeping."""
        with flock(self._file("locks", "gc.lock"), exclusive=False):
            yield

    # -- blobs (storage/blobstore.py), and through them the ContentStore protocol --------------
    def blob_path(self, digest: Digest | str) -> Path:
        return self.blobs.blob_path(digest)

    def blob_file(self, digest: Digest) -> Path:
        return self.blobs.blob_path(digest)

    def has_blob(self, digest: Digest | str) -> bool:
        return self.blobs.has_blob(digest)

    def read_blob(self, digest: Digest | str) -> bytes:
        return self.blobs.read_blob(digest)

    def read_json(self, digest: Digest | str) -> dict[str, Any]:
        return self.blobs.read_json(digest)

    def read_manifest(self, digest: Digest | str, media_type: str) -> Manifest:
        return self.blobs.read_manifest(digest, media_type)

    def blob_writer(self, digest: Digest | str,
                    size: int | None = None) -> contextlib.AbstractContextManager[BlobWriter]:
        return self.blobs.blob_writer(digest, size)

    def put_blob(self, data: bytes, digest: Digest | str | None = None) -> Digest:
        return self.blobs.put_blob(data, digest)

    def put_blob_file(self, path: StrPath, digest: Digest | str | None = None) -> tuple[Digest, int]:
        return self.blobs.put_blob_file(path, digest)

    def ingest_stream(self, reader: IO[bytes]) -> tuple[Digest, int]:
        return self.blobs.ingest_stream(reader)

    def info(self, digest: Digest) -> Info | None:
        return self.blobs.info(digest)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        return self.blobs.reader(digest, offset)

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractContextManager[BlobWriter]:
        return self.blobs.writer(digest, size)

    def walk(self) -> Iterator[Info]:
        return self.blobs.walk()

    def delete(self, digest: Digest) -> bool:
        return self.blobs.delete(digest)

    # -- images (storage/imageindex.py) --------------------------------------------------------
    def images(self) -> list[ImageRecord]:
        return self.image_index.images()

    def tag(self, name: str, digest: Digest | str, media_type: str, size: int,
            platform: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> ImageRecord:
        return self.image_index.tag(name, digest, media_type, size, platform, annotations)

    def untag(self, name: str) -> bool:
        return self.image_index.untag(name)

    def lookup(self, ref: str | Reference) -> ImageRecord:
        return self.image_index.lookup(ref)

    def find(self, ref: str | Reference) -> Match:
        return self.image_index.find(ref)

    def image_id(self, record: ImageRecord) -> Digest:
        return self.image_index.image_id(record)

    # -- layers (storage/layerstore.py) --------------------------------------------------------
    def layer_dir(self, chain_id: str) -> Path:
        return self.layer_store.layer_dir(chain_id)

    def ensure_layers(self, manifest: Manifest, config: dict[str, Any],
                      extractor: Extractor | None) -> list[Path]:
        return self.layer_store.ensure_layers(manifest, config, extractor)

    def ensure_layer(self, desc: Descriptor, diff_id: str, chain_id: str,
                     extractor: Extractor | None) -> Path:
        return self.layer_store.ensure_layer(desc, diff_id, chain_id, extractor)

    def resolve(self, ref: str | Reference, extractor: Extractor | None = None) -> ResolvedImage:
        """Image reference -> manifest, config and the extracted layer dirs (base first).

        Layers missing from ``layers/`` are extracted with ``extractor`` (e.g. after ``pyreg
        load``); without one, a missing layer is an error. Raises ImageNotFoundError.
        """
        with self.writing():
            record = self.lookup(ref)
            if record.media_type in mediatypes.INDEXES:
                raise StoreError(f"{record.name} is a multi-platform index; pull one platform to run it")
            manifest = self.read_manifest(record.digest, record.media_type)
            if manifest.config is None:
                raise StoreError(f"{record.name}: manifest {record.digest} has no config")
            config_digest = manifest.config.digest
            config = self.read_json(config_digest)
            dirs = self.ensure_layers(manifest, config, extractor)
        return ResolvedImage(record.name, record.digest, manifest.raw, config_digest, config, dirs,
                             manifest.layers)

    # -- removal -------------------------------------------------------------------------------
    def _referenced(self, keep: tuple[Digest, ...] = ()) -> tuple[set[str], set[str]]:
        """(blob hexes, chain-ID hexes) reachable from index.json and from ``keep`` (manifests
        that something outside the store, e.g. a container, still uses)."""
        blobs: set[str] = set()
        chains: set[str] = set()

        def fetch(desc: Descriptor) -> Manifest | None:
            if not self.has_blob(desc.digest):
                return None
            try:
                return parse_manifest(self.read_blob(desc.digest), desc.media_type)
            except ManifestError:
                return None  # kept, but what it names cannot be known: nothing more is kept for it

        def mark(root: Descriptor) -> None:
            for node in graph.walk(root, fetch):
                blobs.add(node.descriptor.digest.hex)
                config = node.manifest.config if node.manifest is not None else None
                if config is not None and self.has_blob(config.digest):
                    with contextlib.suppress(ValueError, StoreError):  # no JSON object or digests: no layers
                        diff_ids = config_diff_ids(self.read_json(config.digest))
                        chains.update(Digest.parse(c).hex for c in chain_ids(diff_ids))

        for record in self.images():
            mark(Descriptor(record.media_type, record.digest, record.size))
        for digest in keep:
            if self.has_blob(digest):
                with contextlib.suppress(StoreError):
                    mark(Descriptor(sniff_media_type(self.read_blob(digest)), digest, 0))
        return blobs, chains

    def rmi(self, ref: str | Reference, keep: tuple[Digest, ...] = ()) -> tuple[ImageRecord, dict[str, int]]:
        """Untag a local image, then sweep what no other image (nor ``keep``) uses."""
        record = self.lookup(ref)
        self.untag(record.name)
        return record, self.prune(keep)

    def prune(self, keep: tuple[Digest, ...] = (), dangling: bool = False) -> dict[str, int]:
        """Delete blobs, extracted layers and stale ingest files that no image references.

        ``keep``: manifest digests to treat as referenced although no name points at them (the
        images of existing containers: their layers are overlay lower dirs). ``dangling``: first
        forget the unnamed images no container uses (``pyreg prune``, as ``docker image prune``;
        rmi's sweep keeps them).
        """
        removed = {"blobs": 0, "layers": 0, "ingest": 0, "bytes": 0, "images": 0}
        with flock(self.root / "locks" / "gc.lock", exclusive=True):
            if dangling:
                removed["images"] = len(self.image_index.drop_dangling(keep))
            blobs, chains = self._referenced(keep)
            removed["blobs"], removed["bytes"] = self.blobs.sweep(blobs)
            removed["layers"] = self.layer_store.sweep(chains)
            for stale in [*(self.root / "ingest").iterdir(), *(self.root / "layers").glob(".ingest/*")]:
                rmtree(stale)
                removed["ingest"] += 1
        return removed
