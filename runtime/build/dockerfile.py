"""Reading a Dockerfile into stages of instructions, as BuildKit's parser does.

Pure text → typed tree; no I/O, no variable expansion (that is ``expand``'s job and depends on the
ARG/ENV scope at each step, which only the executor knows). Words keep their quotes and escapes
exactly as written so that expansion later removes them the way BuildKit does.

The rules followed (Dockerfile reference, BuildKit ``frontend/dockerfile/parser``):
- parser directives (``# syntax=``, ``# escape=``, ``# check=``) only in the leading comment lines;
  the first other line (comment, blank, instruction, unknown directive) ends them; each once;
- a line ending in the escape character continues on the next; comment lines and blank lines inside a
  continuation are skipped (blank ones give a warning); whitespace at the start of continuation lines
  is kept, at the start of an instruction dropped;
- ``# …`` lines are comments; a ``#`` elsewhere is part of the arguments;
- keywords are case-insensitive; flags ``--name[=value]`` come right after the keyword;
- JSON (exec) form when the arguments parse as a JSON array of strings; otherwise shell form (an array
  holding a non-string is an error, as in BuildKit);
- heredocs (``<<EOF``, ``<<-EOF``, quoted delimiters) for RUN, COPY, ADD (and ONBUILD of those).

Hand-written rather than ``dockerfile-parse``: that library (2.0) reads heredoc bodies as instructions,
leaves flags and the per-keyword argument shapes to the caller and reports no file:line errors.
"""

from __future__ import annotations

import json
import re

from pyreg.runtime.build.records import field, record

# Instructions and the flags each accepts (name → repeatable). BuildKit's stable syntax.
INSTRUCTION_FLAGS: dict[str, dict[str, bool]] = {
    "ADD": {"chown": False, "chmod": False, "link": False, "keep-git-dir": False, "checksum": False,
            "exclude": True, "unpack": False},
    "ARG": {},
    "CMD": {},
    "COPY": {"from": False, "chown": False, "chmod": False, "link": False, "parents": False,
             "exclude": True},
    "ENTRYPOINT": {},
    "ENV": {},
    "EXPOSE": {},
    "FROM": {"platform": False},
    "HEALTHCHECK": {"interval": False, "timeout": False, "start-period": False, "start-interval": False,
                    "retries": False},
    "LABEL": {},
    "MAINTAINER": {},
    "ONBUILD": {},
    "RUN": {"mount": True, "network": False, "security": False},
    "SHELL": {},
    "STOPSIGNAL": {},
    "USER": {},
    "VOLUME": {},
    "WORKDIR": {},
}
BOOL_FLAGS = {("ADD", "link"), ("COPY", "link"), ("ADD", "keep-git-dir"), ("COPY", "parents"),
              ("ADD", "unpack")}
HEREDOC_INSTRUCTIONS = frozenset({"RUN", "COPY", "ADD"})
KNOWN_DIRECTIVES = frozenset({"syntax", "escape", "check"})

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)([^<]*)$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")


@record(frozen=True)
class Location:
    """Where an instruction is: file name as the user gave it, first and last line (1-based)."""

    file: str
    line: int
    end_line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class DockerfileError(ValueError):
    """A Dockerfile that cannot be built; ``str`` is ``Dockerfile:12: RUN: message``."""

    def __init__(self, message: str, location: Location | None = None, instruction: str | None = None):
        self.message = message
        self.location = location
        self.instruction = instruction
        parts = [str(location)] if location else []
        if instruction:
            parts.append(instruction)
        parts.append(message)
        super().__init__(": ".join(parts))


@record(frozen=True)
class Flag:
    """One ``--name=value`` (value None for a bare ``--name``), in the order written."""

    name: str
    value: str | None


@record(frozen=True)
class Heredoc:
    """A here-document attached to an instruction.

    ``body`` is the text between the line after the instruction and the delimiter line, each line
    with its newline; for ``<<-`` the leading tabs are already removed. ``expand`` is False when the
    delimiter was quoted (then no variable expansion happens in the body, for COPY/ADD).
    """

    name: str
    body: str
    expand: bool
    chomp_tabs: bool
    fd: int | None = None
    raw: str = ""  # the body exactly as written (tabs kept), for handing a whole script to a shell


