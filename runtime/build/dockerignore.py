"""``.dockerignore`` with Docker's matching rules (moby/patternmatcher and its ignorefile reader).

- one pattern a line; a line whose first character is ``#`` is a comment; surrounding whitespace is
  trimmed; empty lines are skipped;
- ``!pattern`` re-includes; the last matching pattern wins;
- patterns are cleaned like Go's ``filepath.Clean`` and a leading ``/`` dropped (so ``/a``, ``./a``
  and ``a`` are one pattern); they match paths relative to the context root;
- ``*`` matches any run of non-``/`` characters, ``?`` one non-``/`` character, ``[…]`` a class,
  ``\\`` escapes; ``**`` matches any number of directories (also none);
- a path is ignored when it or one of its parent directories matches (so ``dir`` ignores everything
  under it, unless an exception re-includes a path inside);
- ``<Dockerfile>.dockerignore`` next to the Dockerfile is used instead of the context's
  ``.dockerignore`` when it exists.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from pyreg.runtime.build.records import record


def clean(path: str) -> str:
    """Go's ``path.Clean``: ``//``, ``.``, ``..`` resolved lexically; "" → "."."""
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    text = "/".join(out)
    if rooted:
        return "/" + text
    return text or "."


def read_patterns(text: str) -> list[str]:
    """The patterns of a ``.dockerignore`` file's text, normalised as Docker reads them."""
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


_SPECIALS = set(".+()|{}$^")


def _compile(pattern: str) -> re.Pattern[str]:
    rx: list[str] = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                rx.append(".*" if i >= n else "(.*/)?")
                continue
            rx.append("[^/]*")
        elif ch == "?":
            rx.append("[^/]")
        elif ch == "\\":
            if i + 1 < n:
                i += 1
                rx.append(re.escape(pattern[i]))
            else:
                rx.append(r"\\")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"syntax error in pattern {pattern!r}")
            body = pattern[i + 1:end]
            if body.startswith("^") or body.startswith("!"):
                body = "^" + body[1:]
            rx.append("[" + body + "]")
            i = end
        elif ch in _SPECIALS:
            rx.append("\\" + ch)
        else:
            rx.append(re.escape(ch) if not ch.isalnum() and ch not in "/_-" else ch)
        i += 1
    rx.append("$")
    return re.compile("".join(rx), re.S)


@record(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


class IgnoreMatcher:
    """Decides which context paths are left out. ``IgnoreMatcher([])`` ignores nothing."""

    def __init__(self, patterns: list[str]):
        self.patterns: list[_Pattern] = []
        for p in patterns:
            exclusion = p.startswith("!")
            body = p[1:] if exclusion else p
            if not body:
                raise ValueError("illegal exclusion pattern: \"!\"")
            body = clean(body)
            try:
                self.patterns.append(_Pattern(p, exclusion, _compile(body)))
            except (ValueError, re.error) as e:
                raise ValueError(f"invalid .dockerignore pattern {p!r}: {e}") from None
        self.has_exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def is_ignored(self, path: str) -> bool:
        """``path`` is relative to the context root, ``/``-separated."""
        path = clean(path.lstrip("/"))
        if path == ".":
            return False
        parent = posixpath.dirname(path)
        parents = parent.split("/") if parent else []
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            hit = bool(pat.regex.match(path))
            if not hit and parents:
                for i in range(1, len(parents) + 1):
                    if pat.regex.match("/".join(parents[:i])):
                        hit = True
                        break
            if hit:
                matched = not pat.exclusion
        return matched

    def may_include_under(self, directory: str) -> bool:
        """Whether some exception pattern could re-include a path below an ignored ``directory``
        (then the walker must look inside it)."""
        if not self.has_exclusions:
            return False
        directory = clean(directory.lstrip("/"))
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            body = clean(pat.text[1:])
            # Compare the literal directory components before the first wildcard.
            fixed: list[str] = []
            for comp in body.split("/"):
                if any(c in comp for c in "*?[\\"):
                    break
                fixed.append(comp)
            dparts = directory.split("/")
            n = min(len(fixed), len(dparts))
            if fixed[:n] == dparts[:n]:
                return True
        return False


def ignore_file_for(context_dir: Path, dockerfile: Path | None) -> Path | None:
    """The ignore file Docker uses: ``<Dockerfile>.dockerignore`` next to the Dockerfile, else the
    context's ``.dockerignore``, else None."""
    if dockerfile is not None:
        candidate = dockerfile.parent / (dockerfile.name + ".dockerignore")
        if candidate.is_file():
            return candidate
    default = context_dir / ".dockerignore"
    return default if default.is_file() else None


def load(context_dir: Path, dockerfile: Path | None = None) -> IgnoreMatcher:
    """The matcher for a build: read the ignore file ``ignore_file_for`` picks (none → ignore nothing)."""
    path = ignore_file_for(context_dir, dockerfile)
    if path is None:
        return IgnoreMatcher([])
    return IgnoreMatcher(read_patterns(path.read_text(encoding="utf-8", errors="replace")))
