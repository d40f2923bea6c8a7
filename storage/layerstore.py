"""The local store's layer store: extracted layers keyed by chain ID (containerd's snapshotter),
shared by every image that has them::

    layers/sha256/<chainhex>/diff       a layer extracted by the caller's extractor
    layers/sha256/<chainhex>/meta.json  its chain ID, diff ID, blob and media type
    layers/.ingest/                     extractions in progress (0700 from their first moment)

Each layer is extracted once (an flock per chain ID; a second extractor waits, then finds it
done), aside, its diff ID checked against the image config, then renamed into place. Only the
directory name depends on the layers below, so the layers of one image may be extracted in any
order and in parallel. This module must not import ``runtime``: callers pass the extractor.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable

from pyreg.storage.blobstore import BlobStore
from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.digest import chain_ids as chain_ids  # its home; named here too
from pyreg.storage.manifest import Descriptor, Manifest
from pyreg.storage.private import PRIVATE_DIR, make_private_dir
from pyreg.storage.storefiles import StoreError, create, flock, rmtree

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from pathlib import Path  # (annotations: pathlib is imported once layers are extracted)
    from typing import Any

    from pyreg.storage.storefiles import StrPath

# ``extract(blob_path, dest_dir, media_type)``; a result with ``.diff_id`` is verified against
# the image config (the runtime's ``runtime.extract.extract_layer`` returns one).
Extractor = Callable[["Path", "Path", str], object]


def config_diff_ids(config: dict[str, Any]) -> list[str]:
    """The image config's ``rootfs.diff_ids`` (empty when it has none or they are malformed)."""
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


class LayerStore:
    """Extracted layers by chain ID; reads layer blobs from the blob store."""

    def __init__(self, root: StrPath, blobs: BlobStore) -> None:
        self.rootdir = os.fspath(root)
        self.blobs = blobs

    @property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self.rootdir)

    def layer_dir(self, chain_id: str) -> Path:
        d = Digest.parse(chain_id)
        return self.root / "layers" / d.algorithm / d.hex

    def ensure_layers(self, manifest: Manifest, config: dict[str, Any],
                      extractor: Extractor | None) -> list[Path]:
        """Extract every layer of the image that is not extracted yet; return the ``diff`` dirs,
        base first. Each layer is extracted once (per-chain-ID lock) and its diff ID verified."""
        layers = manifest.layers
        diff_ids = config_diff_ids(config)
        if len(diff_ids) != len(layers):
            raise StoreError(f"config lists {len(diff_ids)} diff IDs for {len(layers)} layers")
        return [self.ensure_layer(desc, diff_id, chain_id, extractor)
                for desc, diff_id, chain_id in zip(layers, diff_ids, chain_ids(diff_ids), strict=True)]

    def ensure_layer(self, desc: Descriptor, diff_id: str, chain_id: str,
                     extractor: Extractor | None) -> Path:
        """Extract one layer (its blob must be stored) unless already done; return its ``diff`` dir."""
        final = self.layer_dir(chain_id)
        if not (final / "diff").is_dir():
            if extractor is None:
                raise StoreError(f"layer {chain_id} is not extracted and no extractor was given")
            with flock(self.root / "locks" / f"layer-{Digest.parse(chain_id).hex}"):
                if not (final / "diff").is_dir():
                    self._extract(desc, diff_id, chain_id, final, extractor)
        return final / "diff"

    def _extract(self, desc: Descriptor, diff_id: str, chain_id: str, final: Path,
                 extractor: Extractor) -> None:
        blob = self.blobs.blob_path(desc.digest)
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
            with os.fdopen(create(staging / "meta.json", 0o644, os.O_WRONLY | os.O_EXCL), "w") as f:
                f.write(json.dumps(meta))
            if not final.parent.is_dir():
                make_private_dir(final.parent)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        finally:
            rmtree(staging)

    def sweep(self, keep: set[str]) -> int:
        """Remove every extracted layer whose chain-ID hex is not in ``keep``; how many went."""
        removed = 0
        for path in (self.root / "layers" / "sha256").iterdir():
            if path.name not in keep:
                rmtree(path)
                removed += 1
        return removed
