"""What a pull, push or copy reports (``--json`` and the ``reference: digest`` line): its own
module so that a pull of a present image (client/present.py) reports it without the transfer
machinery's imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BlobResult:
    digest: str
    size: int
    status: str        # "exists", "pulled", "pushed", "mounted", "copied"


@dataclass
class TransferResult:
    reference: str
    digest: str
    media_type: str
    platform: str | None = None
    blobs: list[BlobResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "mediaType": self.media_type,
                "platform": self.platform, "blobs": [b.__dict__ for b in self.blobs]}