@record(frozen=True)
class ArgDecl:
    """``ARG name[=default]``; ``default`` unexpanded (None when there is none)."""

    name: str
    default: str | None


@record
class Instruction:
    """One instruction, unexpanded.

    ``args`` depends on the keyword, as BuildKit's line parsers make it:
    exec form → the JSON list; RUN/CMD/ENTRYPOINT/SHELL shell form → ``[rest]``;
    COPY/ADD/VOLUME/EXPOSE/FROM shell form → whitespace-split words (quotes kept, expansion removes them);
    ENV/LABEL → ``[k1, v1, k2, v2, …]`` (words with quotes kept); ARG → words (``name`` or ``name=value``);
    HEALTHCHECK → ``[TYPE, *cmd]``; ONBUILD → ``[inner keyword, *inner args]`` (see ``trigger``);
    USER/WORKDIR/STOPSIGNAL/MAINTAINER → ``[rest]``.
    """

    keyword: str
    flags: list[Flag]
    args: list[str]
    exec_form: bool
    heredocs: list[Heredoc]
    original: str
    location: Location
    rest: str = ""
    trigger: Instruction | None = None

    def error(self, message: str) -> DockerfileError:
        return DockerfileError(message, self.location, self.keyword)

    def flag(self, name: str, default: str | None = None) -> str | None:
        """The value of a single-valued flag (``""`` for a bare ``--name``), or ``default``."""
        for f in self.flags:
            if f.name == name:
                return "" if f.value is None else f.value
        return default

    def flag_values(self, name: str) -> list[str]:
        """All values of a repeatable flag (``--mount``, ``--exclude``), in order."""
        return ["" if f.value is None else f.value for f in self.flags if f.name == name]

    def bool_flag(self, name: str) -> bool:
        """A boolean flag: bare ``--link`` or ``--link=true`` is True (values checked at parse)."""
        v = self.flag(name)
        return v is not None and v in ("", "true")

    # --- keyword-specific views (raw words; pass them through expand.expand) -------------------------

    def pairs(self) -> list[tuple[str, str]]:
        """ENV/LABEL key/value pairs, both forms. (MAINTAINER sets the image's ``author``, not a label,
        in docker and BuildKit alike; its text is ``args[0]``, not expanded.)"""
        return [(self.args[i], self.args[i + 1]) for i in range(0, len(self.args), 2)]

    def arg_decls(self) -> list[ArgDecl]:
        """ARG's declarations."""
        out = []
        for word in self.args:
            name, eq, default = word.partition("=")
            out.append(ArgDecl(name, default if eq else None))
        return out

    def sources_dest(self) -> tuple[list[str], str]:
        """COPY/ADD: source words (heredoc sources included as their ``<<NAME`` word) and destination."""
        return self.args[:-1], self.args[-1]

    def heredoc_for(self, word: str) -> Heredoc | None:
        """The heredoc a COPY/ADD source word like ``<<EOF`` names, if it is one."""
        m = _HEREDOC_WORD.match(word)
        if not m or not m.group(3):
            return None
        name = _heredoc_name(m.group(3))[0]
        return next((h for h in self.heredocs if h.name == name), None)

    def command(self) -> list[str]:
        """RUN/CMD/ENTRYPOINT/SHELL: the JSON list, or ``[shell-form text]``."""
        return list(self.args)

    def onbuild_expression(self) -> str:
        """ONBUILD: the trigger as the image config's ``OnBuild`` stores it (BuildKit: the original
        text without ``ONBUILD``, each heredoc appended as ``\n<body><NAME>``)."""
        text = re.sub(r"(?i)^\s*ONBUILD\s*", "", self.original)
        for h in self.heredocs:
            text += "\n" + h.raw + h.name
        return text

    def healthcheck(self) -> dict[str, object]:
        """HEALTHCHECK as the image config's ``Healthcheck`` (durations in nanoseconds; only the
        options given). ``NONE`` → ``{"Test": ["NONE"]}``; shell form → ``["CMD-SHELL", text]``."""
        typ = self.args[0].upper()
        if typ == "NONE":
            return {"Test": ["NONE"]}
        test = ["CMD", *self.args[1:]] if self.exec_form else ["CMD-SHELL", self.args[1]]
        out: dict[str, object] = {"Test": test}
        for flag, key in (("interval", "Interval"), ("timeout", "Timeout"),
                          ("start-period", "StartPeriod"), ("start-interval", "StartInterval")):
            value = self.flag(flag)
            if value:
                out[key] = parse_duration(value)
        retries = self.flag("retries")
        if retries:
            out["Retries"] = int(retries)
        return out

    def run_script(self) -> RunScript:
        """How BuildKit runs a RUN/shell-form command that carries heredocs.

        - ``RUN <<EOF`` whose body starts with ``#!``: the body is a file ``/dev/pipes/<NAME>`` (0755)
          and the command is that file (``script`` set);
        - ``RUN <<EOF`` otherwise: the body is the shell command;
        - anything else (``RUN python3 <<EOF``, several heredocs): the line plus each heredoc
          (``\n<raw body><NAME>``) goes to the shell whole, and the shell reads its heredocs.
        Heredoc bodies of RUN are never expanded by the builder.
        """
        if not self.heredocs or self.exec_form:
            return RunScript(list(self.args), None)
        first = self.heredocs[0]
        m = _HEREDOC_WORD.match(self.args[0]) if self.args else None
        if m and m.group(3) and _heredoc_name(m.group(3))[0] == first.name:
            if first.body.startswith("#!"):
                return RunScript(["/dev/pipes/" + first.name], first)
            return RunScript([first.body], None)
        full = self.args[0]
        for h in self.heredocs:
            full += "\n" + h.raw + h.name
        return RunScript([full], None)


