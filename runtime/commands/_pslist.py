"""``pyreg ps --filter`` and the fields ``--format`` sees, kept apart from ps's table.

Filters as docker's: the same key given twice matches either value, different keys must all
match. ``name`` and ``id`` match a substring / prefix (docker: regexp / prefix), ``status`` the
state, ``ancestor`` the image as named or its digest, ``label`` ``KEY`` or ``KEY=VALUE``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyreg.runtime.record import Container

STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def is_build(rec: Container) -> bool:
    """A ``pyreg build`` RUN step's container (runtime/build/runstep.py marks it): the builder
    owns it, so, as docker's build containers, ps does not list it and rm / prune never touch it."""
    from pyreg.runtime.state import is_build as marked

    return marked(rec)


def labels(rec: Container) -> dict[str, str]:
    value = rec.config.extra.get("labels") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _ancestor(rec: Container, want: str) -> bool:
    names = {rec.image, rec.image_name, rec.image_digest}
    if ":" not in want.rsplit("/", 1)[-1] and "@" not in want:
        names |= {n.rsplit(":", 1)[0] for n in (rec.image, rec.image_name) if n}
    return want in names or any(n.endswith("/" + want) for n in names if n)


def _label(rec: Container, want: str) -> bool:
    key, sep, value = want.partition("=")
    have = labels(rec)
    return key in have and (not sep or have[key] == value)


_MATCHERS: dict[str, Callable[[Container, str], bool]] = {
    "status": lambda r, v: (r.status or "created") == v,
    "name": lambda r, v: re.search(v, r.name) is not None,
    "id": lambda r, v: r.id.startswith(v),
    "ancestor": _ancestor,
    "label": _label,
}


def filters_or_complain(items: list[str]) -> dict[str, list[str]] | None:
    """``--filter`` values parsed, or None after one line on stderr naming the bad one."""
    import sys

    try:
        return parse_filters(items)
    except ValueError as e:
        print(f"pyreg: {e}", file=sys.stderr)
        return None


def parse_filters(items: list[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` strings into {key: [values]}; ``ValueError`` names a bad one."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in _MATCHERS:
            raise ValueError(f"invalid filter {item!r} (supported: "
                             f"{', '.join(k + '=…' for k in _MATCHERS)})")
        if key == "status" and value not in STATUSES:
            raise ValueError(f"invalid filter 'status={value}' (one of {', '.join(STATUSES)})")
        if key == "name":
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"invalid filter 'name={value}': {e}") from None
        out.setdefault(key, []).append(value)
    return out


def matches(rec: Container, filters: dict[str, list[str]]) -> bool:
    return all(any(_MATCHERS[k](rec, v) for v in values) for k, values in filters.items())


def fields(rec: Container, status: str, created: str, command: str) -> dict[str, Any]:
    """What ``{{.Field}}`` sees: docker's names (ID, Image, Command, CreatedAt, RunningFor,
    Status, State, Names, Labels)."""
    return {"ID": rec.id[:12], "Image": rec.image, "Command": f'"{command}"', "CreatedAt": rec.created,
            "RunningFor": created, "Status": status, "State": rec.status or "created", "Names": rec.name,
            "Labels": ",".join(f"{k}={v}" for k, v in labels(rec).items()), "Ports": "", "Size": "",
            "Mounts": ",".join(c for _, c, _ in rec.config.volumes)}


HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
           "RunningFor": "CREATED", "Status": "STATUS", "State": "STATE", "Names": "NAMES",
           "Labels": "LABELS", "Ports": "PORTS", "Size": "SIZE", "Mounts": "MOUNTS"}


def print_format(fmt: str, items: list[dict[str, Any]]) -> int:
    """``--format``: each container through the template, with ps's column headers."""
    from pyreg.storage.gotemplate import print_format as render

    return render(fmt, items, HEADERS)
