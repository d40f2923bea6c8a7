"""Platforms (``os/architecture[/variant]``), the host's, and docker's warning when an image is
not for it. Apart from storage/graph.py (which names them too) so that a pull of a present image
(client/present.py) warns as the full pull does without importing the manifest model."""

from __future__ import annotations

from pyreg.storage.frozen import Frozen

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Any

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


class PlatformError(ValueError):
    """No child of an index is for the wanted platform."""


class Platform(Frozen):
    """``os/architecture[/variant]`` with Go's architecture names (``aarch64`` is ``arm64``)."""

    __slots__ = ("os", "architecture", "variant")  # noqa: RUF023 - __init__'s order (repr, pickling)
    os: str
    architecture: str
    variant: str | None

    def __init__(self, os: str, architecture: str, variant: str | None = None) -> None:
        self._set("os", os)
        self._set("architecture", architecture)
        self._set("variant", variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], _ARCH.get(parts[1], parts[1]), parts[2] if len(parts) == 3 else None)

    @classmethod
    def of(cls, p: dict[str, Any]) -> Platform:
        """A descriptor's ``platform`` object (validated to hold os and architecture)."""
        return cls(str(p.get("os", "?")), str(p.get("architecture", "?")), p.get("variant"))

    @classmethod
    def host(cls) -> Platform:
        import os  # uname, not the platform module: what platform.machine() reads, without its import

        machine = os.uname().machine.lower()
        variant = {"armv7l": "v7", "armv6l": "v6"}.get(machine)
        return cls("linux", _ARCH.get(machine, machine), variant)

    def matches(self, p: dict[str, Any] | None) -> bool:
        if not p:
            return False
        if p.get("os") != self.os or p.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        other = p.get("variant") or ("v8" if self.architecture == "arm64" else None)
        return other == self.variant


def platform_warning(config: dict[str, Any], host: Platform | None = None) -> str | None:
    """docker's warning for an image config whose platform is not this host's (it may still run,
    through binfmt emulation, or fail with 'exec format error': the user should know which)."""
    host = host or Platform.host()
    p = {k: config.get(k) for k in ("os", "architecture", "variant") if config.get(k)}
    if not p.get("os") or not p.get("architecture") or host.matches(p):
        return None
    return (f"WARNING: The requested image's platform ({Platform.of(p)}) does not match the "
            f"detected host platform ({host})")
