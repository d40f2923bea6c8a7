"""Plain command lines read without argparse: the one loop behind the fast parsers of ``run``,
``build``, ``pull`` and ``push``.

Importing argparse (with gettext and locale) and building a parser costs a short command a few
milliseconds of its start. The common command line is plain — options spelled exactly
(``--opt VALUE`` / ``--opt=VALUE``, one short option per word), values that don't start with
``-`` and that their type accepts — and that is all this reads; anything else (help, ``--``,
bundled short options, abbreviations, every error) returns None, and the caller hands the whole
line to its argparse parser, so help, messages and argparse's grammar stay exactly as they were.
Each caller's tests check its tables against its argparse parser.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing: milliseconds of a fast command's start, for annotations only
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

NO_TYPES: Mapping[str, Callable[[str], Any]] = {}


def plain_options(argv: list[str], flags: Mapping[str, str], values: Mapping[str, str],
                  lists: Mapping[str, str] | None = None,
                  types: Mapping[str, Callable[[str], Any]] = NO_TYPES,
                  stop_at_word: bool = False) -> tuple[dict[str, Any], list[str]] | None:
    """(options by dest, the other words in order), or None when ``argv`` is not plain.

    ``flags``, ``values`` and ``lists`` map an option's spelling to its dest (flags are False
    unless given, values None, lists empty); ``types`` converts a value by dest (an exception:
    not plain). With ``stop_at_word`` the first word ends the options and it and everything
    after it are the words (a command and its arguments, as ``argparse.REMAINDER``).
    """
    lists = lists or {}
    out: dict[str, Any] = dict.fromkeys(flags.values(), False)
    out.update(dict.fromkeys(values.values()))
    out.update({dest: [] for dest in lists.values()})
    words: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            if stop_at_word:
                words.extend(argv[i:])
                break
            words.append(word)
            i += 1
            continue
        i += 1
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in flags and not eq:
            out[flags[name]] = True
            continue
        dest = values.get(name) or lists.get(name)
        if dest is None:
            return None  # -h, --help, --, bundled short options, an abbreviation, a typo
        if not eq:
            if i >= len(argv) or argv[i].startswith("-"):
                return None
            value = argv[i]
            i += 1
        try:
            parsed = types[dest](value) if dest in types else value
        except Exception:  # argparse reports it in its words
            return None
        if name in lists:
            out[dest].append(parsed)
        else:
            out[dest] = parsed
    return out, words
