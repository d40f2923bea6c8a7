"""Manifests: PUT/GET/HEAD/DELETE by tag or digest, with subject and multi-tag support."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from registry.errors import RegistryError, digest_invalid, manifest_unknown, unsupported
from registry.layout import StoredManifest
from registry.routes.common import (
    BASE_HEADERS,
    MAX_MANIFEST_SIZE,
    Registry,
    check_name,
    check_tag,
    is_digest_reference,
    location,
    parse_digest,
)
from storage import mediatypes as mt
from storage.digest import Digest
from storage.manifest import ManifestError, parse_manifest


async def _resolve(registry: Registry, name: str, reference: str) -> StoredManifest:
    if is_digest_reference(reference):
        digest = parse_digest(reference)
    else:
        check_tag(reference)
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
    stored = await _resolve(registry, name, reference)
    headers = {
        **BASE_HEADERS,
        "Docker-Content-Digest": str(stored.digest),
        "Content-Type": stored.media_type,
        "Content-Length": str(len(stored.data)),
        "ETag": f'"{stored.digest}"',
    }
    if request.method == "HEAD":
        return Response(b"", headers=headers)
    return Response(stored.data, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = RegistryError("SIZE_INVALID", f"manifest is larger than the {limit} byte limit", status=413)
    raw = request.headers.get("content-length")
    if raw and raw.isdigit() and int(raw) > limit:
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
    for extra in request.query_params.getlist("tag"):
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

    layout = registry.layout
    foreign = (mt.DOCKER_LAYER_FOREIGN_GZIP, mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_GZIP,
               mt.OCI_LAYER_NONDIST_ZSTD)
    # foreign layers live elsewhere, as Distribution allows
    blobs = list({b.digest: b for b in manifest.blobs if not (b.urls and b.media_type in foreign)}.values())
    children = list({c.digest: c for c in manifest.manifests}.values())
    found = await asyncio.gather(*(layout.repo_blob_size(name, b.digest) for b in blobs),
                                 *(layout.has_manifest(name, c.digest) for c in children))
    missing = [str(d.digest) for d, ok in zip([*blobs, *children], found, strict=True)
               if ok is None or ok is False]
    if missing:
        raise RegistryError("MANIFEST_BLOB_UNKNOWN",
                            f"manifest references {len(missing)} unknown blob(s) or manifest(s): "
                            + ", ".join(missing[:10]), detail={"digests": missing[:100]})

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


async def manifest_delete(request: Request, registry: Registry, name: str, reference: str) -> Response:
    check_name(name)
    if not registry.config.storage.delete.enabled:
        raise unsupported("deletes are disabled (storage.delete.enabled is false)")
    headers = {**BASE_HEADERS, "Content-Length": "0"}
    if is_digest_reference(reference):
        digest = parse_digest(reference)
        if not await registry.layout.delete_manifest(name, digest):
            raise manifest_unknown(reference)
        headers["Docker-Content-Digest"] = str(digest)
    else:
        check_tag(reference)
        tagged = await registry.layout.resolve_tag(name, reference)
        if not await registry.layout.untag(name, reference):
            raise manifest_unknown(reference)
        if tagged is not None:
            headers["Docker-Content-Digest"] = str(tagged)
    return Response(b"", status_code=202, headers=headers)
