"""Pull, push and copy: each one ``copy_graph`` (storage/content.py) between two stores.

A registry repository is a ``RemoteStore`` (storage/remote/store.py), the local store and an OCI
layout directory are stores of their own; the walker copies what the target lacks, children
before parents, skipping what is there, mounting across repositories, blobs in parallel, with
progress. What is left here is each command's own part: pull picks a platform, fetches the image
config first so that each layer is extracted as soon as it lands, and tags the name last; push
names the repositories a blob may be mounted from (``client/origins.py``); copy mounts from the
source repository when both are on one registry.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from pyreg.client import origins
from pyreg.client.progress import Progress
from pyreg.client.results import BlobResult, TransferResult
from pyreg.storage import mediatypes
from pyreg.storage.content import Copied, Info, LayoutStore, copy_graph, fetch_manifest
from pyreg.storage.digest import Digest
from pyreg.storage.graph import Platform, select_platform
from pyreg.storage.manifest import Descriptor, Manifest, ManifestError, layout_index, parse_manifest, ref_name
from pyreg.storage.reference import Reference, parse
from pyreg.storage.remote.errors import RemoteError

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import IO

    from pyreg.storage.content import ContentStore

    # (a push from a layout never opens the local store: its modules are not imported for it)
    from pyreg.storage.localstore import BlobWriter, Extractor, LocalStore
    from pyreg.storage.remote import RegistryClient
    from pyreg.storage.remote.plainstore import PlainStore
    from pyreg.storage.remote.store import RemoteStore
    from pyreg.storage.storefiles import StrPath

__all__ = ["Platform", "Source", "TransferResult", "copy", "layout_source", "local_source", "pull",
           "pull_all_tags", "push"]

# ------------------------------------------------------------------------------------ results

def _blob_results(copied: list[Copied], only: set[Digest] | None = None) -> list[BlobResult]:
    return [BlobResult(str(c.descriptor.digest), c.descriptor.size, c.status) for c in copied
            if c.descriptor.media_type not in mediatypes.MANIFESTS
            and (only is None or c.descriptor.digest in only)]


def _image(desc: Descriptor, data: bytes) -> Manifest:
    """The validated image manifest (config and layers) ``desc`` names; RemoteError otherwise."""
    if desc.media_type not in mediatypes.IMAGE_MANIFESTS:
        raise RemoteError(f"unsupported manifest type {desc.media_type!r}")
    try:
        parsed = parse_manifest(data, desc.media_type)
    except ManifestError as exc:
        raise RemoteError(f"manifest {desc.digest} is invalid: {exc}") from None
    if parsed.config is None:
        raise RemoteError(f"manifest {desc.digest} has no config")
    return parsed


def _platform_child(store: RemoteStore | PlainStore, root: Descriptor, wanted: Platform) -> Descriptor:
    """The child of the index ``root`` for ``wanted`` (PlatformError names what there is)."""
    data = store.fetch_manifest(root)
    assert data is not None
    return select_platform(parse_manifest(data, root.media_type), wanted)


# ------------------------------------------------------------------------------------ pull

def connect(registry: str, *, insecure: bool, pool: int) -> RegistryClient:
    """client/remote.py's ``connect``, imported when a command first needs httpx (a pull from a
    loopback registry may never need it)."""
    from pyreg.client.common import lean_httpx

    lean_httpx()
    from pyreg.client.remote import connect as _connect

    return _connect(registry, insecure=insecure, pool=pool)


class _ConfigFirst:
    """A pull's image config, fetched by the first job of the graph copy (the walk puts the
    config before the layers), beside the layer downloads rather than before them: one round
    trip and two fsyncs (config, manifest) less on a pull's critical path.

    The job fetches the config whole (``fetch``: size-bounded and digest-checked), stores it,
    checks its diff IDs against the layers, then stores the manifest blob too: in the local
    store a blob is reachable only once index.json names it (``tag``, after every blob is
    stored and synced), so the manifest's fsync can overlap the layers'. A layer that lands
    before the config waits for it (``extract``) only when it is to be extracted."""

    def __init__(self, store: LocalStore, desc: Descriptor, manifest: Descriptor, manifest_data: bytes,
                 fetch: Callable[[], bytes], layers: tuple[Descriptor, ...]) -> None:
        import threading

        self.store, self.desc, self.fetch, self.layers = store, desc, fetch, layers
        self.manifest, self.manifest_data = manifest, manifest_data
        self.layer_digests = {d.digest for d in layers}
        self.done = threading.Event()
        self._claim = threading.Lock()
        self.error: BaseException | None = None
        self._extract: dict[Digest, list[tuple[Descriptor, str, str]]] = {}

    def run(self) -> Info:
        """The config job: store and check the config (and store the manifest)."""
        from pyreg.storage.localstore import chain_ids

        try:
            if not self.store.has_blob(self.desc.digest):
                self.store.put_blob(self.fetch(), self.desc.digest)
            config = self.store.read_json(self.desc.digest)
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(self.layers):
                raise RemoteError(f"image config lists {len(diff_ids)} diff IDs for "
                                  f"{len(self.layers)} layers")
            # one blob may stand for several layers (the same tar twice): extract each of them
            for desc, diff_id, chain_id in zip(self.layers, diff_ids, chain_ids(diff_ids), strict=True):
                self._extract.setdefault(desc.digest, []).append((desc, diff_id, chain_id))
            self.store.put_blob(self.manifest_data, self.manifest.digest)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.done.set()
        return Info(self.desc.digest, self.desc.size)

    def extract(self) -> dict[Digest, list[tuple[Descriptor, str, str]]]:
        """Layer digest -> (descriptor, diff ID, chain ID) of each layer it is, once the config
        job has finished; what that job raised otherwise."""
        self.done.wait()
        if self.error is not None:
            raise RemoteError(f"image config {self.desc.digest} was not stored") from self.error
        return self._extract


class _Resuming:
    """The local store as a pull's target: its writer keeps what an interrupted pull downloaded
    (``ingest/``, invisible until verified) and the copy goes on from there with ``Range``. The
    image config's ``info`` runs its job (``_ConfigFirst``)."""

    def __init__(self, store: LocalStore, config: _ConfigFirst | None = None) -> None:
        self.store = store
        self.config = config

    def info(self, digest: Digest) -> Info | None:
        if self.config is not None and digest == self.config.desc.digest \
                and self.config._claim.acquire(blocking=False):
            return self.config.run()  # the first ask runs the job (the lock is never released)
        return self.store.info(digest)

    def reader(self, digest: Digest, offset: int = 0) -> IO[bytes]:
        return self.store.reader(digest, offset)

    def writer(self, digest: Digest, size: int) -> contextlib.AbstractContextManager[BlobWriter]:
        return self.store.blob_writer(digest, size)

    def walk(self) -> Iterator[Info]:
        return self.store.walk()

    def delete(self, digest: Digest) -> bool:
        return self.store.delete(digest)


