"""Variable expansion in Dockerfile words, as BuildKit's ``shell.Lex`` does it.

The builder (not a shell) expands ``$v``, ``${v}``, ``${v:-w}``, ``${v-w}``, ``${v:+w}``, ``${v+w}``,
``${v:?msg}``, ``${v?msg}``, BuildKit's ``${v#p}``/``${v##p}``/``${v%p}``/``${v%%p}`` and
``${v/p/r}``/``${v//p/r}``; it removes quotes (``'…'`` literal, ``"…"`` with ``$`` still expanded) and
escape characters. Only some instructions are expanded by the builder (``EXPANDED``); RUN, CMD,
ENTRYPOINT and SHELL are left to the shell inside the container, and ONBUILD triggers are expanded
when they fire in the child build.

Word splitting (``expand_words``) happens only where BuildKit does it: EXPOSE. Everywhere else one
word in gives one string out, spaces from values included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Instructions whose arguments the builder expands (Dockerfile reference, "Environment replacement").
EXPANDED = frozenset({"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME",
                      "WORKDIR", "ARG"})
# Flags whose values are expanded (BuildKit expands them with the same scope; FROM's with the global
# ARGs only; each ``--mount`` field value).
EXPANDED_FLAGS = {"COPY": ("from", "chown", "chmod"), "ADD": ("chown", "chmod", "checksum"),
                  "FROM": ("platform",), "RUN": ("mount",)}

_SPECIAL_PARAMS = "@*#?-$!0"


class ExpandError(ValueError):
    """A word that cannot be expanded (unbalanced quotes, ``${``…, ``${v:?}`` on an unset v)."""


class _Words:
    """BuildKit's wordsStruct: characters from expansions split on whitespace, quoted text never."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            text = "".join(self.word)
            if self.in_word and text:
                self.words.append(text)
                self.word = []
                self.in_word = False
        else:
            self.add_raw(ch)

    def add_raw(self, text: str) -> None:
        self.word.append(text)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def result(self) -> list[str]:
        if self.word and "".join(self.word):
            self.words.append("".join(self.word))
        return self.words


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str] | None, escape: str, *, raw_quotes: bool = False,
                 raw_escapes: bool = False, skip_unset: bool = False, skip_quotes: bool = False):
        self.s = text
        self.i = 0
        self.env = env if env is not None else {}
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_quotes = skip_quotes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.i += 1
        return ch

    def lookup(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            self.unmatched.add(name)
        else:
            self.matched.add(name)
        return value

    def process(self, stop: str = "") -> tuple[str, list[str]]:
        out: list[str] = []
        words = _Words()
        found = False
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                found = True
                break
            if ch in "'\"" and self.skip_quotes:
                words.add_char(self.next())
                out.append(ch)
            elif ch == "'":
                tmp = self.single_quote()
                out.append(tmp)
                words.add_raw(tmp)
            elif ch == '"':
                tmp = self.double_quote()
                out.append(tmp)
                words.add_raw(tmp)
            elif ch == "$":
                tmp = self.dollar()
                out.append(tmp)
                words.add_string(tmp)
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        words.add_raw(ch)
                        out.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    words.add_raw(ch)
                else:
                    words.add_char(ch)
                out.append(ch)
        if stop and not found:
            raise ExpandError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(out), words.result()

    def single_quote(self) -> str:
        # All chars between single quotes are taken as-is; no escapes inside.
        self.next()
        out = ["'"] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise ExpandError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quote(self) -> str:
        # Chars up to the next " are literal except $ expansions; the escape character escapes only
        # ", $ and itself (others stay, with the escape character).
        self.next()
        out = ['"'] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise ExpandError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self.peek()
                if not nxt:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        out: list[str] = []
        while self.peek():
            ch = self.peek()
            if not out and ch.isdigit():
                while self.peek().isdigit():
                    out.append(self.next())
                return "".join(out)
            if not out and ch in _SPECIAL_PARAMS:
                return self.next()
            if not (ch.isalnum() or ch == "_"):
                break
            out.append(self.next())
        return "".join(out)

    def dollar(self) -> str:
        self.next()
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.skip_unset else ""
            return value
        self.next()
        ch = self.peek()
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        if ch in "{}:":
            raise ExpandError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.skip_unset else ""
            return value
        if ch == ":":
            op = self.next()
            if op in ("-", "+", "?"):
                word, _ = self.process("}")
                value = self.lookup(name)
                empty = value is None or value == ""
                if op == "-":
                    return word if empty else value  # type: ignore[return-value]
                if op == "+":
                    return "" if empty else word
                if empty:
                    default = "is not allowed to be unset" if value is None else "is not allowed to be empty"
                    raise ExpandError(f"{name}: {word or default}")
                return value  # type: ignore[return-value]
            raise ExpandError(f"unsupported modifier ({op}) in substitution")
        if ch in ("-", "+", "?"):
            word, _ = self.process("}")
            value = self.lookup(name)
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return "" if value is None else word
            if value is None:
                raise ExpandError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in ("#", "%"):
            greedy = self.peek() == ch
            if greedy:
                self.next()
            pattern = self.raw_word("}")
            value = self.lookup(name) or ""
            return _trim(value, pattern, prefix=ch == "#", longest=greedy)
        if ch == "/":
            every = self.peek() == "/"
            if every:
                self.next()
            pattern = self.raw_word("/}")
            replacement = ""
            if self.peek() == "/":
                self.next()
                replacement, _ = self.process("}")
            else:
                self.next()
            value = self.lookup(name) or ""
            return _replace(value, pattern, replacement, every)
        if not ch:
            raise ExpandError("syntax error: missing '}'")
        raise ExpandError(f"unsupported modifier ({ch}) in substitution")

    def raw_word(self, stops: str) -> str:
        """A pattern up to one of ``stops`` (the stop left unread for ``/``, read for ``}``):
        expansions done, quotes removed, escapes kept so the pattern can match ``*`` literally."""
        saved = self.raw_escapes
        self.raw_escapes = True
        try:
            out: list[str] = []
            while self.peek() and self.peek() not in stops:
                ch = self.peek()
                if ch == "$":
                    out.append(self.dollar())
                elif ch == "'":
                    out.append(_escape_glob(self.single_quote()))
                elif ch == '"':
                    out.append(_escape_glob(self.double_quote()))
                else:
                    ch = self.next()
                    if ch == self.escape and self.peek():
                        out.append("\\" + self.next())
                    else:
                        out.append(ch)
            if not self.peek():
                raise ExpandError("syntax error: missing '}'")
            if self.peek() == "}":
                self.next()
            return "".join(out)
        finally:
            self.raw_escapes = saved


def _escape_glob(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _pattern_regex(pattern: str, greedy: bool) -> str:
    """A shell glob (``*``, ``?``, ``[…]``, backslash escapes) as a regular expression."""
    out: list[str] = []
    i = 0
    star = ".*" if greedy else ".*?"
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _trim(value: str, pattern: str, prefix: bool, longest: bool) -> str:
    rx = _pattern_regex(pattern, True)
    candidates = range(len(value) + 1)
    order = reversed(candidates) if longest else candidates
    for k in order:
        if prefix and re.fullmatch(rx, value[:k], re.S):
            return value[k:]
        if not prefix and re.fullmatch(rx, value[len(value) - k:], re.S):
            return value[:len(value) - k]
    return value


def _replace(value: str, pattern: str, replacement: str, every: bool) -> str:
    if not pattern:
        return value
    rx = re.compile(_pattern_regex(pattern, True), re.S)
    return rx.sub(lambda _m: replacement, value, count=0 if every else 1)


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word → one string: variables replaced, quotes and escapes removed."""
    return _Lexer(word, env, escape).process()[0]


def expand_words(word: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """One word → words, split on unquoted whitespace (also whitespace from values), as for EXPOSE."""
    return _Lexer(word, env, escape).process()[1]


def expand_with_matches(word: str, env: Mapping[str, str], escape: str = "\\") -> tuple[str, set[str]]:
    """``expand`` plus the names it used that were set (the cache key cares which args a step read)."""
    lexer = _Lexer(word, env, escape)
    result = lexer.process()[0]
    return result, lexer.matched


def expand_heredoc(body: str, env: Mapping[str, str]) -> str:
    """A COPY/ADD heredoc body with an unquoted delimiter: ``$`` expansions and backslash escapes are
    processed, quotes are text (BuildKit's raw expander: escape is always ``\\``)."""
    return _Lexer(body, env, "\\", skip_quotes=True).process()[0]


def lex_words(text: str, escape: str = "\\", *, raw_quotes: bool = False,
              raw_escapes: bool = False) -> list[str]:
    """Split ``text`` into words without expanding (unset variables kept as written), optionally
    keeping quotes and escapes — the parser uses it to find heredoc markers."""
    lexer = _Lexer(text, {}, escape, raw_quotes=raw_quotes, raw_escapes=raw_escapes, skip_unset=True)
    return lexer.process()[1]
