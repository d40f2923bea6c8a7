"""Manifests: PUT/GET/HEAD/DELETE by tag or digest, with subject and multi-tag support."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from pyreg.registry.errors import RegistryError, digest_invalid, manifest_unknown, unsupported
from pyreg.registry.layout import StoredManifest
from pyreg.registry.routes.common import (
    BASE_HEADERS,
    LOOKUP_CONCURRENCY,
    MAX_MANIFEST_SIZE,
    Registry,
    bounded_gather,
    check_name,
    check_tag,
    content_length,
    is_digest_reference,
    location,
    parse_digest,
)
from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest
from pyreg.storage.manifest import Manifest, ManifestError, children_to_verify, parse_manifest
from pyreg.storage.names import is_valid_tag

# Each of these bounds the work one request can cause.
MAX_TAGS_PER_PUT: Final = 100  # ?tag= parameters of one manifest PUT
MAX_MANIFEST_REFERENCES: Final = 1000  # distinct digests one manifest may name (each one a lookup)

_FOREIGN: Final = (mt.DOCKER_LAYER_FOREIGN_GZIP, mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_GZIP,
                   mt.OCI_LAYER_NONDIST_ZSTD)


def _reference_digest(reference: str) -> Digest | None:
    """The digest of a digest reference; None for a tag. 404 when it is neither a tag nor a digest.

    Distribution's router matches only ``tag|digest`` here, so anything else names no manifest:
    404 MANIFEST_UNKNOWN, as the conformance suite expects for ``.INVALID_MANIFEST_NAME``.
    """
    if is_digest_reference(reference):
        try:
            return parse_digest(reference)
        except RegistryError:
            raise manifest_unknown(reference[:200]) from None
    if not is_valid_tag(reference):
        raise manifest_unknown(reference[:200])
    return None


async def _resolve(registry: Registry, name: str, reference: str) -> StoredManifest:
    found: Digest | None = _reference_digest(reference)
    if found is not None:
        digest = found
    else:
        found = await registry.layout.resolve_tag(name, reference)
        if found is None:
            raise manifest_unknown(reference)
        digest = found
    stored = await registry.layout.manifest(name, digest)
    if stored is None:
        raise manifest_unknown(reference)
    return stored


async def manifest_get(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    warning = None
    where = registry.mirror.route(name) if registry.mirror is not None else None
    if where is not None:  # a mirrored name: the pull-through cache (registry/mirror/)
        stored, warning = await registry.mirror.manifest(name, reference, _reference_digest(reference), where)
    else:
        stored = await _resolve(registry, name, reference)
    headers = {
        **BASE_HEADERS,
        "Docker-Content-Digest": str(stored.digest),
        "Content-Type": stored.media_type,
        "Content-Length": str(len(stored.data)),
        "ETag": f'"{stored.digest}"',
    }
    if warning:
        headers["Warning"] = warning
    if request.method == "HEAD":
        return Response(b"", headers=headers)
    return Response(stored.data, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = RegistryError("SIZE_INVALID", f"manifest is larger than the {limit} byte limit", status=413)
    length = content_length(request)
    if length is not None and length > limit:
        raise too_big
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_big
        parts.append(chunk)
    return b"".join(parts)


async def manifest_put(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    tags: list[str] = []
    want: Digest | None = None
    if is_digest_reference(reference):
        want = parse_digest(reference)
    else:
        tags.append(check_tag(reference))
    extra_tags = request.query_params.getlist("tag")
    if len(extra_tags) > MAX_TAGS_PER_PUT:
        raise RegistryError("TAG_INVALID", f"at most {MAX_TAGS_PER_PUT} tag parameters per manifest PUT, "
                            f"got {len(extra_tags)}")
    for extra in extra_tags:
        if check_tag(extra) not in tags:
            tags.append(extra)
    data = await _read_body(request, MAX_MANIFEST_SIZE)
    try:
        manifest = parse_manifest(data, request.headers.get("content-type"))
    except ManifestError as e:
        raise RegistryError("MANIFEST_INVALID", str(e)) from None
    digest = Digest.of(data, want.algorithm if want else "sha256")
    if want is not None and digest != want:
        raise digest_invalid(f"manifest content has digest {digest}, not {want}", str(want))

    missing = await _missing_references(registry, name, manifest)
    if missing:
        raise RegistryError("MANIFEST_BLOB_UNKNOWN",
                            f"manifest references {len(missing)} unknown blob(s) or manifest(s): "
                            + ", ".join(missing[:10]), detail={"digests": missing[:100]})

    layout = registry.layout
    await layout.put_manifest(name, digest, data, manifest)
    for tag in tags:
        await layout.tag(name, tag, digest)
    headers = {
        **BASE_HEADERS,
        "Location": location(request, registry, f"/v2/{name}/manifests/{digest}"),
        "Docker-Content-Digest": str(digest),
        "Content-Length": "0",
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    response = Response(b"", status_code=201, headers=headers)
    if want is not None:
        for tag in tags:
            response.headers.append("OCI-Tag", tag)
    return response


async def _missing_references(registry: Registry, name: str, manifest: Manifest) -> list[str]:
    """Digests the manifest needs that the repository lacks, as ``validation.manifests`` decides.

    Each reference is a storage lookup, so a manifest may name at most MAX_MANIFEST_REFERENCES
    distinct digests, and the lookups run at most LOOKUP_CONCURRENCY at a time.
    """
    distinct = {d.digest for d in manifest.references}
    if len(distinct) > MAX_MANIFEST_REFERENCES:
        raise RegistryError("MANIFEST_INVALID", f"manifest references {len(distinct)} distinct blobs and "
                            f"manifests; at most {MAX_MANIFEST_REFERENCES} are allowed")
    rules = registry.config.validation.manifests
    # foreign layers live elsewhere, as Distribution allows
    wanted = [b for b in manifest.blobs if not (b.urls and b.media_type in _FOREIGN)]
    if rules.layers.allowmissing:
        wanted = [manifest.config] if manifest.config is not None else []
    blobs = list({b.digest: b for b in wanted}.values())
    platforms: set[tuple[str, str]] | None = None
    if rules.indexes.platforms == "none":
        platforms = set()
    elif rules.indexes.platforms == "list":
        platforms = {(p.os, p.architecture) for p in rules.indexes.platformlist}
    children = list({c.digest: c for c in children_to_verify(manifest, platforms)}.values())
    layout = registry.layout
    found = await bounded_gather([*(layout.repo_blob_size(name, b.digest) for b in blobs),
                                  *(layout.has_manifest(name, c.digest) for c in children)],
                                 LOOKUP_CONCURRENCY)
    return [str(d.digest) for d, ok in zip([*blobs, *children], found, strict=True)
            if ok is None or ok is False]


async def manifest_delete(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    if not registry.config.storage.delete.enabled:
        raise unsupported("deletes are disabled (storage.delete.enabled is false)")
    headers = {**BASE_HEADERS, "Content-Length": "0"}
    digest = _reference_digest(reference)
    if digest is not None:
        if not await registry.layout.delete_manifest(name, digest):
            raise manifest_unknown(reference)
        headers["Docker-Content-Digest"] = str(digest)
    else:
        tagged = await registry.layout.resolve_tag(name, reference)
        if not await registry.layout.untag(name, reference):
            raise manifest_unknown(reference)
        if tagged is not None:
            headers["Docker-Content-Digest"] = str(tagged)
    return Response(b"", status_code=202, headers=headers)
