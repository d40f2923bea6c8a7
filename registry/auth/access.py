"""Per-repository access rules and the caller's identity.

Rules are tried in order and the first one that matches both the repository and the caller
decides (its actions may be empty: a deny rule). A rule matches the caller when the caller is
named in ``users`` (``"*"`` = any authenticated user), is in one of its ``groups``, or the rule
says ``anonymous: true`` (everyone, logged in or not). A rule naming nobody matches everyone.

Without any rules: with authentication off everyone may do everything; with it on, every
authenticated user may do everything and anonymous callers nothing (Distribution's behaviour).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyreg.registry.auth.scope import Scope
from pyreg.storage.names import name_problem

ACTIONS: frozenset[str] = frozenset({"pull", "push", "delete"})
CATALOG = Scope("registry", "catalog", frozenset({"*"}))


class AccessConfigError(ValueError):
    """An access rule that cannot be understood; the message names the bad key."""


@dataclass(frozen=True)
class Identity:
    """Who is calling: a user name (None = anonymous) and the groups the user is in."""

    name: str | None = None
    groups: frozenset[str] = frozenset()

    @property
    def anonymous(self) -> bool:
        return self.name is None


ANONYMOUS = Identity()


@dataclass(frozen=True)
class Rule:
    repository: str
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    anonymous: bool = False

    def matches_caller(self, who: Identity) -> bool:
        if self.anonymous or not (self.users or self.groups):
            return True
        if who.anonymous:
            return False
        return "*" in self.users or who.name in self.users or bool(self.groups & who.groups)

    def matches_repository(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.repository)


def _strings(value: Any, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise AccessConfigError(f"{where}: expected a list of strings")
    return frozenset(value)


def parse_rules(raw: Sequence[Mapping[str, Any]] | None) -> list[Rule]:
    """Turn the ``access:`` config list into rules, naming the bad key on error."""
    rules: list[Rule] = []
    for i, item in enumerate(raw or []):
        where = f"access[{i}]"
        if not isinstance(item, Mapping):
            raise AccessConfigError(f"{where}: expected a mapping")
        unknown = set(item) - {"repository", "users", "groups", "anonymous", "actions"}
        if unknown:
            raise AccessConfigError(f"{where}.{sorted(unknown)[0]}: unknown key")
        repo = item.get("repository", "*")
        if not isinstance(repo, str) or not repo:
            raise AccessConfigError(f"{where}.repository: expected a name pattern")
        actions = _strings(item.get("actions", []), f"{where}.actions")
        bad = actions - ACTIONS - {"*"}
        if bad:
            raise AccessConfigError(f"{where}.actions: unknown action {sorted(bad)[0]!r}")
        if "*" in actions:
            actions = ACTIONS
        anonymous = item.get("anonymous", False)
        if not isinstance(anonymous, bool):
            raise AccessConfigError(f"{where}.anonymous: expected true or false")
        rules.append(
            Rule(
                repository=repo,
                actions=actions,
                users=_strings(item.get("users"), f"{where}.users"),
                groups=_strings(item.get("groups"), f"{where}.groups"),
                anonymous=anonymous,
            )
        )
    return rules


@dataclass
class AccessPolicy:
    """Decides what a caller may do to a repository."""

    rules: list[Rule] = field(default_factory=list)
    auth_enabled: bool = True
    # group name -> members, for authenticators that know no groups themselves (htpasswd)
    group_members: Mapping[str, Iterable[str]] = field(default_factory=dict)

    def identity(self, name: str | None, groups: Iterable[str] = ()) -> Identity:
        """The identity of ``name`` with its configured groups added."""
        if name is None:
            return ANONYMOUS
        extra = {g for g, members in self.group_members.items() if name in members}
        return Identity(name, frozenset(groups) | extra)

    def actions(self, who: Identity, repository: str) -> frozenset[str]:
        for rule in self.rules:
            if rule.matches_repository(repository) and rule.matches_caller(who):
                return rule.actions
        if not self.rules and (not self.auth_enabled or not who.anonymous):
            return ACTIONS
        return frozenset()

    def allows(self, who: Identity, repository: str, action: str) -> bool:
        return action in self.actions(who, repository)

    def may_list_catalog(self, who: Identity) -> bool:
        """The catalog itself is open to every authenticated caller (it is filtered by pull);
        anonymous callers see it only when some rule lets anonymous callers pull."""
        if not who.anonymous or not self.auth_enabled:
            return True
        if not self.rules:
            return False
        return any(r.anonymous and "pull" in r.actions for r in self.rules)

    def grant(self, who: Identity, asked: Iterable[Scope]) -> list[Scope]:
        """What to put in a token: the asked scopes cut down to what the rules allow."""
        granted: list[Scope] = []
        for s in asked:
            if s.type == "repository" and name_problem(s.name) is None:  # /token refuses them first
                acts = s.actions & self.actions(who, s.name) if "*" not in s.actions else (
                    self.actions(who, s.name)
                )
                if acts:
                    granted.append(Scope(s.type, s.name, frozenset(acts), s.resource_class))
            elif s.type == "registry" and s.name == "catalog" and self.may_list_catalog(who):
                granted.append(CATALOG)
        return granted
