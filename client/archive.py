"""Image archives: OCI archives (a tarred image layout) and ``docker save`` / ``podman save`` tarballs.

``load`` imports either kind into the local store (every blob verified or hashed on the way in);
``save`` writes an OCI archive that ``skopeo copy oci-archive:FILE`` and ``podman load`` read.
A docker archive becomes an OCI manifest around its layer tars (media type sniffed: plain, gzip
or zstd) and its config; the tags in its ``RepoTags`` are parsed with the client's defaults.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

from storage import graph, mediatypes
from storage.digest import Digest
from storage.localstore import ImageRecord, LocalStore, StoreError
from storage.manifest import Descriptor, Manifest, ManifestError, layout_index, parse_manifest, ref_name
from storage.reference import ReferenceError, parse


class ArchiveError(Exception):
    pass


def _member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo | None:
    name = name.removeprefix("./")
    for candidate in (name, f"./{name}"):
        try:
            return tar.getmember(candidate)
        except KeyError:
            continue
    return None


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    info = _member(tar, name)
    if info is None or not info.isfile():
        raise ArchiveError(f"archive has no {name}")
    f = tar.extractfile(info)
    assert f is not None
    return f.read()


def _layer_media_type(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return mediatypes.OCI_LAYER_GZIP
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return mediatypes.OCI_LAYER_ZSTD
    return mediatypes.OCI_LAYER


def _name_for(text: str, fallback: str) -> str:
    try:
        return str(parse(text))
    except (ReferenceError, ValueError):
        return fallback


def load(path: Path, store: LocalStore, tag: str | None = None) -> list[ImageRecord]:
    """Import an OCI archive or a docker-save archive; returns the records tagged."""
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise ArchiveError(f"{path}: empty file, not an image archive (make one with pyreg save, "
                               "docker save or podman save)")
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ArchiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError):
        raise ArchiveError(f"{path}: not a tar archive (plain, gzip, bzip2 or xz); make one with "
                           "pyreg save, docker save or podman save") from None
    try:
        with tar, store.writing():
            if _member(tar, "index.json") is not None and _member(tar, "oci-layout") is not None:
                return _load_oci(tar, store, tag)
            if _member(tar, "manifest.json") is not None:
                return _load_docker(tar, store, tag)
            raise ArchiveError(f"{path}: neither an OCI archive (index.json) "
                               "nor a docker archive (manifest.json)")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise ArchiveError(f"{path}: damaged archive ({' '.join(str(exc).split()) or type(exc).__name__})"
                           ) from None
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, ManifestError) as exc:
        raise ArchiveError(f"{path}: malformed archive metadata ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]})") from None


def _copy_blob(tar: tarfile.TarFile, store: LocalStore, digest: Digest, size: int | None) -> None:
    if store.has_blob(digest):
        return
    info = _member(tar, f"blobs/{digest.algorithm}/{digest.hex}")
    if info is None:
        raise ArchiveError(f"archive lacks blob {digest}")
    f = tar.extractfile(info)
    assert f is not None
    with store.blob_writer(digest, size) as w:
        if not w.exists:
            w.restart()
            while chunk := f.read(1 << 20):
                w.write(chunk)
            w.commit()


def _load_oci(tar: tarfile.TarFile, store: LocalStore, tag: str | None) -> list[ImageRecord]:
    records = []
    for i, entry in enumerate(layout_index(_read(tar, "index.json"))):

        def fetch(desc: Descriptor, top: Digest = entry.digest) -> Manifest | None:
            d = desc.digest
            if d != top and not store.has_blob(d) and _member(tar, f"blobs/{d.algorithm}/{d.hex}") is None:
                return None  # a platform the archive does not carry
            _copy_blob(tar, store, d, desc.size)
            return parse_manifest(store.read_blob(d), desc.media_type)

        for node in graph.walk(entry, fetch):
            if not graph.is_manifest(node.descriptor):
                _copy_blob(tar, store, node.descriptor.digest, node.descriptor.size)
        name = tag if tag and i == 0 else ref_name(entry)
        full = _name_for(name, str(entry.digest)) if name else str(entry.digest)
        records.append(store.tag(full, entry.digest, entry.media_type, entry.size, entry.platform))
    return records


def _load_docker(tar: tarfile.TarFile, store: LocalStore, tag: str | None) -> list[ImageRecord]:
    items = json.loads(_read(tar, "manifest.json"))
    records = []
    for item in items:
        config_data = _read(tar, item["Config"])
        config_digest = store.put_blob(config_data)
        config = json.loads(config_data)
        layers = []
        for name in item.get("Layers") or []:
            info = _member(tar, name)
            if info is None:
                raise ArchiveError(f"archive lacks layer {name}")
            f = tar.extractfile(info)
            assert f is not None
            head = f.read(4)
            f.seek(0)
            digest, size = store.ingest_stream(f)
            layers.append({"mediaType": _layer_media_type(head), "digest": str(digest), "size": size})
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(layers):
            raise ArchiveError(f"config lists {len(diff_ids)} diff IDs for {len(layers)} layers")
        manifest: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": str(config_digest),
                       "size": len(config_data)},
            "layers": layers,
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        digest = store.put_blob(data)
        names = [tag] if tag else list(item.get("RepoTags") or [])
        if not names:
            names = [str(config_digest)]
        for n in names:
            full = _name_for(n, str(config_digest))
            records.append(store.tag(full, digest, mediatypes.OCI_MANIFEST, len(data)))
    return records


def save(records: list[ImageRecord], store: LocalStore, out: Path) -> int:
    """Write an OCI archive holding ``records`` (each keeps its full name as ref.name)."""
    blobs: dict[str, Path] = {}

    def want(d: Digest | str) -> None:
        digest = Digest.parse(d) if isinstance(d, str) else d
        path = store.blob_path(digest)
        if not path.exists():
            raise StoreError(f"blob {digest} is missing from the local store")
        blobs[f"blobs/{digest.algorithm}/{digest.hex}"] = path

    for record in records:
        want(record.digest)

        def fetch(desc: Descriptor, top: Digest = record.digest) -> Manifest | None:
            if desc.digest != top and not store.has_blob(desc.digest):
                return None  # a platform this store never pulled
            return store.read_manifest(desc.digest, desc.media_type)

        for node in graph.walk(Descriptor(record.media_type, record.digest, record.size), fetch):
            if node.manifest is not None or not graph.is_manifest(node.descriptor):
                want(node.descriptor.digest)
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX,
             "manifests": [r.descriptor() for r in records]}
    now = int(time.time())

    # Written aside under an unpredictable name, created 0600 with O_EXCL|O_NOFOLLOW, then renamed:
    # in a shared directory nobody can plant a symlink that makes us write elsewhere, and the
    # archive (private images, their setuid files) is the owner's to share, as with docker save.
    tmp = out.with_name(f".{out.name}.{os.urandom(8).hex()}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _write_archive(tar, index, blobs, now)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(blobs)


def _write_archive(tar: tarfile.TarFile, index: dict[str, Any], blobs: dict[str, Path], now: int) -> None:
    def add_bytes(name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = now
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    add_bytes("index.json", json.dumps(index).encode())
    for dirname in ("blobs", "blobs/sha256"):
        info = tarfile.TarInfo(dirname)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = now
        tar.addfile(info)
    for name, path in sorted(blobs.items()):
        info = tar.gettarinfo(str(path), arcname=name)
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        with open(path, "rb") as f:
            tar.addfile(info, f)