class _LayersOnly:
    """A pull's progress shows layers, as docker's does: the config was fetched before the copy
    (to extract layers as they land), its "already exists" would only be noise."""

    def __init__(self, progress: Progress, layers: set[Digest]) -> None:
        self.progress = progress
        self.labels = {d.hex[:12] for d in layers}

    def task(self, label: str, total: int | None) -> Callable[[int], None]:
        return self.progress.task(label, total)

    def finish(self, label: str, status: str) -> None:
        if label in self.labels:
            self.progress.finish(label, status)


def pull(ref: Reference, store: LocalStore, *, extractor: Extractor | None, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None,
         client: RegistryClient | None = None) -> TransferResult:
    """Pull one image into ``store`` (through ``client`` when given, e.g. for every tag of a
    repository). From a loopback registry the plain way is tried first (``_pull_plain``)."""
    if client is None:
        result = _pull_plain(ref, store, extractor=extractor, platform=platform, parallel=parallel,
                             progress=progress)
        if result is not None:
            return result
        with connect(ref.registry, insecure=insecure, pool=parallel) as rc:
            return pull(ref, store, extractor=extractor, platform=platform, parallel=parallel,
                        progress=progress, client=rc)
    from pyreg.storage.remote.store import RemoteStore

    remote = RemoteStore(client, ref.repository)

    def config_bytes(desc: Descriptor) -> bytes:
        return client.get_blob_bytes(ref.repository, desc.digest, size=desc.size)

    return _pull_from(remote, config_bytes, ref, store, extractor=extractor, platform=platform,
                      parallel=parallel, progress=progress)


def _pull_plain(ref: Reference, store: LocalStore, *, extractor: Extractor | None, platform: Platform | None,
                parallel: int, progress: Progress | None) -> TransferResult | None:
    """The pull over storage/remote/plainstore.py (no httpx, no TLS set-up): only from a loopback
    registry, which the full pull also asks over plain HTTP first, and only while every answer
    is a plain anonymous ``200``. None when something was not (a token to get, a redirect, an
    error, a TLS server): the full pull then runs, and finds the verified blobs this one stored."""
    from pyreg.client import config
    from pyreg.storage.netaddr import is_loopback

    if not is_loopback(ref.registry):
        return None
    from pyreg.storage.remote.plain import PlainHTTP, Unsupported
    from pyreg.storage.remote.plainstore import PlainStore

    with PlainHTTP(ref.registry) as http:
        remote = PlainStore(http, ref.repository)

        def config_bytes(desc: Descriptor) -> bytes:
            return remote.blob_bytes(desc.digest, desc.size, config.max_config_size())

        try:
            return _pull_from(remote, config_bytes, ref, store, extractor=extractor, platform=platform,
                              parallel=parallel, progress=progress)
        except Unsupported:
            return None


