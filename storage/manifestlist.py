"""Making an image index (``pyreg manifest``): members, their platforms, the index's own kind.

The index is an OCI image index, or a Docker manifest list when every member is a Docker schema 2
manifest (what ``docker manifest`` and podman make; a Docker list may not hold OCI manifests, and a
registry or client that only knows Docker types reads it). Each member's platform comes from its
image config (``os``, ``architecture``, ``variant``, ``os.version``, ``os.features``), as podman does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pyreg.storage import mediatypes as mt
from pyreg.storage.manifest import Descriptor, Manifest, parse_manifest


def platform_of(config: dict[str, Any]) -> dict[str, Any]:
    """An image config's platform in descriptor form (``os`` and ``architecture`` always set)."""
    out: dict[str, Any] = {"architecture": str(config.get("architecture") or "unknown"),
                           "os": str(config.get("os") or "unknown")}
    if isinstance(config.get("variant"), str) and config["variant"]:
        out["variant"] = config["variant"]
    if isinstance(config.get("os.version"), str) and config["os.version"]:
        out["os.version"] = config["os.version"]
    features = config.get("os.features")
    if isinstance(features, list) and features and all(isinstance(f, str) for f in features):
        out["os.features"] = list(features)
    return out


def index_media_type(members: Iterable[Descriptor]) -> str:
    kinds = {m.media_type for m in members}
    return mt.DOCKER_MANIFEST_LIST if kinds and kinds <= {mt.DOCKER_MANIFEST} else mt.OCI_INDEX


def build(members: list[Descriptor], annotations: dict[str, str] | None = None) -> tuple[bytes, Manifest]:
    """The index bytes for ``members`` (validated by parsing them back)."""
    media_type = index_media_type(members)
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                           "manifests": [m.to_json() for m in members]}
    if annotations and media_type == mt.OCI_INDEX:
        doc["annotations"] = dict(annotations)
    data = json.dumps(doc, indent=4).encode()
    return data, parse_manifest(data, media_type)


def with_member(members: list[Descriptor], new: Descriptor) -> list[Descriptor]:
    """``members`` with ``new`` added, replacing a member of the same digest."""
    return [m for m in members if m.digest != new.digest] + [new]
