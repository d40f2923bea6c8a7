"""Digests: parsing, validation and streaming hashers (OCI image-spec descriptor.md).

Only sha256 and sha512 are registered algorithms; the grammar is
``algorithm ":" encoded`` with lower-case hex of the algorithm's exact length.
"""

from __future__ import annotations

import re

from pyreg.storage.frozen import Frozen

TYPE_CHECKING = False  # typing (Final, Protocol): milliseconds of every pull's start-up
if TYPE_CHECKING:
    from typing import Final

    from pyreg.storage.contentproto import Hasher as Hasher
else:

    def __getattr__(name: str) -> object:
        """``Hasher``, a Protocol, imported on first use."""
        if name == "Hasher":
            from pyreg.storage.contentproto import Hasher

            return Hasher
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ALGORITHM_LENGTHS: Final[dict[str, int]] = {"sha256": 64, "sha512": 128}
DEFAULT_ALGORITHM: Final = "sha256"

# The full grammar admits algorithms we do not implement; those are "unsupported", not "malformed".
_DIGEST_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


class DigestError(ValueError):
    """A digest string is malformed or uses an algorithm we do not support."""

    def __init__(self, value: str, reason: str, unsupported: bool = False) -> None:
        super().__init__(f"{reason}: {value!r}")
        self.value = value
        self.unsupported = unsupported


class Digest(Frozen):
    """A validated ``algorithm:hex`` digest (immutable; compared, hashed and ordered as
    ``(algorithm, hex)``)."""

    __slots__ = ("algorithm", "hex")
    algorithm: str
    hex: str

    def __init__(self, algorithm: str, hex: str) -> None:
        self._set("algorithm", algorithm)
        self._set("hex", hex)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and validate; raise DigestError naming what is wrong."""
        if not _DIGEST_GRAMMAR.match(value):
            raise DigestError(value, "malformed digest")
        algorithm, _, encoded = value.partition(":")
        expected = ALGORITHM_LENGTHS.get(algorithm)
        if expected is None:
            raise DigestError(value, f"unsupported digest algorithm {algorithm!r}", unsupported=True)
        if len(encoded) != expected or not re.fullmatch(r"[a-f0-9]+", encoded):
            raise DigestError(value, f"{algorithm} digest must be {expected} lower-case hex characters")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
        """Digest of bytes held in memory (manifests, configs)."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(algorithm, hasher.hexdigest())


def is_supported_algorithm(algorithm: str) -> bool:
    return algorithm in ALGORITHM_LENGTHS


def new_hasher(algorithm: str = DEFAULT_ALGORITHM) -> Hasher:
    """A fresh streaming hasher for a supported algorithm."""
    if algorithm not in ALGORITHM_LENGTHS:
        raise DigestError(algorithm, f"unsupported digest algorithm {algorithm!r}", unsupported=True)
    # lazy: loading OpenSSL costs milliseconds a command that hashes nothing skips; and OpenSSL's
    # constructor straight from _hashlib, as hashlib.new calls it, without hashlib.py's own import
    # (its table of constructors, _blake2): hashlib only where OpenSSL lacks the algorithm
    try:
        import _hashlib

        return _hashlib.new(algorithm)
    except (ImportError, ValueError):
        import hashlib

        return hashlib.new(algorithm)


class DigestMismatchError(ValueError):
    """Bytes did not hash to the digest they were announced with."""

    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class DigestVerifier:
    """Hashes a stream as it passes and checks it against the expected digest at the end."""

    def __init__(self, expected: Digest) -> None:
        self.expected = expected
        self._hasher = new_hasher(expected.algorithm)
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hasher.update(data)
        self.size += len(data)

    def actual(self) -> Digest:
        return Digest(self.expected.algorithm, self._hasher.hexdigest())

    def verify(self) -> None:
        actual = self.actual()
        if actual != self.expected:
            raise DigestMismatchError(self.expected, actual)


def chain_ids(diff_ids: list[str]) -> list[str]:
    """ChainID(L1) = DiffID(L1); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        Digest.parse(diff_id)
        out.append(diff_id if not out else str(Digest.of(f"{out[-1]} {diff_id}".encode())))
    return out
