"""``pyreg pull`` of an image the local store already holds whole: one ``HEAD`` of the manifest.

A pull of a tag that has not moved is the common case (``pyreg run`` scripts, CI re-pulls), and
the full pull (client/transfer.py) pays for httpx, the auth machinery and the graph walker before
its first request — over 100 ms of imports for one HEAD. Here, for a registry reached over plain
HTTP (loopback, ``--insecure``, ``insecure_registries``: where no TLS set-up is needed at all),
a bare socket (storage/remote/plain.py, shared with the plain-HTTP pull) asks
``HEAD /v2/<repo>/manifests/<ref>`` anonymously; when the answer's ``Docker-Content-Digest`` is
the digest the local name records, and that image's manifest, config and layer blobs (and, when
extracting, its layers) are all in the store, the pull is done. The store is read from its files
(storage/storepeek.py), without its model's imports.

Anything else — a 401 (credentials, tokens), a redirect, another digest, an index, a TLS server,
a missing blob or layer, a network error — returns None and the full pull runs, which verifies
every byte it fetches. No bytes are fetched here: the local ones were verified when stored, and
the registry's digest header is what docker and containerd resolve a tag with too.
"""

from __future__ import annotations

from pyreg.client.results import BlobResult, TransferResult
from pyreg.storage import mediatypes
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.reference import DOCKER_HUB, Reference
from pyreg.storage.storepeek import StoredImage, stored_image

# any manifest or index: the tag's digest is compared whatever its kind
_ACCEPT = ", ".join(sorted(mediatypes.MANIFESTS))


def remote_digest(ref: Reference) -> Digest | None:
    """The digest the registry's plain-HTTP ``HEAD`` gives for ``ref`` (storage/remote/plain.py:
    a bare socket, no http.client); None for any answer but a 200 with one well-formed
    ``Docker-Content-Digest`` (the caller then does the full pull)."""
    from pyreg.storage.remote.plain import PlainHTTP, Unsupported

    try:
        with PlainHTTP(ref.registry) as http, \
                http.request("HEAD", f"/v2/{ref.repository}/manifests/{ref.reference}",
                             {"Accept": _ACCEPT, "Connection": "close"}) as response:
            if response.status != 200:
                return None
            value = response.header("docker-content-digest")
    except (Unsupported, ValueError):
        return None
    try:
        return Digest.parse(value) if value is not None else None
    except (DigestError, ValueError):
        return None


def check(ref: Reference, root: str, *, extract: bool,
          plain_http: bool) -> tuple[TransferResult, StoredImage] | None:
    """The result of pulling ``ref`` when the store at ``root`` already holds what its tag names
    (and that image, for the platform warning); None when the full pull must run. Only for
    plain-HTTP registries (``plain_http``) and a tag or digest that names an image manifest (an
    index's platform pick is the full pull's job)."""
    if not plain_http or ref.registry == DOCKER_HUB:
        return None
    local = stored_image(root, str(ref), extract)
    if local is None:
        return None
    if ref.digest is not None and ref.digest != local.digest:
        return None
    if remote_digest(ref) != local.digest:
        return None
    layers = [BlobResult(digest, size, "exists") for digest, size in local.layers]
    return TransferResult(str(ref), str(local.digest), local.media_type, None, layers), local
