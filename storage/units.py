"""Sizes and durations as people write them in flags, environment variables and config files.

One grammar for all of pyreg (registry config, client settings, runtime flags), so ``10M`` means
one thing everywhere. Sizes follow docker's ``--memory``/``--shm-size`` (go-units ``RAMInBytes``):
every unit is a power of 1024, whatever its spelling — ``10m``, ``10M``, ``10MB`` and ``10MiB`` are
all 10,485,760 bytes. A plain number is bytes. Distribution's config sizes are plain byte counts,
which read the same here. Durations follow Go's ``time.ParseDuration`` (``168h``, ``1h30m``,
``500ms``), plus ``d`` for days and a plain number of seconds. Times (``--since``) follow docker's
``timetypes``. Output, at the end: sizes and durations printed the one way docker prints them.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# patterns compiled on first use (re's cache), not when a command that reads no size imports this
_SIZE = r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?"

_DURATION_PART = r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)"
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
        m = re.fullmatch(_SIZE, value.strip(), re.IGNORECASE)
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
        for m in re.finditer(_DURATION_PART, text):
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


# ------------------------------------------------------------------ output, as docker prints it
# docker (go-units) prints sizes one way everywhere: decimal units with three significant digits
# for image, layer, disk and network sizes (``7.55MB``, ``512kB``, ``0B``), binary units for memory
# (``1.953MiB``, docker stats' MEM USAGE). Go's %g and Python's agree, down to ``1e+03kB``.

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _custom(n: float, base: float, units: tuple[str, ...], precision: int) -> str:
    i = 0
    while n >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def human_size(n: float, precision: int = 3) -> str:
    """docker's ``HumanSizeWithPrecision``: ``7.55MB``, ``0B``, ``1.2GB`` (1000-based)."""
    return _custom(float(n), 1000.0, _DECIMAL, precision)


def bytes_size(n: float) -> str:
    """docker's ``BytesSize`` (memory): ``1.953MiB`` (1024-based, four significant digits)."""
    return _custom(float(n), 1024.0, _BINARY, 4)


def human_duration(seconds: float) -> str:
    """docker's ``HumanDuration`` (``CREATED``/``STATUS`` columns, before ``ago``): ``Less than a
    second``, ``About a minute``, ``2 hours``, ``3 weeks``, ``4 months``, ``2 years``."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_DATE = (r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(\.\d{1,9})?)?)?)?"
         r"(Z|[+-]\d\d:\d\d)?")


def parse_time(value: str, now: float | None = None) -> int:
    """docker's ``--since``/``--until`` (its ``timetypes.GetTimestamp``), in nanoseconds since the
    epoch: an RFC 3339 date or timestamp (``2024-05-01``, ``2024-05-01T10:00:00Z``,
    ``…T10:00:00.5+02:00``; without a zone: local time), a Unix timestamp (``1714557600`` or
    ``1714557600.5``), or a duration before now (``10m``, ``1h30m``, ``2d``).

    Raises ValueError for anything else."""
    import calendar
    import time

    text = value.strip()
    if re.fullmatch(r"\d+(\.\d{1,9})?", text):
        whole, _, frac = text.partition(".")
        return int(whole) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    m = re.fullmatch(_DATE, text)
    if m:
        y, mo, d, h, mi, s = (int(g) if g else 0 for g in m.groups()[:6])
        try:
            fields = (y, mo, d, h, mi, s, 0, 0, -1)
            if m.group(8):  # a zone: UTC, shifted
                secs = calendar.timegm(fields)
                if m.group(8) != "Z":
                    z = m.group(8)
                    shift = int(z[1:3]) * 3600 + int(z[4:6]) * 60
                    secs -= shift if z[0] == "+" else -shift
            else:
                secs = int(time.mktime(fields))
            time.strptime(f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}", "%Y-%m-%d %H:%M:%S")
        except (ValueError, OverflowError):
            raise ValueError(f"invalid time {value!r}: no such date") from None
        return secs * 1_000_000_000 + int((m.group(7) or ".0")[1:].ljust(9, "0"))
    try:
        ago = parse_duration(text)
    except ValueError:
        ago = None
    if ago is None or not text or text[-1].isdigit():
        raise ValueError(f"invalid time {value!r} (an RFC 3339 time like 2024-05-01T10:00:00Z, a Unix "
                         "timestamp, or a duration like 10m)")
    return int(((time.time() if now is None else now) - ago) * 1_000_000_000)


def format_time_ns(ns: int) -> str:
    """RFC 3339 in UTC with nine fraction digits, as ``docker logs --timestamps`` prints."""
    import time

    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
