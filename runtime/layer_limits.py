"""How large a layer may become when decompressed (decompression bombs).

A gzip layer can unfold about a thousandfold, a zstd one far more, and a sparse tar entry
declares any size it likes: a small hostile blob could fill the disk. A layer's uncompressed
bytes (the tar stream, and the sizes its regular files declare) may be at most

    min(max_size, max(ratio x compressed size, floor))

``max_size``: ``PYREG_LAYER_MAX_SIZE`` / client config ``layer_max_size`` (default 64 GiB);
``ratio``: ``PYREG_LAYER_MAX_RATIO`` / ``layer_max_ratio`` (default 1100: above gzip's own
maximum of about 1032, so only zstd, sparse entries or an absurd layer reach it); the floor
(256 MiB) keeps tiny layers from tripping over the ratio. The client config file is the one
``storage.reference`` reads (the runtime does not import ``client``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyreg.storage.reference import client_config
from pyreg.storage.units import human, parse_size

DEFAULT_MAX_SIZE = 64 << 30
DEFAULT_RATIO = 1100.0
FLOOR = 256 << 20


class LayerTooLarge(ValueError):
    """A layer that decompresses past its bound; the message names the setting to raise."""


@dataclass(frozen=True)
class LayerLimits:
    max_size: int = DEFAULT_MAX_SIZE
    ratio: float = DEFAULT_RATIO

    @classmethod
    def configured(cls) -> LayerLimits:
        try:
            config = client_config()
        except ValueError:
            # unreadable here (an extractor dropped to another user): the defaults still bound it;
            # a broken config file is reported by the CLI, which reads it first
            config = {}
        size_text = os.environ.get("PYREG_LAYER_MAX_SIZE") or config.get("layer_max_size")
        ratio_text = os.environ.get("PYREG_LAYER_MAX_RATIO") or config.get("layer_max_ratio")
        try:
            size = parse_size(size_text) or DEFAULT_MAX_SIZE
        except ValueError:
            raise ValueError(f"invalid layer_max_size {size_text!r} (e.g. 64G)") from None
        try:
            ratio = float(ratio_text) if ratio_text not in (None, "") else DEFAULT_RATIO
        except (TypeError, ValueError):
            raise ValueError(f"invalid layer_max_ratio {ratio_text!r} (a number, e.g. 1100)") from None
        if ratio <= 0:
            raise ValueError(f"invalid layer_max_ratio {ratio_text!r} (a number, e.g. 1100)")
        return cls(size, ratio)

    def bound(self, compressed: int) -> int:
        return min(self.max_size, max(int(self.ratio * compressed), FLOOR))

    def check(self, uncompressed: int, compressed: int, bound: int) -> None:
        if uncompressed > bound:
            raise LayerTooLarge(
                f"layer decompresses to more than {human(bound)} (from {human(compressed)}): a "
                f"decompression bomb? Refused; raise layer_max_size / PYREG_LAYER_MAX_SIZE (now "
                f"{human(self.max_size)}) or layer_max_ratio / PYREG_LAYER_MAX_RATIO (now "
                f"{self.ratio:g}) in the client config if the image is trusted")
