"""The subset of Go's text/template that ``docker ps/images/inspect --format`` users write.

Shared by the client (images, inspect) and the runtime (ps), hence here: storage imports nothing
of ours, so both may import it. Supported, as docker renders it:

- ``{{.Field}}``, ``{{.A.B}}`` (map keys and attributes; a key is also found case-insensitively,
  since people write ``{{.Id}}`` for ``{{.ID}}``), ``{{.}}``;
- functions ``json``, ``upper``, ``lower``, ``title``, ``len``, ``join LIST SEP``,
  ``index MAP KEY``, ``println``, and pipelines ``{{.X | json}}``;
- the ``table`` prefix: a header row (the caller names each field's column) and tab-separated
  cells aligned as Go's tabwriter does (docker: min width 10, padding 3);
- ``\\t`` and ``\\n`` escapes written literally on a command line.

Anything else (``range``, ``if``, variables) is a ``TemplateError`` naming the action, never a
traceback or a silent wrong answer.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)


class TemplateError(ValueError):
    """A template outside the subset, or a field that is not there (Go: "can't evaluate field")."""


def _field(value: Any, name: str) -> Any:
    if isinstance(value, Mapping):
        if name in value:
            return value[name]
        folded = {str(k).lower(): k for k in value}
        if name.lower() in folded:
            return value[folded[name.lower()]]
        raise TemplateError(f"can't evaluate field {name}")
    if value is not None and hasattr(value, name):
        return getattr(value, name)
    raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")


def _path(value: Any, expr: str) -> Any:
    if expr == ".":
        return value
    for part in expr.lstrip(".").split("."):
        value = _field(value, part)
    return value


def _text(value: Any) -> str:
    """How Go prints a value with ``{{.}}``: maps and lists as ``map[k:v]`` / ``[a b]``."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(_text(v) for v in value) + "]"
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _index(value: Any, key: Any) -> Any:
    try:
        return value[key]
    except (KeyError, IndexError, TypeError):
        return None if isinstance(value, Mapping) else _raise(f"index {key!r} out of range")


def _raise(message: str) -> Any:
    raise TemplateError(message)


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "upper": lambda s: _text(s).upper(),
    "lower": lambda s: _text(s).lower(),
    "title": lambda s: _text(s).title(),
    "len": lambda v: len(v),
    "join": lambda items, sep: sep.join(_text(i) for i in items or []),
    "index": _index,
    "println": lambda *a: " ".join(_text(x) for x in a) + "\n",
    "print": lambda *a: "".join(_text(x) for x in a),
}


def _arg(token: str, data: Any) -> Any:
    if token.startswith("."):
        return _path(data, token)
    if token[:1] in "\"'`":
        return token[1:-1]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise TemplateError(f"unsupported template argument {token!r}")


def _command(words: list[str], data: Any, piped: tuple[Any, ...]) -> Any:
    head, rest = words[0], words[1:]
    if head in FUNCS:
        return FUNCS[head](*[_arg(w, data) for w in rest], *piped)
    if rest or piped or not (head.startswith(".")):
        raise TemplateError(f"unsupported template action {' '.join(words)!r} "
                            "(supported: .Field, json, upper, lower, title, len, join, index)")
    return _arg(head, data)


def _eval(action: str, data: Any) -> str:
    value: tuple[Any, ...] = ()
    for stage in action.split("|"):
        try:
            words = shlex.split(stage.strip(), posix=False)
        except ValueError as exc:
            raise TemplateError(f"bad template action {action!r}: {exc}") from None
        if not words:
            raise TemplateError(f"empty template action in {action!r}")
        value = (_command(words, data, value),)
    return value[0] if isinstance(value[0], str) else _text(value[0])


class Template:
    """A parsed ``--format`` value; ``table`` tells whether it asked for a header and alignment."""

    def __init__(self, text: str) -> None:
        text = text.replace("\\t", "\t").replace("\\n", "\n")
        self.table = text.startswith("table")
        if self.table:
            text = text[len("table"):].lstrip(" ")
        self.text = text
        self.parts: list[tuple[bool, str]] = []  # (is_action, text)
        pos = 0
        for m in _ACTION.finditer(text):
            self.parts.append((False, text[pos:m.start()]))
            self.parts.append((True, m.group(1)))
            pos = m.end()
        tail = text[pos:]
        if "{{" in tail or "}}" in tail:
            raise TemplateError(f"unclosed action in template {text!r}")
        self.parts.append((False, tail))
        for is_action, part in self.parts:
            if is_action and part.split()[:1] and part.split()[0] in ("range", "if", "with", "end", "else"):
                raise TemplateError(f"template action {{{{{part}}}}} is not supported")

    def render(self, data: Any) -> str:
        return "".join(_eval(p, data) if a else p for a, p in self.parts)

    def header(self, names: Mapping[str, str]) -> str:
        """The table's header row: each action's column name (``names`` maps a field to docker's
        heading, else the field upper-cased)."""
        out = []
        for is_action, part in self.parts:
            if not is_action:
                out.append(part)
                continue
            field = part.split("|")[0].strip().lstrip(".")
            out.append(names.get(field, field.upper() or "."))
        return "".join(out)


def align(lines: Iterable[str], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Tab-separated cells into columns, as docker's tabwriter (the last cell is not padded)."""
    rows = [line.split("\t") for line in lines]
    ncols = max((len(r) for r in rows), default=0)
    widths = [max([len(r[i]) for r in rows if len(r) > i + 1] + [0]) for i in range(ncols)]
    out = []
    for r in rows:
        cells = [c.ljust(max(widths[i] + padding, minwidth)) if i < len(r) - 1 else c
                 for i, c in enumerate(r)]
        out.append("".join(cells))
    return out


def render_all(fmt: str, items: Iterable[Any], headers: Mapping[str, str] | None = None) -> list[str]:
    """Every item through ``fmt``; with ``table`` a header first and the cells aligned."""
    tpl = Template(fmt)
    lines = [tpl.render(item) for item in items]
    if not tpl.table:
        return lines
    return align([tpl.header(headers or {}), *lines])


def print_format(fmt: str, items: list[Any], headers: dict[str, str] | None = None) -> int:
    """``--format TEMPLATE`` for a command: each item's line on stdout; a bad template is exit 1
    with one line on stderr, as docker's "template parsing error"."""
    import sys

    try:
        lines = render_all(fmt, items, headers)
    except TemplateError as e:
        print(f"pyreg: --format: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0
