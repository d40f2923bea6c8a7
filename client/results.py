"""What a pull, push or copy reports (``--json`` and the ``reference: digest`` line): its own
module so that a pull of a present image (client/present.py) reports it without the transfer
machinery's imports."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds of that pull's start-up
if TYPE_CHECKING:
    from typing import Any


class BlobResult:
    """One blob of a transfer and what became of it: "exists", "pulled", "pushed", "mounted",
    "copied" (plain classes, not dataclasses: storage/frozen.py says why)."""

    def __init__(self, digest: str, size: int, status: str) -> None:
        self.digest = digest
        self.size = size
        self.status = status

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlobResult) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"BlobResult({self.digest!r}, {self.size!r}, {self.status!r})"


class TransferResult:
    def __init__(self, reference: str, digest: str, media_type: str, platform: str | None = None,
                 blobs: list[BlobResult] | None = None) -> None:
        self.reference = reference
        self.digest = digest
        self.media_type = media_type
        self.platform = platform
        self.blobs = blobs if blobs is not None else []

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferResult) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return (f"TransferResult({self.reference!r}, {self.digest!r}, {self.media_type!r}, "
                f"{self.platform!r}, {self.blobs!r})")

    def as_json(self) -> dict[str, Any]:
        return {"reference": self.reference, "digest": self.digest, "mediaType": self.media_type,
                "platform": self.platform, "blobs": [b.__dict__ for b in self.blobs]}
