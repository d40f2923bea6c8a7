"""The ``storage.s3`` section, defined once: the registry's config schema (Distribution's keys,
read by registry/config_loader.py through the field metadata of storage/configfields.py) and the
S3 driver's settings (storage/s3.py) are this one dataclass.

In a module of its own, without boto3, so loading a config never imports boto3 (``pyreg serve``
on a filesystem store never pays for it); the driver imports it, not the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyreg.storage.configfields import INTERNAL, NOT_IMPLEMENTED, SIZE, duration_field, not_implemented
from pyreg.storage.units import parse_duration, size_bytes

DEFAULT_CHUNK = 10 << 20
MAX_COPY = 5 << 30  # the largest single CopyObject / UploadPartCopy


@dataclass
class RedirectConfig:
    enabled: bool = False
    expiry: float = duration_field(1200.0)


@dataclass
class S3Config:
    """Distribution's s3 storage section; the last fields tune the driver and are no keys."""

    bucket: str = ""
    region: str = "us-east-1"
    regionendpoint: str | None = None
    forcepathstyle: bool = False
    rootdirectory: str = "/"
    accesskey: str | None = None
    secretkey: str | None = None
    chunksize: int = field(default=DEFAULT_CHUNK, metadata=SIZE)
    secure: bool = True  # https to AWS when there is no regionendpoint
    sessiontoken: str | None = None
    redirect: RedirectConfig = field(default_factory=RedirectConfig)
    lockttl: float = duration_field(30.0)  # an upload-session lock outlives a dead holder this long
    # Distribution's s3-aws keys that pyreg's driver does not act on (boto3 signs with v4 anyway)
    v4auth: Any = field(default=None, metadata=not_implemented(True))
    encrypt: Any = field(default=None, metadata=not_implemented(False))
    keyid: Any = field(default=None, metadata=not_implemented(""))
    skipverify: Any = field(default=None, metadata=not_implemented(False))
    storageclass: Any = field(default=None, metadata=not_implemented("STANDARD"))
    objectacl: Any = field(default=None, metadata=not_implemented("private"))
    accelerate: Any = field(default=None, metadata=not_implemented(False))
    usedualstack: Any = field(default=None, metadata=not_implemented(False))
    useragent: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopychunksize: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopymaxconcurrency: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    multipartcopythresholdsize: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    loglevel: Any = field(default=None, metadata=not_implemented("off"))
    checksumdisabled: Any = field(default=None, metadata=NOT_IMPLEMENTED)
    # the driver's own tuning
    max_workers: int = field(default=16, metadata=INTERNAL)
    parallelparts: int = field(default=3, metadata=INTERNAL)  # part uploads in flight per writer
    multipart_copy_threshold: int = field(default=MAX_COPY, metadata=INTERNAL)
    multipart_copy_chunksize: int = field(default=1 << 30, metadata=INTERNAL)

    @property
    def redirect_expiry(self) -> int:
        """Seconds a presigned URL stays good (at least one)."""
        return max(1, int(self.redirect.expiry))


def s3_config_from_dict(section: Mapping[str, Any]) -> S3Config:
    """An S3Config from a plain Distribution-shaped ``storage.s3`` mapping (tests, benchmarks);
    the registry's config loader builds it from the YAML itself."""
    redirect = section.get("redirect") or {}
    if isinstance(redirect, bool):
        redirect = {"enabled": redirect}
    return S3Config(
        bucket=str(section["bucket"]),
        region=str(section.get("region") or "us-east-1"),
        regionendpoint=section.get("regionendpoint") or None,
        forcepathstyle=bool(section.get("forcepathstyle", False)),
        rootdirectory=str(section.get("rootdirectory") or "/"),
        accesskey=section.get("accesskey") or None,
        secretkey=section.get("secretkey") or None,
        sessiontoken=section.get("sessiontoken") or None,
        secure=bool(section.get("secure", True)),
        chunksize=size_bytes(section.get("chunksize") or DEFAULT_CHUNK),
        redirect=RedirectConfig(bool(redirect.get("enabled", False)),
                                parse_duration(redirect.get("expiry", 1200))),
        lockttl=parse_duration(section.get("lockttl") or 30.0),
    )