@record(frozen=True)
class RunScript:
    """``command``: the shell-form text (or exec list) to run; ``script``: a heredoc to mount as an
    executable file at ``/dev/pipes/<name>`` first (shebang scripts)."""

    command: list[str]
    script: Heredoc | None


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``1m30s``, ``1.5h``, ``250ms``) → nanoseconds."""
    rest = text
    sign = 1
    if rest[:1] in "+-" and rest:
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(rest):
        m = _DURATION.match(rest, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return sign * round(total)


@record
class Stage:
    """One ``FROM`` and the instructions after it."""

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: list[Instruction]
    source: Instruction

    @property
    def location(self) -> Location:
        return self.source.location


@record
class Dockerfile:
    directives: dict[str, str]
    escape: str
    global_args: list[Instruction]
    stages: list[Stage]
    warnings: list[str] = field(default_factory=list)
    filename: str = "Dockerfile"

    def global_arg_decls(self) -> list[ArgDecl]:
        return [d for ins in self.global_args for d in ins.arg_decls()]


# --- lexing ------------------------------------------------------------------------------------------

def _continuation(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _parse_directives(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        m = _DIRECTIVE.match(raw.lstrip())
        if not m:
            break
        key = m.group(1).lower()
        if key not in KNOWN_DIRECTIVES:
            break
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used", Location("", number))
        found[key] = m.group(2)
    return found


def _split_flags(line: str) -> tuple[str, list[str]]:
    """BuildKit's extractBuilderFlags: leading ``--words`` (quotes/backslashes processed), the rest."""
    words: list[str] = []
    pos, n = 0, len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n:
            return "", words
        if not line.startswith("--", pos):
            return line[pos:], words
        word: list[str] = []
        quote = ""
        blank_ok = False
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = ""
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
                elif ch != "\\":
                    word.append(ch)
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word.append(line[pos])
            else:
                word.append(ch)
            pos += 1
        text = "".join(word)
        if text == "--":
            return line[pos:], words
        if blank_ok or text:
            words.append(text)


def parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords: split on unquoted whitespace, keeping quotes and escapes in the words."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    blank_ok = False
    in_word = False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            if ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                word.append(ch)
                i += 1
                ch = rest[i]
            word.append(ch)
            i += 1
            continue
        if ch.isspace():
            if blank_ok or word:
                words.append("".join(word))
            word, blank_ok, in_word = [], False, False
            i += 1
            continue
        if ch in "'\"":
            quote, blank_ok = ch, True
        if ch == escape:
            if i + 1 == n:
                i += 1
                continue
            word.append(ch)
            i += 1
            ch = rest[i]
        word.append(ch)
        i += 1
    if in_word and (blank_ok or word):
        words.append("".join(word))
    return words


