"""The client-side local image store: an OCI image layout plus extracted layers keyed by chain ID.

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
import errno
import fcntl
import json
import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from storage import graph, mediatypes
from storage.content import BlobFiles, ContentSizeError, Info
from storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier
from storage.manifest import (
    Descriptor,
    Manifest,
    ManifestError,
    layout_index,
    parse_manifest,
    sniff_media_type,
)
from storage.private import PRIVATE_DIR, UnsafeDirError, check_owned, make_private_dir, tighten
from storage.reference import Reference, ReferenceError, client_config, parse

Extractor = Callable[[Path, Path, str], object]

OCI_LAYOUT_VERSION = "1.0.0"
_CHUNK = 1 << 20


class StoreError(Exception):
    """A local-store failure with a message fit for one line on stderr."""


class ImageNotFoundError(StoreError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"image not known locally: {ref}")
        self.ref = ref


class SizeMismatchError(StoreError, ContentSizeError):
    pass


# -- permissions -------------------------------------------------------------------------------
# Every directory of the store is 0700 and every file we create is at most 0644, whatever the
# caller's umask (storage.private says why). The root alone would do (nothing under a 0700
# directory can be reached by another user), but each chain-ID directory is 0700 as well, so an
# extracted layer stays private even if an admin opens the root up (say, 0755 for a backup user).

_OPEN_FILE = os.O_CLOEXEC | os.O_NOFOLLOW


def _create(path: Path, mode: int, flags: int = os.O_WRONLY | os.O_TRUNC) -> int:
    """Open a new file of at most ``mode`` (never through a symlink someone put there)."""
    return os.open(path, flags | os.O_CREAT | _OPEN_FILE, mode)


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One entry of index.json: a local image name and the manifest it points at."""

    name: str                       # the ref.name annotation: "registry/repo:tag" or "registry/repo@digest"
    digest: Digest                  # manifest (or index) digest
    media_type: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    def descriptor(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        out["annotations"] = {**self.annotations, mediatypes.ANNOTATION_REF_NAME: self.name}
        return out


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """What the runtime needs to build a rootfs from a local image."""

    name: str
    manifest_digest: Digest
    manifest: dict[str, Any]
    config_digest: Digest
    config: dict[str, Any]
    layer_dirs: list[Path]          # extracted layers, base first


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L1) = DiffID(L1); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        Digest.parse(diff_id)
        out.append(diff_id if not out else str(Digest.of(f"{out[-1]} {diff_id}".encode())))
    return out


