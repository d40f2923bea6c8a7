"""Manifest, index and descriptor parsing and validation: the one place that knows their shape.

Covers the OCI image manifest and image index (image-spec v1.1, including ``artifactType``,
the empty config and ``subject``) and Docker's schema 2 manifest and manifest list. The registry
uses it to validate pushes and to find what a manifest references; the client uses it to walk
images. It knows nothing of registries: errors are plain ``ManifestError`` values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from pyreg.storage import mediatypes as mt
from pyreg.storage.digest import Digest, DigestError
from pyreg.storage.frozen import Frozen

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any, Final

# RFC 6838 type/subtype, as the image spec requires for mediaType and artifactType.
_MEDIA_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
# Content-Types that say nothing about the manifest kind (curl's default, generic JSON ...).
GENERIC_CONTENT_TYPES: Final = frozenset(
    {"", "application/json", "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"}
)


class ManifestError(ValueError):
    """A manifest is not valid JSON, not one of the supported kinds, or breaks its schema.

    ``unsupported`` marks a well-formed document of a kind we do not accept (schema 1, an unknown
    mediaType) as opposed to a broken one.
    """

    def __init__(self, message: str, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def base_media_type(content_type: str | None) -> str:
    """``type/subtype`` of a Content-Type header, without parameters, lower-cased."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_media_type(value: object) -> bool:
    return isinstance(value, str) and bool(_MEDIA_TYPE.match(value))


class Descriptor(Frozen):
    """An OCI content descriptor (also Docker's, which is a subset)."""

    __slots__ = ("media_type", "digest", "size",  # noqa: RUF023 - __init__'s order (repr, pickling)
                 "artifact_type", "annotations", "platform", "urls", "data")
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None
    annotations: dict[str, str] | None
    platform: dict[str, Any] | None
    urls: tuple[str, ...]
    data: str | None

    def __init__(self, media_type: str, digest: Digest, size: int, artifact_type: str | None = None,
                 annotations: dict[str, str] | None = None, platform: dict[str, Any] | None = None,
                 urls: tuple[str, ...] = (), data: str | None = None) -> None:
        self._set("media_type", media_type)
        self._set("digest", digest)
        self._set("size", size)
        self._set("artifact_type", artifact_type)
        self._set("annotations", annotations)
        self._set("platform", platform)
        self._set("urls", urls)
        self._set("data", data)

    @classmethod
    def from_json(cls, obj: object, where: str = "descriptor") -> Descriptor:
        """Validate a descriptor object; ``where`` names it in error messages."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: must be an object")
        media_type = obj.get("mediaType")
        if not is_media_type(media_type):
            raise ManifestError(f"{where}.mediaType: missing or not a media type: {media_type!r}")
        raw_digest = obj.get("digest")
        if not isinstance(raw_digest, str):
            raise ManifestError(f"{where}.digest: missing or not a string")
        try:
            digest = Digest.parse(raw_digest)
        except DigestError as e:
            raise ManifestError(f"{where}.digest: {e}") from None
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}.size: missing or not a non-negative integer")
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not is_media_type(artifact_type):
            raise ManifestError(f"{where}.artifactType: not a media type: {artifact_type!r}")
        annotations = _annotations(obj.get("annotations"), f"{where}.annotations")
        platform = obj.get("platform")
        if platform is not None and (not isinstance(platform, dict)
                                     or not isinstance(platform.get("architecture"), str)
                                     or not isinstance(platform.get("os"), str)):
            raise ManifestError(f"{where}.platform: must be an object with architecture and os")
        urls = obj.get("urls")
        if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
            raise ManifestError(f"{where}.urls: must be a list of strings")
        data = obj.get("data")
        if data is not None and not isinstance(data, str):
            raise ManifestError(f"{where}.data: must be a base64 string")
        assert isinstance(media_type, str)
        return cls(media_type, digest, size, artifact_type, annotations, platform, tuple(urls or ()), data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = dict(self.platform)
        if self.urls:
            out["urls"] = list(self.urls)
        if self.data is not None:
            out["data"] = self.data
        return out


def _annotations(value: object, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ManifestError(f"{where}: must be an object of strings")
    return dict(value)


class Manifest(Frozen):
    """A validated manifest or index and what it references (``raw``, the document, is neither
    compared nor shown)."""

    __slots__ = ("media_type", "config", "layers",  # noqa: RUF023 - __init__'s order (repr, pickling)
                 "manifests", "subject", "artifact_type", "annotations", "raw")
    _compared = ("media_type", "config", "layers", "manifests", "subject", "artifact_type", "annotations")
    media_type: str
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: dict[str, str] | None
    raw: dict[str, Any]

    def __init__(self, media_type: str, config: Descriptor | None = None,
                 layers: tuple[Descriptor, ...] = (), manifests: tuple[Descriptor, ...] = (),
                 subject: Descriptor | None = None, artifact_type: str | None = None,
                 annotations: dict[str, str] | None = None, raw: dict[str, Any] | None = None) -> None:
        self._set("media_type", media_type)
        self._set("config", config)
        self._set("layers", layers)
        self._set("manifests", manifests)
        self._set("subject", subject)
        self._set("artifact_type", artifact_type)
        self._set("annotations", annotations)
        self._set("raw", raw if raw is not None else {})

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Blobs the registry must hold before accepting this manifest (config and layers)."""
        return ((self.config,) if self.config else ()) + self.layers

    @property
    def references(self) -> tuple[Descriptor, ...]:
        """Everything this manifest points to (blobs and child manifests), not the subject."""
        return self.blobs + self.manifests

    @property
    def effective_artifact_type(self) -> str | None:
        """What the referrers API reports: artifactType, else the config's media type for images."""
        if self.artifact_type:
            return self.artifact_type
        if self.config is not None and self.media_type in mt.IMAGE_MANIFESTS:
            return self.config.media_type
        return None


