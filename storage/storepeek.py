"""A read-only look at the local store (storage/localstore.py's layout) for one name: the image it
records and whether all of it is there, read straight from ``index.json`` and the blob files.

``pyreg pull`` of an image already present (client/present.py) is one HEAD to the registry; the
store's typed model (LocalStore, the image index, the manifest model and graph walker) costs
more to import than that request takes. Every file read here was verified and validated when it
was stored; this reader checks the shape of what it uses and answers None for anything it does
not expect — a store it would not open (another user's, one still too wide), a missing or odd
file, a name that records an index — and the caller then runs the full pull, which opens the
store the full way and says what is wrong.
"""

from __future__ import annotations

import json
import os

from pyreg.storage import mediatypes
from pyreg.storage.digest import Digest, chain_ids
from pyreg.storage.private import UnsafeDirError, check_owned

TYPE_CHECKING = False  # typing costs milliseconds of this path's start-up
if TYPE_CHECKING:
    from typing import Any


class StoredImage:
    """The image manifest a name records, with its config and the (digest, size) of each
    distinct layer blob, in manifest order."""

    __slots__ = ("config", "digest", "layers", "media_type")

    def __init__(self, digest: Digest, media_type: str, config: dict[str, Any],
                 layers: list[tuple[str, int]]) -> None:
        self.digest = digest
        self.media_type = media_type
        self.config = config
        self.layers = layers


def _json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def _blob(root: str, digest: Digest) -> str:
    return os.path.join(root, "blobs", digest.algorithm, digest.hex)


def stored_image(root: str, name: str, extract: bool) -> StoredImage | None:
    """The image ``name`` (``registry/repo:tag`` as the index records it) names in the store at
    ``root`` when the manifest, its config and layer blobs and, when ``extract``, every layer
    extracted are all there; None otherwise."""
    try:
        st = check_owned(root, "local store")
    except (UnsafeDirError, OSError):
        return None
    if st.st_mode & 0o077:
        return None  # an older, wider store: the full path tightens it first
    try:
        index = _json(os.path.join(root, "index.json"))
        entries = [m for m in index["manifests"]
                   if (m.get("annotations") or {}).get(mediatypes.ANNOTATION_REF_NAME) == name]
        if len(entries) != 1 or entries[0]["mediaType"] not in mediatypes.IMAGE_MANIFESTS:
            return None
        digest = Digest.parse(entries[0]["digest"])
        manifest = _json(_blob(root, digest))
        config_digest = Digest.parse(manifest["config"]["digest"])
        layers: dict[str, int] = {}  # one entry per blob, as the full pull reports
        for layer in manifest["layers"]:
            size = layer["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                return None
            layers[str(Digest.parse(layer["digest"]))] = size
        blobs = [config_digest, *(Digest.parse(d) for d in layers)]
        if not all(os.path.isfile(_blob(root, d)) for d in blobs):
            return None
        config = _json(_blob(root, config_digest))
        if not isinstance(config, dict):
            return None
        if extract:
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(manifest["layers"]):
                return None
            for chain in chain_ids(diff_ids):
                c = Digest.parse(chain)
                if not os.path.isdir(os.path.join(root, "layers", c.algorithm, c.hex, "diff")):
                    return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return StoredImage(digest, entries[0]["mediaType"], config, list(layers.items()))
