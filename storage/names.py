"""The repository-name and tag grammar of the OCI distribution spec (spec.md, "Pulling manifests").

The client's full reference parser (registry host, defaults) builds on these same patterns in
``storage.reference``; nothing else in the project spells them out again.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False  # typing: milliseconds of every pull's start-up, for annotations only
if TYPE_CHECKING:
    from typing import Final

PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN: Final = rf"{PATH_COMPONENT}(?:/{PATH_COMPONENT})*"
TAG_PATTERN: Final = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
NAME_MAX_LENGTH: Final = 255

# compiled on first use (re's cache): a command that checks no name pays nothing at import
_NAME = rf"^{NAME_PATTERN}$"
_TAG = rf"^{TAG_PATTERN}$"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid repository name, or None when it is."""
    if not name:
        return "repository name must not be empty"
    if len(name) > NAME_MAX_LENGTH:
        return f"repository name must not be more than {NAME_MAX_LENGTH} characters"
    if name != name.lower():
        return "repository name must be lowercase"
    if not re.match(_NAME, name):
        return f"repository name {name!r} does not match {NAME_PATTERN}"
    return None


def is_valid_tag(tag: str) -> bool:
    return bool(re.match(_TAG, tag))