def sniff_media_type(data: bytes) -> str:
    """Best-effort media type of stored manifest bytes; never raises (for serving old content)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "application/octet-stream"
    if not isinstance(obj, dict):
        return "application/octet-stream"
    declared = obj.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if obj.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1_SIGNED if "signatures" in obj else mt.DOCKER_SCHEMA1
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "config" in obj or "layers" in obj:
        return mt.OCI_MANIFEST
    return "application/octet-stream"


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest:
    """Parse and validate manifest bytes as pushed with ``content_type``.

    The kind comes from the document's ``mediaType``; when that is absent (allowed for OCI) it
    comes from a specific Content-Type, else from the document's shape. A specific Content-Type
    that disagrees with ``mediaType`` is an error, as the distribution spec requires.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from None
    except RecursionError:
        raise ManifestError("manifest JSON is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ManifestError("manifest must be a JSON object")
    header = base_media_type(content_type)
    if header in GENERIC_CONTENT_TYPES:
        header = ""
    declared = obj.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("mediaType must be a string")
    schema = obj.get("schemaVersion")
    if schema == 1 or header in (mt.DOCKER_SCHEMA1, mt.DOCKER_SCHEMA1_SIGNED):
        raise ManifestError("Docker schema 1 manifests are not supported", unsupported=True)
    if declared and header and declared != header:
        raise ManifestError(f"Content-Type {header!r} does not match the manifest's mediaType {declared!r}")
    media_type = declared or header
    if not media_type:
        media_type = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    if media_type not in mt.MANIFESTS:
        raise ManifestError(f"unsupported manifest media type {media_type!r}", unsupported=True)
    if media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST) and not declared:
        raise ManifestError("Docker schema 2 manifests must declare their mediaType")
    if isinstance(schema, bool) or schema != 2:
        raise ManifestError(f"schemaVersion must be 2, got {schema!r}")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not is_media_type(artifact_type):
        raise ManifestError(f"artifactType is not a media type: {artifact_type!r}")
    subject = None
    if obj.get("subject") is not None:
        subject = Descriptor.from_json(obj["subject"], "subject")
    annotations = _annotations(obj.get("annotations"), "annotations")

    if media_type in mt.INDEXES:
        if "config" in obj or "layers" in obj:
            raise ManifestError(f"an index ({media_type}) must not have config or layers")
        children = obj.get("manifests")
        if not isinstance(children, list):
            raise ManifestError("manifests: missing or not a list")
        manifests = tuple(Descriptor.from_json(c, f"manifests[{i}]") for i, c in enumerate(children))
        if media_type == mt.DOCKER_MANIFEST_LIST:
            for i, child in enumerate(manifests):
                if child.platform is None:
                    raise ManifestError(f"manifests[{i}].platform: required in a Docker manifest list")
        return Manifest(media_type, manifests=manifests, subject=subject, artifact_type=artifact_type,
                        annotations=annotations, raw=obj)

    if "manifests" in obj:
        raise ManifestError(f"an image manifest ({media_type}) must not have manifests")
    if "config" not in obj:
        raise ManifestError("config: missing")
    config = Descriptor.from_json(obj["config"], "config")
    raw_layers = obj.get("layers")
    if not isinstance(raw_layers, list):
        raise ManifestError("layers: missing or not a list")
    layers = tuple(Descriptor.from_json(layer, f"layers[{i}]") for i, layer in enumerate(raw_layers))
    return Manifest(media_type, config=config, layers=layers, subject=subject,
                    artifact_type=artifact_type, annotations=annotations, raw=obj)


