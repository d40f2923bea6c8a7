"""One content store protocol keyed by digest (containerd's ``content.Store``, ORAS's ``Target``).

Every place that holds blobs — the local store, an OCI image layout directory, a registry
repository (storage/remote/store.py) — is read and written through the same five calls, so a copy
between any two of them is one function: ``copy_graph`` walks the image graph in the source
(storage/graph.py) and copies what the target lacks, children before parents, each blob verified
against its digest and size on the way in. Skips, cross-repository mounts, parallel blobs,
retries and progress live there and nowhere else; pull, push and copy (client/transfer.py) only
choose the two stores and the root.

Why synchronous: the client, which does nearly every copy, is synchronous (httpx's sync client,
parallel blobs on a thread pool), and a sync protocol keeps each implementation a few plain file
calls. The registry's async ``Driver`` is the exception, and a store over it is wrapped at its
edge (``anyio.from_thread``) rather than making every caller async.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from functools import partial

from pyreg.storage import graph
from pyreg.storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier
from pyreg.storage.frozen import Frozen
from pyreg.storage.manifest import Descriptor, Manifest, layout_index, parse_manifest
from pyreg.storage.storefiles import pieces
from pyreg.storage.units import human_size

TYPE_CHECKING = False  # typing (Protocol, TypeVar): milliseconds of every pull's start-up
if TYPE_CHECKING:
    from pathlib import Path  # (annotations only: pathlib is not imported on a pull's start-up)
    from typing import IO, Any, TypeGuard, TypeVar

    from pyreg.storage.contentproto import ContentStore as ContentStore
    from pyreg.storage.contentproto import ManifestStore as ManifestStore
    from pyreg.storage.contentproto import Mounter as Mounter
    from pyreg.storage.contentproto import Progress as Progress
    from pyreg.storage.contentproto import Writer as Writer
    from pyreg.storage.storefiles import StrPath

    T = TypeVar("T")
else:
    _PROTOCOLS = frozenset({"ContentStore", "ManifestStore", "Mounter", "Progress", "Writer"})

    def __getattr__(name: str) -> object:
        """The protocols, imported on first use (typing's Protocol: milliseconds of every pull)."""
        if name in _PROTOCOLS:
            from pyreg.storage import contentproto

            return getattr(contentproto, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_CHUNK = 1 << 20


class ContentNotFound(LookupError):
    """The store holds no blob with this digest."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} not found")
        self.digest = digest


class ContentSizeError(ValueError):
    """Written content is not the size its descriptor says."""


class Info(Frozen):
    """A blob a store holds: its digest and size."""

    __slots__ = ("digest", "size")
    digest: Digest
    size: int

    def __init__(self, digest: Digest, size: int) -> None:
        self._set("digest", digest)
        self._set("size", size)


def read_all(store: ContentStore, desc: Descriptor, limit: int = 4 << 20) -> bytes:
    """A small blob (a manifest, a config), read whole and verified against ``desc``."""
    if desc.size > limit:
        raise ContentSizeError(f"{desc.digest}: {desc.size} bytes is more than the {limit} allowed here")
    with store.reader(desc.digest) as f:
        data = f.read(desc.size + 1)
    if len(data) != desc.size:
        raise ContentSizeError(f"{desc.digest}: expected {desc.size} bytes, got {len(data)}")
    if Digest.of(data, desc.digest.algorithm) != desc.digest:
        raise DigestMismatchError(desc.digest, Digest.of(data, desc.digest.algorithm))
    return data


def _offers(store: object, *calls: str) -> bool:
    """``isinstance`` against a runtime-checkable protocol, without importing ``typing``: every
    call is there and not None."""
    return all(getattr(store, call, None) is not None for call in calls)


def _has_manifests(store: ContentStore) -> TypeGuard[ManifestStore]:
    """The store is a ``ManifestStore`` (keeps manifests apart from blobs)."""
    return _offers(store, "fetch_manifest", "has_manifest", "push_manifest")


def _mounts(store: ContentStore) -> TypeGuard[Mounter]:
    return _offers(store, "mount")


class _Silent:
    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        return lambda n: None

    def finish(self, label: str, status: str) -> None:
        pass


class Copied(Frozen):
    """One node of a graph copy and what became of it: ``exists`` (the target had it),
    ``mounted`` (from ``source``), ``absent`` (a manifest the source lacks: an unpulled platform),
    or the copy's verb (``copied``, ``pulled``, ``pushed``)."""

    __slots__ = ("descriptor", "status", "source")  # noqa: RUF023 - __init__'s order (repr, pickling)
    descriptor: Descriptor
    status: str
    source: str | None

    def __init__(self, descriptor: Descriptor, status: str, source: str | None = None) -> None:
        self._set("descriptor", descriptor)
        self._set("status", status)
        self._set("source", source)

    @property
    def moved(self) -> bool:
        return self.status not in ("exists", "absent")


def fetch_manifest(store: ContentStore, desc: Descriptor) -> bytes | None:
    """A manifest's verified bytes from any store, None when absent."""
    if _has_manifests(store):
        return store.fetch_manifest(desc)
    if store.info(desc.digest) is None:
        return None
    return read_all(store, desc)


def fetcher(store: ContentStore) -> Callable[[Descriptor], Manifest | None]:
    """``graph.walk``'s fetch over a store: a manifest it lacks is a leaf (an unpulled platform)."""
    def fetch(desc: Descriptor) -> Manifest | None:
        data = fetch_manifest(store, desc)
        return None if data is None else parse_manifest(data, desc.media_type)
    return fetch


def _retryable(exc: BaseException) -> bool:
    """A failure worth a second try of the whole blob: the stores mark theirs (a dropped
    connection, a 5xx or 429 of a registry); a digest or size mismatch never is."""
    return bool(getattr(exc, "retryable", False))


def copy_blob(src: ContentStore, dst: ContentStore, desc: Descriptor,
              advance: Callable[[int], None] | None = None, retries: int = 3, absent: bool = False) -> bool:
    """Copy one blob unless ``dst`` has it (``absent``: the caller just asked; a registry's HEAD
    is a round trip); True when bytes were copied. A writer that keeps what
    an earlier, interrupted copy wrote (``offset``) is fed from there on; a retryable failure
    starts the blob again (a remote writer resumes from what the registry holds)."""
    if not absent and dst.info(desc.digest) is not None:
        return False
    attempt = 0
    with dst.writer(desc.digest, desc.size) as w:
        if getattr(w, "exists", False):
            return False  # another writer stored it while this one waited for the lock
        shown = 0  # bytes the progress callback has been told of

        def show(n: int) -> None:
            nonlocal shown
            shown += n
            if advance is not None and n:
                advance(n)

        while True:
            offset = int(getattr(w, "offset", 0))
            show(offset - shown)
            try:
                # the writer verifies what it is given: a source that would hash it too may skip that
                open_source = getattr(src, "unverified_reader", src.reader)
                with open_source(desc.digest, offset) as f:
                    # read1: what has arrived goes on at once (a stalled download still leaves
                    # its partial file for the next try to resume)
                    read = getattr(f, "read1", f.read)
                    while chunk := read(_CHUNK):
                        w.write(chunk)
                        show(len(chunk))
                w.commit()
                return True
            except Exception as exc:
                if isinstance(exc, (DigestMismatchError, ContentSizeError)):
                    w.abort()  # wrong content: nothing of it is kept for a resume
                    raise
                attempt += 1
                if attempt > retries or not _retryable(exc) or not hasattr(w, "recover"):
                    raise
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
                w.recover()


def _short(digest: Digest) -> str:
    return digest.hex[:12]


def copy_graph(src: ContentStore, dst: ContentStore, root: Descriptor, *,
               platform: graph.Platform | None = None, tag: str | None = None, parallel: int = 1,
               progress: Progress | None = None, verb: str = "copied",
               mount_from: Callable[[Descriptor], list[str]] | None = None,
               on_blob: Callable[[Descriptor], None] | None = None) -> list[Copied]:
    """Copy the graph under ``root`` from ``src`` into ``dst``: walk it, copy what ``dst`` lacks,
    children before parents (so a reader of ``dst`` never finds a manifest whose blobs are
    missing). The one place for skips (``dst.info`` / ``has_manifest``), cross-repository mounts
    (each repository ``mount_from(blob)`` names is tried when ``dst`` is a ``Mounter``),
    ``parallel`` blob transfers and ``progress``. Manifests ``src`` lacks are left out (status
    ``absent``). ``tag`` also names the root where ``dst`` keeps tags (a registry: the root is
    then always written, under that tag). ``on_blob(desc)`` runs once each blob is in ``dst``
    (a pull extracts layers there, while others still download). Returns every node, in walk
    order (blobs first, then manifests), with what became of it."""
    progress = progress or _Silent()
    manifests: dict[Digest, bytes] = {}

    def fetch(desc: Descriptor) -> Manifest | None:
        data = fetch_manifest(src, desc)
        if data is None:
            return None
        manifests[desc.digest] = data
        return parse_manifest(data, desc.media_type)

    nodes = list(graph.walk(root, fetch, platform=platform))
    blobs = [n.descriptor for n in nodes if not graph.is_manifest(n.descriptor)]

    def blob(desc: Descriptor) -> Copied:
        label = _short(desc.digest)
        result = _skip_or_mount(dst, desc, mount_from)
        if result is None:
            advance = progress.task(label, desc.size)
            copied = copy_blob(src, dst, desc, advance, absent=True)
            result = Copied(desc, verb if copied else "exists")
        if on_blob is not None:
            on_blob(desc)
        if result.status == "mounted":
            progress.finish(label, f"mounted from {result.source}")
        elif result.status == "exists":
            progress.finish(label, "already exists")
        else:
            progress.finish(label, f"{verb} {human_size(desc.size)}")
        return result

    results = {c.descriptor.digest: c for c in run_parallel([partial(blob, d) for d in blobs], parallel)}
    out: list[Copied] = [results[d.digest] for d in blobs]
    for node in nodes:
        desc = node.descriptor
        if not graph.is_manifest(desc):
            continue
        if node.manifest is None:
            out.append(Copied(desc, "absent"))
            continue
        data = manifests[desc.digest]
        out.append(Copied(desc, verb if _put_manifest(dst, desc, data, tag if desc == root else None)
                          else "exists"))
    return out


def _skip_or_mount(dst: ContentStore, desc: Descriptor,
                   mount_from: Callable[[Descriptor], list[str]] | None) -> Copied | None:
    if dst.info(desc.digest) is not None:
        return Copied(desc, "exists")
    if mount_from is not None and _mounts(dst):
        for source in mount_from(desc):
            if dst.mount(desc, source):
                return Copied(desc, "mounted", source)
    return None


def _put_manifest(dst: ContentStore, desc: Descriptor, data: bytes, tag: str | None) -> bool:
    """Store a manifest in ``dst`` unless it is there (and no tag is to be written)."""
    if _has_manifests(dst):
        if tag is None and dst.has_manifest(desc):
            return False
        dst.push_manifest(desc, data, tag)
        return True
    if dst.info(desc.digest) is not None:
        return False
    with dst.writer(desc.digest, desc.size) as w:
        w.write(data)
        w.commit()
    return True


def run_parallel(jobs: list[Callable[[], T]], parallel: int) -> list[T]:
    """Run ``jobs`` on ``parallel`` threads, results in order. The first failure (in job order)
    stops jobs from starting, lets what runs finish, then is raised; Ctrl-C drops the queue at
    once. Plain threads pulling from one queue, not ``concurrent.futures``: its import (and
    ``logging``'s) costs a small pull more than the pool saves."""
    if parallel <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    import threading

    results: list[Any] = [None] * len(jobs)
    errors: dict[int, BaseException] = {}
    pending = iter(range(len(jobs)))
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with lock:
                i = next(pending, None)
            if i is None:
                return
            try:
                results[i] = jobs[i]()
            except BaseException as exc:
                errors[i] = exc
                stop.set()  # jobs not started yet are not worth starting once one failed

    threads = [threading.Thread(target=work, name=f"pyreg-blob-{n}", daemon=True)
               for n in range(min(parallel, len(jobs)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        # running transfers end with the process (daemon threads); partial files stay invisible
        stop.set()
        raise
    if errors:
        raise errors[min(errors)]
    return results


# --------------------------------------------------------------------------- an OCI image layout

class _FileWriter:
    """Writes aside (``blobs/<alg>/.<hex>.<random>``), verifies, then renames into place."""

    def __init__(self, final: StrPath, digest: Digest, size: int) -> None:
        self.final, self.size = final, size
        head, self.name = os.path.split(os.fspath(final))
        self.tmp = os.path.join(head, f".{self.name}.{os.urandom(8).hex()}")
        os.makedirs(head or ".", exist_ok=True)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self.file: IO[bytes] | None = os.fdopen(fd, "wb")
        self.verifier = DigestVerifier(digest)
        self.written = 0

    def write(self, data: bytes) -> None:
        assert self.file is not None, "writer closed"
        self.written += len(data)
        if self.written > self.size:
            self.abort()
            raise ContentSizeError(f"{self.name}: more than the expected {self.size} bytes")
        self.verifier.update(data)
        for piece in pieces(data):  # small page-cache folios: see storefiles.WRITE_PIECE
            self.file.write(piece)

    def commit(self) -> StrPath:
        assert self.file is not None, "writer closed"
        if self.written != self.size:
            self.abort()
            raise ContentSizeError(f"{self.name}: expected {self.size} bytes, got {self.written}")
        try:
            self.verifier.verify()
        except DigestMismatchError:
            self.abort()
            raise
        self.file.close()
        self.file = None
        os.rename(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class BlobFiles:
    """``info``, ``reader`` and ``delete`` for a store that keeps each blob in one file."""

    def blob_file(self, digest: Digest) -> Path:
        raise NotImplementedError

    def _blob_name(self, digest: Digest) -> StrPath:
        """``blob_file`` as the store's parts use it: a store may answer a str (no pathlib)."""
        return self.blob_file(digest)

    def info(self, digest: Digest) -> Info | None:
        try:
            return Info(digest, os.stat(self._blob_name(digest)).st_size)
        except FileNotFoundError:
            return None

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        try:
            f = open(self._blob_name(digest), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ContentNotFound(digest) from None
        if offset:
            f.seek(offset)
        return f

    def delete(self, digest: Digest) -> bool:
        try:
            os.unlink(self._blob_name(digest))
        except FileNotFoundError:
            return False
        return True


class LayoutStore(BlobFiles):
    """A ContentStore over an OCI image layout directory (``oci-layout``, ``index.json``,
    ``blobs/<alg>/<hex>``), as skopeo, podman and ORAS write them."""

    def __init__(self, root: StrPath) -> None:
        self.root = root
        self._dir = os.fspath(root)

    def blob_file(self, digest: Digest) -> Path:
        from pathlib import Path

        return Path(self._blob_name(digest))

    def _blob_name(self, digest: Digest) -> str:
        return os.path.join(self._dir, "blobs", digest.algorithm, digest.hex)

    @contextlib.contextmanager
    def writer(self, digest: Digest, size: int) -> Iterator[Writer]:
        w = _FileWriter(self._blob_name(digest), digest, size)
        try:
            yield w
        finally:
            w.abort()  # after a commit: nothing left to remove

    def walk(self) -> Iterator[Info]:
        from pathlib import Path

        blobs = Path(self._dir, "blobs")
        if not blobs.is_dir():
            return
        for alg in sorted(blobs.iterdir()):
            for path in sorted(alg.iterdir()):
                if path.name.startswith("."):
                    continue  # a write in progress
                with contextlib.suppress(DigestError):
                    yield Info(Digest.parse(f"{alg.name}:{path.name}"), path.stat().st_size)

    def index(self) -> list[Descriptor]:
        """The layout's ``index.json`` entries (the image index: names -> descriptors)."""
        try:
            with open(os.path.join(self._dir, "index.json"), "rb") as f:
                return layout_index(f.read())
        except FileNotFoundError:
            return []
