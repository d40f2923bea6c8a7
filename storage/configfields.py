"""Field metadata for configuration dataclasses: how the registry's config loader
(registry/config_loader.py) reads a scalar, and which fields are not keys at all.

Here, in storage, because a section may be defined beside what it configures — the s3 driver's
(storage/s3config.py) — and storage imports nothing of the registry. Plain dicts, read by key.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

DURATION = {"kind": "duration"}  # "168h", "20m", "1h30m", "500ms" or a number of seconds
SIZE = {"kind": "size"}  # bytes: 10485760, "10MiB" (= "10MB" = "10M": units are 1024-based)
INTERNAL = {"internal": True}  # set by code, never a key (refused in a file, left out of dumps)


def duration_field(default: float) -> Any:
    return field(default=default, metadata=DURATION)


def not_implemented(*harmless: Any) -> dict[str, Any]:
    """Field metadata of a Distribution key pyreg accepts but does not act on: any value is kept
    as given, and one other than ``harmless`` (values whose meaning pyreg already has) is named in
    the start-up warning. Used as ``field(default=None, metadata=not_implemented(...))``."""
    return {"notimplemented": True, "harmless": harmless}


NOT_IMPLEMENTED = not_implemented()
