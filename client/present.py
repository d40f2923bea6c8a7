"""``pyreg pull`` of an image the local store already holds whole: one ``HEAD`` of the manifest.

A pull of a tag that has not moved is the common case (``pyreg run`` scripts, CI re-pulls), and
the full pull (client/transfer.py) pays for httpx, the auth machinery and the graph walker before
its first request — over 100 ms of imports for one HEAD. Here, for a registry reached over plain
HTTP (loopback, ``--insecure``, ``insecure_registries``: where no TLS set-up is needed at all),
the standard library asks ``HEAD /v2/<repo>/manifests/<ref>`` anonymously; when the answer's
``Docker-Content-Digest`` is the digest the local name records, and that image's manifest,
config and layer blobs (and, when extracting, its layers) are all in the store, the pull is done.

Anything else — a 401 (credentials, tokens), a redirect, another digest, an index, a TLS server,
a missing blob or layer, a network error — returns None and the full pull runs, which verifies
every byte it fetches. No bytes are fetched here: the local ones were verified when stored, and
the registry's digest header is what docker and containerd resolve a tag with too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyreg.client.results import BlobResult, TransferResult
from pyreg.storage import mediatypes
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.reference import DOCKER_HUB, Reference

# any manifest or index: the tag's digest is compared whatever its kind
_ACCEPT = ", ".join(sorted(mediatypes.MANIFESTS))
_TIMEOUT = 5.0  # an optimisation: a registry slower than this gets the full pull
_MAX_HEAD = 64 << 10  # a response head larger than this is no registry's HEAD answer


@dataclass
class Present:
    """The local image a name records, checked whole."""

    digest: Digest
    media_type: str
    layers: list[BlobResult]


def local_image(store: Any, ref: Reference, extract: bool) -> Present | None:
    """The image ``ref``'s name records in ``store`` when all of it is there: the manifest, its
    config and layer blobs and, when ``extract``, every layer extracted. None otherwise."""
    from pyreg.storage.layerstore import chain_ids

    name = str(ref)
    record = next((r for r in store.images() if r.name == name), None)
    if record is None or record.media_type not in mediatypes.IMAGE_MANIFESTS:
        return None
    try:
        manifest = store.read_manifest(record.digest, record.media_type)
        if manifest.config is None or not store.has_blob(manifest.config.digest):
            return None
        if any(not store.has_blob(layer.digest) for layer in manifest.layers):
            return None
        if extract:
            config = store.read_json(manifest.config.digest)
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(manifest.layers):
                return None
            if any(not (store.layer_dir(c) / "diff").is_dir() for c in chain_ids(diff_ids)):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # anything odd: the full pull sorts it out (and says what is wrong)
    # one entry per blob, as the full pull reports (a layer listed twice is one blob)
    unique = {str(d.digest): d.size for d in manifest.layers}
    layers = [BlobResult(digest, size, "exists") for digest, size in unique.items()]
    return Present(record.digest, record.media_type, layers)


def remote_digest(ref: Reference) -> Digest | None:
    """The digest the registry's plain-HTTP ``HEAD`` gives for ``ref``; None for any answer but
    a 200 with a well-formed ``Docker-Content-Digest`` (the caller then does the full pull).

    A bare socket, not ``http.client``: its email-parser imports cost more than the request,
    and a HEAD answer is a status line and headers only, read up to the blank line (bounded)."""
    import socket

    from pyreg.storage.netaddr import split_host_port

    host, port = split_host_port(ref.registry)
    path = f"/v2/{ref.repository}/manifests/{ref.reference}"
    request = (f"HEAD {path} HTTP/1.1\r\nHost: {ref.registry}\r\nAccept: {_ACCEPT}\r\n"
               "User-Agent: pyreg/0.1\r\nConnection: close\r\n\r\n").encode("ascii")
    head = b""
    try:
        # an ASCII host as bytes: a str would load the idna codec for an address like 127.0.0.1
        with socket.create_connection((host.encode("ascii"), port or 80),  # type: ignore[arg-type]
                                      timeout=_TIMEOUT) as sock:
            sock.sendall(request)
            while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except (OSError, UnicodeError, ValueError):
        return None
    return _digest_header(head)


def _digest_header(head: bytes) -> Digest | None:
    """``Docker-Content-Digest`` of a complete ``HTTP/1.x 200`` response head; None otherwise."""
    end = head.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = head[:end].decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or status[1] != "200":
        return None
    found = [v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
             if k.strip().lower() == "docker-content-digest"]
    if len(found) != 1:
        return None
    try:
        return Digest.parse(found[0])
    except (DigestError, ValueError):
        return None


def check(ref: Reference, store: Any, *, extract: bool, plain_http: bool) -> TransferResult | None:
    """The result of pulling ``ref`` when the store already holds what its tag names; None when
    the full pull must run. Only for plain-HTTP registries (``plain_http``) and a tag or digest
    that names an image manifest (an index's platform pick is the full pull's job)."""
    if not plain_http or ref.registry == DOCKER_HUB:
        return None
    local = local_image(store, ref, extract)
    if local is None:
        return None
    if ref.digest is not None and ref.digest != local.digest:
        return None
    if remote_digest(ref) != local.digest:
        return None
    return TransferResult(str(ref), str(local.digest), local.media_type, None, local.layers)