def _rmtree(path: Path) -> None:
    """rmtree that also removes read-only directories an image may contain."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        parent = os.path.dirname(p)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
        func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        import shutil

        shutil.rmtree(path, onerror=onerror)


@contextlib.contextmanager
def _flock(path: Path, exclusive: bool = True) -> Iterator[None]:
    if not path.parent.is_dir():
        make_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FILE, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


class _PipelinedVerifier:
    """A DigestVerifier whose hashing runs in a helper thread once data is streaming.

    Hashing large chunks releases the GIL, so the download (socket read + file write) and the
    hash proceed side by side: on a 512 MiB layer this is the difference between the hash and the
    network each waiting for the other. Small blobs are hashed inline (no thread).
    """

    _THRESHOLD = 1 << 20

    def __init__(self, expected: Digest) -> None:
        self._verifier = DigestVerifier(expected)
        self.size = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        self.size += len(data)
        if self._queue is None:
            if self.size < self._THRESHOLD:
                self._verifier.update(data)
                return
            self._queue = queue.Queue(maxsize=128)
            self._thread = threading.Thread(target=self._run, name="pyreg-hash", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            self._verifier.update(data)

    def finish(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
            self._thread = None

    def verify(self) -> None:
        self.finish()
        self._verifier.verify()


class BlobWriter:
    """Writes one blob through ``ingest/``; ``commit()`` verifies and renames it into ``blobs/``.

    Obtained from :meth:`LocalStore.blob_writer`, which holds the blob's lock. ``exists`` is
    True when the blob is already stored (nothing to write). ``offset`` is how many bytes of a
    previous, interrupted download are already in the partial file (and already hashed): resume
    the transfer from there, or call ``restart()`` to start over.
    """

    def __init__(self, store: LocalStore, digest: Digest, size: int | None) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.final = store.blob_path(digest)
        self.exists = self.final.exists()
        self.partial = store.root / "ingest" / f"{digest.algorithm}-{digest.hex}"
        self._verifier = _PipelinedVerifier(digest)
        self._file: IO[bytes] | None = None
        self.committed = False
        if not self.exists:
            if not self.partial.parent.is_dir():
                make_private_dir(self.partial.parent)
            fd = _create(self.partial, 0o600, os.O_RDWR | os.O_APPEND)
            self._file = os.fdopen(fd, "ab+")
            self._file.seek(0)
            while chunk := self._file.read(_CHUNK):
                self._verifier.update(chunk)
            if size is not None and self._verifier.size > size:
                self.restart()

    @property
    def offset(self) -> int:
        return self._verifier.size

    def restart(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate()
        self._verifier.finish()
        self._verifier = _PipelinedVerifier(self.digest)

    def write(self, data: bytes) -> None:
        if self.exists:
            return  # stored meanwhile by another writer: the bytes are known to be the same
        assert self._file is not None, "writer closed"
        self._file.write(data)
        self._verifier.update(data)
        if self.size is not None and self._verifier.size > self.size:
            self.discard()
            raise SizeMismatchError(f"blob {self.digest} is larger than its descriptor's {self.size} bytes")

    def commit(self) -> Path:
        """Verify size and digest; on a mismatch delete what was written and raise."""
        if self.exists:
            return self.final
        assert self._file is not None
        if self.size is not None and self._verifier.size != self.size:
            got = self._verifier.size
            self.discard()
            raise SizeMismatchError(f"blob {self.digest}: expected {self.size} bytes, got {got}")
        try:
            self._verifier.verify()
        except DigestMismatchError:
            self.discard()
            raise
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if not self.final.parent.is_dir():
            make_private_dir(self.final.parent)
        os.chmod(self.partial, 0o444)
        os.rename(self.partial, self.final)
        self.committed = True
        return self.final

    def abort(self) -> None:
        """Drop what was written (the ContentStore protocol's abort)."""
        self.discard()

    def discard(self) -> None:
        self._verifier.finish()
        if self._file is not None:
            self._file.close()
            self._file = None
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        """Keep a partial download for a later resume (it is invisible until committed)."""
        self._verifier.finish()
        if self._file is not None:
            self._file.close()
            self._file = None


class LocalStore(BlobFiles):
    """The local OCI layout + chain-ID layer store. Safe for concurrent processes and threads."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else self.default_root()
        self._init_layout()

    @staticmethod
    def default_root() -> Path:
        """``$PYREG_STORE``, else ``store`` in the client config, else /var/lib/pyreg for root,
        else ``$XDG_DATA_HOME/pyreg`` (``~/.local/share/pyreg``)."""
        explicit = os.environ.get("PYREG_STORE") or client_config().get("store")
        if explicit:
            return Path(str(explicit)).expanduser()
        if os.geteuid() == 0:
            return Path("/var/lib/pyreg")
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "pyreg"

    _DIRS = ("blobs", "blobs/sha256", "layers", "layers/sha256", "layers/.ingest", "ingest", "locks")

    def _init_layout(self) -> None:
        self._secure_root()
        layout = self.root / "oci-layout"
        if layout.exists() and (self.root / "index.json").exists():
            return
        for sub in self._DIRS:
            make_private_dir(self.root / sub)
        with _flock(self.root / "locks" / "index.lock"):
            if not layout.exists():
                self._atomic_write(layout, json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
            if not (self.root / "index.json").exists():
                self._write_index([])

    def _secure_root(self) -> None:
        """Create the root 0700, refuse one that another user owns, tighten an old wide one.

        A store owned by someone else is refused rather than used: its owner could swap a layer
        directory for a symlink to ``/`` between two runs, or plant a setuid file in it.
        """
        if not self.root.exists():
            make_private_dir(self.root)
        try:
            st = check_owned(self.root, "local store")
        except UnsafeDirError as e:
            raise StoreError(str(e)) from None
        if st.st_mode & 0o077:
            self.tighten()

    def tighten(self) -> int:
        """Make the root and every directory of the store's own 0700 (a store made by an older
        pyreg had 0755 ones); the insides of extracted layers keep the image's modes. Returns how
        many directories changed."""
        changed = 0
        candidates = [Path(os.path.realpath(self.root)), *(self.root / sub for sub in self._DIRS)]
        for parent in ("layers/sha256", "layers/.ingest", "ingest"):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                candidates += [p for p in (self.root / parent).iterdir() if not p.is_symlink()]
        for path in candidates:
            with contextlib.suppress(FileNotFoundError):
                changed += tighten(path)
        return changed

    # -- low level -----------------------------------------------------------------------------
    def _atomic_write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.urandom(16).hex()}")
        with os.fdopen(_create(tmp, 0o644, os.O_WRONLY | os.O_EXCL), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def _write_index(self, records: list[ImageRecord]) -> None:
        doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
               "manifests": [r.descriptor() for r in records]}
        self._atomic_write(self.root / "index.json", json.dumps(doc, indent=2).encode())

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold for the length of a pull / load / push-from-layout: keeps prune from sweeping."""
        with _flock(self.root / "locks" / "gc.lock", exclusive=False):
            yield

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: Digest | str) -> Path:
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        return self.root / "blobs" / d.algorithm / d.hex

    def has_blob(self, digest: Digest | str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: Digest | str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the local store") from None

    def read_json(self, digest: Digest | str) -> dict[str, Any]:
        data = json.loads(self.read_blob(digest))
        if not isinstance(data, dict):
            raise StoreError(f"blob {digest} is not a JSON object")
        return data

    @contextlib.contextmanager
    def blob_writer(self, digest: Digest | str, size: int | None = None) -> Iterator[BlobWriter]:
        """One writer per digest across processes; a second one waits, then sees ``exists``."""
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        with _flock(self.root / "locks" / f"blob-{d.algorithm}-{d.hex}"):
            writer = BlobWriter(self, d, size)
            try:
                yield writer
            finally:
                writer.close()

    # -- the ContentStore protocol (storage/content.py; info, reader, delete from BlobFiles) ----
    def blob_file(self, digest: Digest) -> Path:
        return self.blob_path(digest)

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[BlobWriter]:
        """``blob_writer`` starting from byte 0 (a copy does not resume another's partial file)."""
        with self.blob_writer(digest, size) as w:
            if not w.exists and w.offset:
                w.restart()
            yield w

    def walk(self) -> Iterator[Info]:
        for path in sorted((self.root / "blobs" / "sha256").iterdir()):
            with contextlib.suppress(DigestError, FileNotFoundError):
                yield Info(Digest.parse(f"sha256:{path.name}"), path.stat().st_size)

    def put_blob(self, data: bytes, digest: Digest | str | None = None) -> Digest:
        """Store bytes held in memory (manifests, configs); verified against ``digest`` if given."""
        d = Digest.parse(digest) if isinstance(digest, str) else (digest or Digest.of(data))
        with self.blob_writer(d, len(data)) as w:
            if not w.exists:
                w.restart()
                w.write(data)
                w.commit()
        return d

    def put_blob_file(self, path: Path, digest: Digest | str | None = None) -> tuple[Digest, int]:
        """Copy a file into the store, hashing it; verified against ``digest`` if given."""
        if digest is None:
            from storage.digest import new_hasher

            h = new_hasher()
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            digest = Digest("sha256", h.hexdigest())
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        size = path.stat().st_size
        with self.blob_writer(d, size) as w:
            if not w.exists:
                w.restart()
                with open(path, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        w.write(chunk)
                w.commit()
        return d, size

    def ingest_stream(self, reader: IO[bytes]) -> tuple[Digest, int]:
        """Store a stream whose digest is not known in advance (docker-save layers)."""
        from storage.digest import new_hasher

        hasher = new_hasher()
        size = 0
        tmp = self.root / "ingest" / f"stream-{os.urandom(16).hex()}"
        try:
            with os.fdopen(_create(tmp, 0o600, os.O_WRONLY | os.O_EXCL), "wb") as f:
                while chunk := reader.read(_CHUNK):
                    hasher.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
            digest = Digest("sha256", hasher.hexdigest())
            os.chmod(tmp, 0o444)
            os.rename(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest, size

    # -- images (index.json) -------------------------------------------------------------------
    def images(self) -> list[ImageRecord]:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return []
        try:
            entries = layout_index(data)
        except ManifestError as exc:
            raise StoreError(f"{self.root / 'index.json'}: {exc}") from None
        out = []
        for desc in entries:
            annotations = dict(desc.annotations or {})
            name = annotations.pop(mediatypes.ANNOTATION_REF_NAME, None)
            if not name:
                continue
            out.append(ImageRecord(name, desc.digest, desc.media_type, desc.size, annotations, desc.platform))
        return out

    def tag(self, name: str, digest: Digest | str, media_type: str, size: int,
            platform: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> ImageRecord:
        """Point the local name at a stored manifest (its blobs must all be stored already)."""
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        if not self.has_blob(d):
            raise StoreError(f"cannot tag {name}: manifest {d} is not stored")
        record = ImageRecord(name, d, media_type, size, dict(annotations or {}), platform)
        with _flock(self.root / "locks" / "index.lock"):
            records = [r for r in self.images() if r.name != name]
            records.append(record)
            self._write_index(records)
        return record

    def untag(self, name: str) -> bool:
        with _flock(self.root / "locks" / "index.lock"):
            records = self.images()
            kept = [r for r in records if r.name != name]
            if len(kept) == len(records):
                return False
            self._write_index(kept)
            return True

    def lookup(self, ref: str | Reference) -> ImageRecord:
        """Find a local image by reference (``busybox``, ``reg/x:1``, ``x@sha256:…``), by full
        manifest digest, or by a unique prefix (≥ 4 hex) of its image ID (config digest)."""
        text = str(ref)
        records = self.images()
        parsed: Reference | None = None
        if isinstance(ref, Reference):
            parsed = ref
        else:
            with contextlib.suppress(ReferenceError, ValueError):
                parsed = parse(text)
        if parsed is not None:
            for r in records:
                if r.name == str(parsed):
                    return r
            if parsed.digest is not None:
                for r in records:
                    if r.digest == parsed.digest and r.name.startswith(parsed.name + "@"):
                        return r
                for r in records:
                    if r.digest == parsed.digest and r.name.rsplit(":", 1)[0] == parsed.name:
                        return r
        if not isinstance(ref, Reference):
            with contextlib.suppress(DigestError):
                d = Digest.parse(text)
                for r in records:
                    if r.digest == d:
                        return r
            prefix = text.removeprefix("sha256:")
            if len(prefix) >= 4 and all(c in "0123456789abcdef" for c in prefix):
                hits = {r.digest: r for r in records if self.image_id(r).hex.startswith(prefix)}
                if len(hits) == 1:
                    return next(iter(hits.values()))
                if len(hits) > 1:
                    raise StoreError(f"image ID prefix {prefix} is ambiguous")
        raise ImageNotFoundError(text)

    def image_id(self, record: ImageRecord) -> Digest:
        """The image ID is the config digest (as Docker and podman show it)."""
        if record.media_type in mediatypes.INDEXES:
            return record.digest
        config = self.read_manifest(record.digest, record.media_type).config
        if config is None:
            raise StoreError(f"{record.name}: manifest {record.digest} has no config")
        return config.digest

    def read_manifest(self, digest: Digest | str, media_type: str) -> Manifest:
        """A stored manifest or index, parsed and validated (storage/manifest.py)."""
        try:
            return parse_manifest(self.read_blob(digest), media_type)
        except ManifestError as exc:
            raise StoreError(f"stored manifest {digest} is invalid: {exc}") from None

    # -- layers --------------------------------------------------------------------------------
    def layer_dir(self, chain_id: str) -> Path:
        d = Digest.parse(chain_id)
        return self.root / "layers" / d.algorithm / d.hex

    def ensure_layers(self, manifest: Manifest, config: dict[str, Any],
                      extractor: Extractor | None) -> list[Path]:
        """Extract every layer of the image that is not extracted yet; return the ``diff`` dirs,
        base first. Each layer is extracted once (per-chain-ID lock) and its diff ID verified."""
        layers = manifest.layers
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layers):
            raise StoreError(f"config lists {len(diff_ids)} diff IDs for {len(layers)} layers")
        return [self.ensure_layer(desc, diff_id, chain_id, extractor)
                for desc, diff_id, chain_id in zip(layers, diff_ids, chain_ids(diff_ids), strict=True)]

    def ensure_layer(self, desc: Descriptor, diff_id: str, chain_id: str,
                     extractor: Extractor | None) -> Path:
        """Extract one layer (its blob must be stored) unless already done; return its ``diff`` dir.

        Layers of one image may be extracted in any order and in parallel: each is extracted on
        its own (overlay whiteouts), only its directory name depends on the layers below it.
        """
        final = self.layer_dir(chain_id)
        if not (final / "diff").is_dir():
            if extractor is None:
                raise StoreError(f"layer {chain_id} is not extracted and no extractor was given")
            with _flock(self.root / "locks" / f"layer-{Digest.parse(chain_id).hex}"):
                if not (final / "diff").is_dir():
                    self._extract(desc, diff_id, chain_id, final, extractor)
        return final / "diff"

    def _extract(self, desc: Descriptor, diff_id: str, chain_id: str, final: Path,
                 extractor: Extractor) -> None:
        blob = self.blob_path(desc.digest)
        if not blob.exists():
            raise StoreError(f"layer blob {desc.digest} is missing from the local store")
        # staging (and so the extraction beside it) is 0700 from its first moment: an image's
        # setuid files are never reachable by another user, not even between extract and rename
        staging = self.root / "layers" / ".ingest" / os.urandom(16).hex()
        if not staging.parent.is_dir():
            make_private_dir(staging.parent)
        os.mkdir(staging, PRIVATE_DIR)
        try:
            result = extractor(blob, staging / "diff", desc.media_type)
            got = getattr(result, "diff_id", None)
            if got is not None and str(got) != diff_id:
                raise DigestMismatchError(Digest.parse(diff_id), Digest.parse(str(got)))
            meta = {"chainID": chain_id, "diffID": diff_id, "blob": str(desc.digest),
                    "mediaType": desc.media_type, "verified": got is not None}
            with os.fdopen(_create(staging / "meta.json", 0o644, os.O_WRONLY | os.O_EXCL), "w") as f:
                f.write(json.dumps(meta))
            if not final.parent.is_dir():
                make_private_dir(final.parent)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        finally:
            _rmtree(staging)

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
        return ResolvedImage(record.name, record.digest, manifest.raw, config_digest, config, dirs)

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
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        diff_ids = self.read_json(config.digest)["rootfs"]["diff_ids"]
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

    def prune(self, keep: tuple[Digest, ...] = ()) -> dict[str, int]:
        """Delete blobs, extracted layers and stale ingest files that no image references.

        ``keep``: manifest digests to treat as referenced although no name points at them (the
        images of existing containers: their layers are overlay lower dirs).
        """
        removed = {"blobs": 0, "layers": 0, "ingest": 0, "bytes": 0}
        with _flock(self.root / "locks" / "gc.lock", exclusive=True):
            blobs, chains = self._referenced(keep)
            for path in (self.root / "blobs" / "sha256").iterdir():
                if path.name not in blobs:
                    removed["bytes"] += path.stat().st_size
                    path.unlink(missing_ok=True)
                    removed["blobs"] += 1
            for path in (self.root / "layers" / "sha256").iterdir():
                if path.name not in chains:
                    _rmtree(path)
                    removed["layers"] += 1
            for stale in [*(self.root / "ingest").iterdir(), *(self.root / "layers").glob(".ingest/*")]:
                _rmtree(stale)
                removed["ingest"] += 1
        return removed
