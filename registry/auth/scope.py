"""The Docker token authentication scope grammar.

::

    scope         := resourcescope [ ' ' resourcescope ]*
    resourcescope := resourcetype ":" resourcename ":" action [ ',' action ]*
    resourcetype  := resourcetypevalue [ '(' resourcetypevalue ')' ]
    resourcename  := [ hostname '/' ] component [ '/' component ]*
    action        := /[a-z]*/

A resource name may itself hold a ``:`` (a hostname with a port), so the type is everything up
to the first colon and the actions everything after the last one. The grammar allows a hostname
in a name; a token request for this registry does not (``requested_scopes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pyreg.storage.names import name_problem

_TYPE = re.compile(r"^([a-z0-9]+)(?:\(([a-z0-9]+)\))?$")
_ACTION = re.compile(r"^(?:[a-z]*|\*)$")
_NAME = re.compile(r"^[A-Za-z0-9._:/-]+$")


class ScopeError(ValueError):
    """A scope string that does not follow the grammar."""


@dataclass(frozen=True)
class Scope:
    """One resource scope: ``type[(class)]:name:actions``."""

    type: str
    name: str
    actions: frozenset[str]
    resource_class: str = ""

    def __str__(self) -> str:
        rtype = f"{self.type}({self.resource_class})" if self.resource_class else self.type
        return f"{rtype}:{self.name}:{','.join(sorted(self.actions))}"

    def claim(self) -> dict[str, object]:
        """The ``access`` claim entry of a JWT for this scope."""
        entry: dict[str, object] = {"type": self.type, "name": self.name, "actions": sorted(self.actions)}
        if self.resource_class:
            entry["class"] = self.resource_class
        return entry


def parse_scope(text: str) -> Scope:
    """Parse one ``resourcescope``; raise ScopeError naming what is wrong."""
    first, last = text.find(":"), text.rfind(":")
    if first <= 0 or last == first:
        raise ScopeError(f"scope {text!r} is not type:name:actions")
    rtype, name, actions = text[:first], text[first + 1 : last], text[last + 1 :]
    m = _TYPE.match(rtype)
    if not m:
        raise ScopeError(f"scope {text!r}: bad resource type {rtype!r}")
    if not name or not _NAME.match(name):
        raise ScopeError(f"scope {text!r}: bad resource name {name!r}")
    acts = frozenset(a for a in actions.split(",") if a)
    for a in acts:
        if not _ACTION.match(a):
            raise ScopeError(f"scope {text!r}: bad action {a!r}")
    return Scope(m.group(1), name, acts, m.group(2) or "")


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Parse every scope in ``values`` (each may hold several, space-separated) and merge the
    actions of repeated resources, keeping first-seen order."""
    merged: dict[tuple[str, str, str], set[str]] = {}
    for value in values:
        for part in value.split():
            s = parse_scope(part)
            merged.setdefault((s.type, s.resource_class, s.name), set()).update(s.actions)
    return [Scope(t, n, frozenset(a), c) for (t, c, n), a in merged.items()]


def requested_scopes(values: Iterable[str]) -> list[Scope]:
    """The scopes of a token request: ``parse_scopes``, and every ``repository`` scope must name a
    valid repository (storage/names.py). Access rules are name patterns (``shared/*``), so a name
    like ``shared/../secret/app`` is refused here rather than matched against them."""
    scopes = parse_scopes(values)
    for s in scopes:
        if s.type == "repository":
            problem = name_problem(s.name)
            if problem is not None:
                raise ScopeError(f"scope {str(s)[:300]!r}: {problem[:300]}")
    return scopes


def format_scopes(scopes: Iterable[Scope]) -> str:
    """The space-separated form used in challenges and OAuth2 answers."""
    return " ".join(str(s) for s in scopes)