def _pull_from(remote: RemoteStore | PlainStore, config_bytes: Callable[[Descriptor], bytes], ref: Reference,
               store: LocalStore, *, extractor: Extractor | None, platform: Platform | None, parallel: int,
               progress: Progress | None) -> TransferResult:
    """The pull itself, from either kind of remote store: pick the platform, fetch the config
    first so that each layer is extracted as soon as it lands, copy the graph, tag the name last."""
    progress = progress or Progress(enabled=False)
    chosen = remote.resolve(ref.reference, verify=ref.digest)
    plat = None
    if chosen.media_type in mediatypes.INDEXES:
        chosen = _platform_child(remote, chosen, platform or Platform.host())
        plat = chosen.platform
    data = remote.fetch_manifest(chosen)
    assert data is not None
    manifest = _image(chosen, data)
    config_desc = manifest.config
    assert config_desc is not None
    layers = manifest.layers
    from pyreg.client.config import max_config_size

    if config_desc.size > max_config_size():
        config_bytes(config_desc)  # refused by the path's own bound, before any layer is asked for
    config = _ConfigFirst(store, config_desc, chosen, data, lambda: config_bytes(config_desc), layers)
    with store.writing():

        def on_blob(desc: Descriptor) -> None:
            if extractor is not None and desc.digest in config.layer_digests:
                for layer, diff_id, chain_id in config.extract().get(desc.digest, []):
                    store.ensure_layer(layer, diff_id, chain_id, extractor)

        copied = copy_graph(remote, _Resuming(store, config), chosen, parallel=parallel,
                            progress=_LayersOnly(progress, {d.digest for d in layers}), verb="pulled",
                            on_blob=on_blob)
        config.extract()  # raises what the config's job raised (run_parallel raised it first)
        store.tag(str(ref), chosen.digest, chosen.media_type, chosen.size, platform=plat)
    origins.record(store.rootdir, [c.descriptor for c in copied], ref.registry, ref.repository)
    return TransferResult(str(ref), str(chosen.digest), chosen.media_type,
                          str(Platform.of(plat)) if plat else None,
                          _blob_results(copied, {d.digest for d in layers}))


def pull_all_tags(ref: Reference, store: LocalStore, *, extractor: Extractor | None,
                  platform: Platform | None = None, parallel: int = 4, insecure: bool = False,
                  progress: Progress | None = None) -> list[TransferResult]:
    """Every tag of ``ref``'s repository, over one connection; blobs the tags share move once."""
    from pyreg.storage.remote.store import RemoteStore

    progress = progress or Progress(enabled=False)
    with connect(ref.registry, insecure=insecure, pool=parallel) as rc:
        tags = sorted(RemoteStore(rc, ref.repository).tags())
        if not tags:
            raise RemoteError(f"{ref.registry}/{ref.repository} has no tags")
        results = []
        for tag in tags:
            one = parse(f"{ref.registry}/{ref.repository}:{tag}")
            progress.line(f"pulling {one}")
            results.append(pull(one, store, extractor=extractor, platform=platform, parallel=parallel,
                                progress=progress, client=rc))
    return results


# ------------------------------------------------------------------------------------ sources for push

class Source:
    """Something to push: a store and the root of the graph in it. ``mount_from`` is the
    (registry, repository) the whole image came from when no per-blob record says better;
    ``local_root`` a local store's directory, where blob origins are recorded."""

    def __init__(self, root: Descriptor, store: ContentStore, mount_from: tuple[str, str] | None = None,
                 name: str = "", local_root: StrPath | None = None) -> None:
        self.root = root
        self.store = store
        self.mount_from = mount_from
        self.name = name
        self.local_root = local_root


def local_source(store: LocalStore, text: str) -> Source:
    record = store.lookup(text)
    root = Descriptor(record.media_type, record.digest, record.size)
    mount = None
    try:
        if record.dangling:  # no name, no repository it came from
            raise ValueError(record.name)
        origin = parse(record.name)
        mount = (origin.registry, origin.repository)
    except ValueError:
        pass
    return Source(root, store, mount, record.name, store.rootdir)


def layout_source(path: StrPath, tag: str | None) -> Source:
    """An OCI image layout directory; ``tag`` picks an index.json entry by its ref.name annotation."""
    with open(os.path.join(path, "index.json"), "rb") as f:
        entries = layout_index(f.read())
    if tag is None:
        if len(entries) != 1:
            names = [ref_name(e) or "?" for e in entries]
            raise RemoteError(
                f"{path} holds {len(entries)} images ({', '.join(names)}): name one as DIR:TAG")
        entry = entries[0]
    else:
        for entry in entries:
            if ref_name(entry) == tag:
                break
        else:
            raise RemoteError(f"no image tagged {tag!r} in {path}/index.json")
    store = LayoutStore(path)
    if fetch_manifest(store, entry) is None:
        raise RemoteError(f"{path}: the manifest {entry.digest} named in index.json is missing")
    return Source(entry, store, None, str(path))


