"""Strict parsing of the decimal numbers a peer sends (sizes, offsets, page lengths).

Python's ``int()`` and ``str.isdigit()`` accept far more than HTTP's ``1*DIGIT``: Unicode digits
(``"١٢"``), superscripts that ``isdigit`` admits but ``int`` rejects (``"²"``), signs, ``_``
separators, surrounding blanks, and thousands of digits (``int`` refuses more than 4300 and a
huge value costs work everywhere it goes). Every number taken from a request or reply goes
through here instead: ASCII ``0-9`` only, at most ``max_digits`` of them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Final


# 18 digits stay below 2**63: what Go's int64 (Distribution, S3 object sizes) can hold.
MAX_DIGITS: Final = 18

_DIGITS: Final = frozenset("0123456789")


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of ASCII ``0-9`` (any length)."""
    return bool(text) and _DIGITS.issuperset(text)


def parse_uint(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of ``1*DIGIT`` with at most ``max_digits`` digits; None for anything else."""
    if len(text) > max_digits or not is_ascii_digits(text):
        return None
    return int(text)
