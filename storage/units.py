"""Sizes and durations as people write them in flags, environment variables and config files.

One grammar for all of pyreg (registry config, client settings, runtime flags), so ``10M`` means
one thing everywhere. Sizes follow docker's ``--memory``/``--shm-size`` (go-units ``RAMInBytes``):
every unit is a power of 1024, whatever its spelling — ``10m``, ``10M``, ``10MB`` and ``10MiB`` are
all 10,485,760 bytes. A plain number is bytes. Distribution's config sizes are plain byte counts,
which read the same here. Durations follow Go's ``time.ParseDuration`` (``168h``, ``1h30m``,
``500ms``), plus ``d`` for days and a plain number of seconds.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0, "d": 86400.0}


def size_bytes(value: object) -> int:
    """``10M``/``10MB``/``10MiB`` -> 10485760, ``512k``, ``1.5G``, ``1048576`` or an int -> bytes.

    Raises ValueError for anything else (negative numbers, unknown units, booleans)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid size {value!r}")
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value.strip())
        if m:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(f"invalid size {value!r} (bytes, or with a unit: 512k, 10M, 1G)")


def parse_size(text: str | int | None) -> int | None:
    """An optional size setting: None/""/0 -> None (not set), else ``size_bytes`` (> 0)."""
    if text is None or text == "" or text == 0:
        return None
    value = size_bytes(text)
    if value <= 0:
        raise ValueError(f"invalid size {text!r}")
    return value


def parse_duration(value: object) -> float:
    """Seconds from a Go duration (``168h``, ``1h30m``, ``500ms``, ``2d``) or a number of seconds.

    Raises ValueError for anything else (negative numbers, booleans, unknown units)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        pos, total = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return total
    raise ValueError(f"invalid duration {value!r} (like 30s, 20m, 1h30m or 168h)")


def human(n: float) -> str:
    """Bytes for a message: ``4 MiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
