"""What a registry sent, checked before anything else sees it: a manifest's bytes against the
digest asked for (or announced in ``Docker-Content-Digest``) and against the manifest grammar.
One copy for both ways of asking (storage/remote/client.py over httpx, plainstore.py over a bare
socket)."""

from __future__ import annotations

from pyreg.storage.digest import Digest, DigestMismatchError
from pyreg.storage.manifest import ManifestBlob, ManifestError, parse_manifest
from pyreg.storage.remote.errors import RemoteError


def received_manifest(data: bytes, content_type: str | None, verify: Digest | None,
                      announced: str | None, what: str) -> ManifestBlob:
    """The manifest ``data`` (answer to a GET of ``what``): its digest must be ``verify`` when
    asked by digest, else the ``announced`` header's when there is one (DigestMismatchError);
    it must parse (RemoteError)."""
    actual = Digest.of(data, verify.algorithm if verify else "sha256")
    if verify is not None and actual != verify:
        raise DigestMismatchError(verify, actual)
    if verify is None and announced:
        try:
            said = Digest.parse(announced)
        except ValueError:
            said = None
        if said is not None and Digest.of(data, said.algorithm) != said:
            raise DigestMismatchError(said, Digest.of(data, said.algorithm))
    try:
        parsed = parse_manifest(data, content_type)
    except ManifestError as exc:
        raise RemoteError(f"{what} is invalid: {exc}") from None
    return ManifestBlob.of(data, parsed.media_type, actual, parsed)
