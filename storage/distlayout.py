"""Where CNCF Distribution (registry:2) keeps blobs and repository links on a Driver — the
part of its layout (registry/storage/paths.go) that a content store needs. registry/layout.py
builds the rest (tags, uploads, referrers) on these and re-exports them.

Spec knowledge lives once, in storage: the registry-layout ContentStore
(storage/registrystore.py) and the registry's own Layout both read these paths.
"""

from __future__ import annotations

from typing import Final

from pyreg.storage.digest import Digest, DigestError

ROOT: Final = "/docker/registry/v2"
BLOBS: Final = f"{ROOT}/blobs"
REPOSITORIES: Final = f"{ROOT}/repositories"


def blob_dir(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def blob_data_path(digest: Digest) -> str:
    return f"{blob_dir(digest)}/data"


def repo_path(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link_path(name: str, digest: Digest) -> str:
    return f"{repo_path(name)}/_layers/{digest.algorithm}/{digest.hex}/link"


def revision_link_path(name: str, digest: Digest) -> str:
    return f"{repo_path(name)}/_manifests/revisions/{digest.algorithm}/{digest.hex}/link"


def digest_at(algorithm: str, hex_: str) -> Digest | None:
    """The digest two path components name (``…/sha256/<hex>/…``), None when they name none."""
    try:
        return Digest.parse(f"{algorithm}:{hex_}")
    except DigestError:
        return None