def _not_json(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


# Go's decoder knows no NaN/Infinity: such text is shell form there, so here too.
_JSON = json.JSONDecoder(parse_constant=_not_json)


def _parse_json(rest: str) -> list[str] | None:
    """The JSON array at the start of ``rest`` (trailing text ignored, as Go's decoder does)."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value, _ = _JSON.raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _heredoc_name(rest: str) -> tuple[str, bool]:
    """The delimiter word with quotes removed, and whether it was unquoted (→ expand the body)."""
    from pyreg.runtime.build.expand import ExpandError, lex_words

    try:
        cooked = lex_words(rest, "\\", raw_quotes=False)
        raw = lex_words(rest, "\\", raw_quotes=True)
    except ExpandError:
        return "", False
    if len(cooked) != 1 or len(raw) != 1:
        return "", False
    quotes = cooked[0].count("'") + cooked[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return cooked[0], quotes == raw_quotes


def _heredoc_specs(line: str) -> list[tuple[str, bool, bool, int | None]]:
    from pyreg.runtime.build.expand import ExpandError, lex_words

    try:
        words = lex_words(line, "\\", raw_quotes=True, raw_escapes=True)
    except ExpandError:
        return []
    specs = []
    for word in words:
        m = _HEREDOC_WORD.match(word)
        if not m or not m.group(3):
            continue
        name, expand = _heredoc_name(m.group(3))
        if not name:
            continue
        specs.append((name, expand, m.group(2) == "-", int(m.group(1)) if m.group(1) else None))
    return specs


def _dispatch(keyword: str, rest: str, escape: str) -> tuple[list[str], bool]:
    """BuildKit's per-keyword line parsers: (args, exec_form)."""
    if keyword in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        # An empty shell form is [""]: BuildKit runs/stores `/bin/sh -c ""` for a bare CMD.
        js = _parse_json(rest)
        return (js, True) if js is not None else ([rest], False)
    if keyword in ("ADD", "COPY", "VOLUME"):
        js = _parse_json(rest)
        if js is not None:
            return js, True
        return (_WHITESPACE.split(rest) if rest else []), False
    if keyword in ("EXPOSE", "FROM"):
        return (_WHITESPACE.split(rest) if rest else []), False
    if keyword in ("ENV", "LABEL"):
        return _name_values(rest, keyword, escape), False
    if keyword == "ARG":
        return parse_words(rest, escape), False
    if keyword == "HEALTHCHECK":
        if not rest:
            return [], False
        parts = re.split(r"\s", rest, maxsplit=1)
        typ = parts[0]
        cmd = parts[1].lstrip() if len(parts) > 1 else ""
        if not cmd and typ.upper() != "CMD":
            return [typ], False
        js = _parse_json(cmd)
        return ([typ, *js], True) if js is not None else ([typ, cmd], False)
    # MAINTAINER, STOPSIGNAL, USER, WORKDIR
    return ([rest] if rest else []), False


def _name_values(rest: str, keyword: str, escape: str) -> list[str]:
    words = parse_words(rest, escape)
    if not words:
        return []
    if "=" not in words[0]:
        parts = _WHITESPACE.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{keyword} must have two arguments")
        return [parts[0], parts[1]]
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ValueError(f"Syntax error - can't find = in {_q(word)}. Must be of the form: name=value")
        k, _, v = word.partition("=")
        out += [k, v]
    return out


def _q(text: str) -> str:
    """Go's ``%q`` (near enough: JSON string quoting)."""
    return json.dumps(text, ensure_ascii=False)


def _parse_flags(keyword: str, raw: list[str]) -> list[Flag]:
    allowed = INSTRUCTION_FLAGS.get(keyword, {})
    flags: list[Flag] = []
    seen: set[str] = set()
    for word in raw:
        if not word.startswith("--"):
            raise ValueError(f"invalid flag: {word}")
        name, eq, value = word[2:].partition("=")
        if name not in allowed:
            raise ValueError(f"unknown flag: {name}")
        if name in seen and not allowed[name]:
            raise ValueError(f"Duplicate flag specified: {name}")
        seen.add(name)
        if (keyword, name) in BOOL_FLAGS:
            if eq and value.lower() not in ("true", "false"):
                raise ValueError(f"expecting boolean value for flag {name}, not: {value}")
            flags.append(Flag(name, value.lower() if eq else None))
            continue
        if not eq:
            raise ValueError(f"Missing a value on flag: {name}")
        flags.append(Flag(name, value))
    return flags


def _make_instruction(line: str, escape: str, location: Location) -> Instruction:
    stripped = line.strip()
    parts = _WHITESPACE.split(stripped, maxsplit=1)
    keyword = parts[0].upper()
    after = parts[1] if len(parts) > 1 else ""
    if keyword not in INSTRUCTION_FLAGS:
        import difflib  # only for the error: start-up pays nothing for it

        near = difflib.get_close_matches(keyword, list(INSTRUCTION_FLAGS), n=1)
        hint = f" (did you mean {near[0].lower() if parts[0].islower() else near[0]}?)" if near else ""
        raise DockerfileError(f"unknown instruction: {parts[0]}{hint}", location)
    try:
        rest, raw_flags = _split_flags(after)
        rest = rest.strip()
        flags = _parse_flags(keyword, raw_flags)
        trigger = None
        if keyword == "ONBUILD":
            if not rest:
                raise ValueError("ONBUILD requires at least one argument")
            trigger = _make_instruction(rest, escape, location)
            if trigger.keyword == "ONBUILD":
                raise ValueError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
            if trigger.keyword in ("MAINTAINER", "FROM"):
                raise ValueError(f"{trigger.keyword} isn't allowed as an ONBUILD trigger")
            args, exec_form = [trigger.keyword, *trigger.args], trigger.exec_form
        else:
            args, exec_form = _dispatch(keyword, rest, escape)
    except DockerfileError:
        raise
    except ValueError as e:
        raise DockerfileError(str(e), location, keyword) from None
    return Instruction(keyword, flags, args, exec_form, [], line, location, rest, trigger)


def _check(ins: Instruction) -> None:
    """BuildKit's instructions.Parse checks (argument counts and shapes)."""
    k, a = ins.keyword, ins.args
    if k in ("ENV", "LABEL", "ARG", "EXPOSE", "VOLUME", "HEALTHCHECK", "SHELL") and not a:
        raise ins.error(f"{k} requires at least one argument")
    if k in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER") and len(a) != 1:
        raise ins.error(f"{k} requires exactly one argument")
    if k in ("ENV", "LABEL") and any(not a[i] for i in range(0, len(a), 2)):
        raise ins.error(f"{k} names can not be blank")
    if k == "ARG" and any(w.startswith("=") for w in a):
        raise ins.error("ARG names can not be blank")
    if k in ("COPY", "ADD"):
        if len(a) < 2:
            raise ins.error(f"{k} requires at least two arguments, but only one was provided. "
                            "Destination could not be determined")
        if _HEREDOC_WORD.match(a[-1]) and _HEREDOC_WORD.match(a[-1]).group(3):  # type: ignore[union-attr]
            raise ins.error(f"{k} cannot accept a heredoc as a destination")
    if k == "SHELL" and not ins.exec_form:
        raise ins.error(f"SHELL requires the arguments to be in JSON form (got {ins.rest!r})")
    if k == "VOLUME" and any(not v.strip() for v in a):
        raise ins.error("VOLUME specified can not be an empty string")
    if k == "HEALTHCHECK":
        typ = a[0].upper()
        if typ == "NONE":
            if len(a) > 1:
                raise ins.error("HEALTHCHECK NONE takes no arguments")
        elif typ == "CMD":
            if len(a) == 1:  # only `CMD []`: a bare `CMD` is the shell form of "" (BuildKit)
                raise ins.error("Missing command after HEALTHCHECK CMD")
        else:
            raise ins.error(f'Unknown type "{a[0]}" in HEALTHCHECK (try CMD)')
        for name in ("interval", "timeout", "start-period", "start-interval"):
            value = ins.flag(name)
            if not value or typ == "NONE":
                continue
            try:
                ns = parse_duration(value)
            except ValueError as e:
                raise ins.error(str(e)) from None
            if ns < 1_000_000:
                raise ins.error(f'Interval "{name}" cannot be less than 1ms')
        retries = ins.flag("retries")
        if retries and typ != "NONE":
            if not re.fullmatch(r"[+-]?\d+", retries):
                raise ins.error(f'strconv.ParseInt: parsing "{retries}": invalid syntax')
            if int(retries) < 1:
                raise ins.error(f"--retries must be at least 1 (not {int(retries)})")
    if k == "FROM":
        if not (len(a) == 1 or (len(a) == 3 and a[1].lower() == "as")):
            raise ins.error("FROM requires either one or three arguments")
        if len(a) == 3 and not _STAGE_NAME.match(a[2].lower()):
            raise ins.error(f'invalid name for build stage: "{a[2]}", '
                            "name can't start with a number or contain symbols")
    if ins.trigger is not None:
        _check(ins.trigger)


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile's text. Raises ``DockerfileError`` naming file:line and instruction."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        directives = _parse_directives(lines)
    except DockerfileError as e:
        raise DockerfileError(e.message, Location(filename, e.location.line if e.location else 0)) from None
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"invalid escape token '{escape}' does not match ` or \\",
                              Location(filename, 1))
    cont = _continuation(escape)
    warnings: list[str] = []
    instructions: list[Instruction] = []
    i, n = 0, len(lines)
    while i < n:
        raw = lines[i].rstrip("\r\n")
        i += 1
        start = i
        first = raw.lstrip()
        if first.startswith("#"):
            continue
        line, more = _trim_continuation(first, cont)
        if not more and line == "":
            continue
        empty_continuation = False
        while more and i < n:
            raw = lines[i].rstrip("\r\n")
            i += 1
            if _is_comment(raw):
                continue
            if not raw.strip():
                empty_continuation = True
                continue
            piece, more = _trim_continuation(raw, cont)
            line += piece
        if empty_continuation:
            warnings.append(f"{filename}:{start}: empty continuation line (will be an error in a future "
                            f"release): {line.strip()[:60]}")
        location = Location(filename, start, i)
        ins = _make_instruction(line, escape, location)
        target = ins.trigger or ins
        if target.keyword in HEREDOC_INSTRUCTIONS and not target.exec_form and "<<" in line:
            docs = []
            for name, expand, chomp, fd in _heredoc_specs(line):
                body: list[str] = []
                terminated = False
                while i < n:
                    raw = lines[i]
                    i += 1
                    candidate = raw.rstrip("\r\n")
                    if chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == name:
                        terminated = True
                        break
                    body.append(raw + "\n" if i < n or text.endswith("\n") else raw)
                if not terminated:
                    raise DockerfileError("unterminated heredoc", Location(filename, start, i), ins.keyword)
                content = "".join(body)
                docs.append(Heredoc(name, content if not chomp else re.sub(r"(?m)^\t+", "", content),
                                    expand, chomp, fd, content))
            target.heredocs = docs
            if ins.trigger is not None:
                ins.heredocs = docs
            location = Location(filename, start, i)
            ins.location = location
            if ins.trigger is not None:
                ins.trigger.location = location
        _check(ins)
        instructions.append(ins)
    if not instructions:
        raise DockerfileError("file with no instructions", Location(filename, max(n, 1)))
    return _to_stages(instructions, directives, escape, warnings, filename)


def _trim_continuation(line: str, cont: re.Pattern[str]) -> tuple[str, bool]:
    if cont.search(line):
        return cont.sub(r"\1", line), True
    return line, False


def _to_stages(instructions: list[Instruction], directives: dict[str, str], escape: str,
               warnings: list[str], filename: str) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    names: set[str] = set()
    for ins in instructions:
        if ins.keyword == "FROM":
            name = ins.args[2].lower() if len(ins.args) == 3 else None
            if name is not None:
                if name in names:
                    raise ins.error(f'duplicate stage name "{name}"')
                names.add(name)
            stages.append(Stage(len(stages), name, ins.args[0], ins.flag("platform"), [], ins))
        elif not stages:
            if ins.keyword != "ARG":
                raise ins.error("no build stage in current context")
            global_args.append(ins)
        else:
            stages[-1].instructions.append(ins)
    return Dockerfile(directives, escape, global_args, stages, warnings, filename)