# ------------------------------------------------------------------------------------ push

def push(source: Source, dest: Reference, *, parallel: int = 4, chunk_size: int | None = None,
         insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    """Walk the source's graph and send what the repository lacks: a blob it has is skipped
    (HEAD); one another repository of that registry has — as recorded when it was pulled, or
    the repository the image came from — is mounted; the rest is uploaded."""
    progress = progress or Progress(enabled=False)
    fallback = []
    if source.mount_from and source.mount_from[0] == dest.registry:
        fallback = [source.mount_from[1]]

    def mount_from(desc: Descriptor) -> list[str]:
        known = origins.lookup(source.local_root, desc.digest, dest.registry) if source.local_root else []
        return [r for r in dict.fromkeys(known + fallback) if r != dest.repository]

    copied = None
    if chunk_size is None:
        copied = _push_plain(source, dest, parallel=parallel, progress=progress, mount_from=mount_from)
    if copied is None:
        from pyreg.storage.remote.store import RemoteStore

        with connect(dest.registry, insecure=insecure, pool=parallel) as rc:
            rc.ping()
            remote = RemoteStore(rc, dest.repository, chunk_size=chunk_size)
            copied = copy_graph(source.store, remote, source.root, tag=dest.tag, parallel=parallel,
                                progress=progress, verb="pushed", mount_from=mount_from)
    if source.local_root is not None:
        origins.record(source.local_root, [c.descriptor for c in copied if c.status != "absent"],
                       dest.registry, dest.repository)
    if dest.digest is not None and dest.digest != source.root.digest:
        raise RemoteError(f"pushed manifest is {source.root.digest}, not {dest.digest}")
    return TransferResult(str(dest), str(source.root.digest), source.root.media_type, None,
                          _blob_results(copied))


def _push_plain(source: Source, dest: Reference, *, parallel: int, progress: Progress,
                mount_from: Callable[[Descriptor], list[str]]) -> list[Copied] | None:
    """The push over storage/remote/plainpush.py (no httpx, no TLS set-up): only to a loopback
    registry, and only while every answer is a plain anonymous one. None when something was not
    (credentials asked for, a redirect, an error, a TLS server): the full push then runs from
    where this one stopped (its HEADs skip the blobs sent here)."""
    from pyreg.storage.netaddr import is_loopback

    if not is_loopback(dest.registry):
        return None
    from pyreg.storage.remote.plain import PlainHTTP, Unsupported
    from pyreg.storage.remote.plainpush import PlainPushStore

    with PlainHTTP(dest.registry) as http:
        try:
            return copy_graph(source.store, PlainPushStore(http, dest.repository), source.root,
                              tag=dest.tag, parallel=parallel, progress=progress, verb="pushed",
                              mount_from=mount_from)
        except Unsupported:
            return None


# ------------------------------------------------------------------------------------ copy

def copy(src: Reference, dest: Reference, *, all_platforms: bool = True, platform: Platform | None = None,
         parallel: int = 4, insecure: bool = False, progress: Progress | None = None) -> TransferResult:
    """Registry to registry. An index is copied whole unless a platform is asked for."""
    from pyreg.storage.remote.store import RemoteStore

    progress = progress or Progress(enabled=False)
    same_registry = src.registry == dest.registry
    mount = [src.repository] if same_registry and src.repository != dest.repository else []
    with contextlib.ExitStack() as stack:
        sc = stack.enter_context(connect(src.registry, insecure=insecure, pool=parallel))
        dc = sc if same_registry else stack.enter_context(connect(dest.registry, insecure=insecure,
                                                                  pool=parallel))
        source = RemoteStore(sc, src.repository)
        root = source.resolve(src.reference, verify=src.digest)
        plat = None
        if root.media_type in mediatypes.INDEXES and (platform is not None or not all_platforms):
            root = _platform_child(source, root, platform or Platform.host())
            plat = root.platform
        dc.ping()
        copied = copy_graph(source, RemoteStore(dc, dest.repository), root, tag=dest.tag,
                            parallel=parallel, progress=progress, verb="copied",
                            mount_from=lambda desc: mount)
    if dest.digest is not None and dest.digest != root.digest:
        raise RemoteError(f"copied manifest is {root.digest}, not {dest.digest}")
    shown = str(Platform.of(plat)) if plat else None
    return TransferResult(str(dest), str(root.digest), root.media_type, shown, _blob_results(copied))
