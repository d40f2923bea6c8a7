"""Sizes as people write them in flags, environment variables and config files."""

from __future__ import annotations

_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int | None) -> int | None:
    """``10M``, ``512k``, ``10MiB``, ``1048576`` -> bytes; None/""/0 -> None (no value)."""
    if text is None or text == "" or text == 0:
        return None
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}")
        return text
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = 1
    if t and t[-1] in _UNITS:
        mult, t = _UNITS[t[-1]], t[:-1]
    try:
        value = int(float(t) * mult)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid size {text!r}") from None
    if value <= 0:
        raise ValueError(f"invalid size {text!r}")
    return value


def human(n: float) -> str:
    """Bytes for a message: ``4 MiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