def children_to_verify(manifest: Manifest,
                       platforms: Collection[tuple[str, str]] | None) -> tuple[Descriptor, ...]:
    """The child manifests of an index a registry must hold before accepting it.

    ``platforms`` None: every child. Otherwise only children whose ``(os, architecture)`` is in
    ``platforms``, plus every child that names no platform (it cannot be ruled out) — the rule
    of Distribution's ``validation.manifests.indexes``. An empty collection: no child at all.
    """
    if platforms is None:
        return manifest.manifests
    if not platforms:
        return ()
    return tuple(c for c in manifest.manifests
                 if c.platform is None or (c.platform.get("os"), c.platform.get("architecture")) in platforms)


class ManifestBlob(Frozen):
    """Manifest bytes as stored or fetched, with their media type and digest: what is copied
    byte for byte (re-serialising would change the digest). ``parsed`` is the validated model,
    parsed once (``parse_manifest``; ManifestError when invalid)."""

    __slots__ = ("data", "media_type", "digest", "_parsed")  # noqa: RUF023 - __init__'s order
    _compared = ("data", "media_type", "digest")
    data: bytes
    media_type: str
    digest: Digest
    _parsed: list[Manifest]

    def __init__(self, data: bytes, media_type: str, digest: Digest,
                 _parsed: list[Manifest] | None = None) -> None:
        self._set("data", data)
        self._set("media_type", media_type)
        self._set("digest", digest)
        self._set("_parsed", _parsed if _parsed is not None else [])

    @classmethod
    def of(cls, data: bytes, media_type: str, digest: Digest, parsed: Manifest | None = None) -> ManifestBlob:
        return cls(data, media_type, digest, [parsed] if parsed is not None else [])

    @property
    def parsed(self) -> Manifest:
        if not self._parsed:
            self._parsed.append(parse_manifest(self.data, self.media_type))
        return self._parsed[0]

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data))

    def json(self) -> dict[str, Any]:
        """The document as JSON (for display; walks use ``parsed``)."""
        return self.parsed.raw


def layout_index(data: bytes | str) -> list[Descriptor]:
    """The entries of an OCI image layout's ``index.json`` (the local store's, a layout directory's,
    an OCI archive's), each validated as a descriptor. The top level is read leniently (tools
    differ in ``schemaVersion``/``mediaType`` there); a broken entry is a ManifestError."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ManifestError(f"index.json is not valid JSON: {e}") from None
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if entries is not None and not isinstance(entries, list):
        raise ManifestError("index.json: manifests is not a list")
    return [Descriptor.from_json(e, f"index.json manifests[{i}]") for i, e in enumerate(entries or [])]


def ref_name(desc: Descriptor) -> str | None:
    """A layout index entry's name (the ``org.opencontainers.image.ref.name`` annotation)."""
    return (desc.annotations or {}).get(mt.ANNOTATION_REF_NAME)
