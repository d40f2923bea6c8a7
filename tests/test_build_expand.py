"""runtime/build/expand.py: variable expansion as the Dockerfile reference and BuildKit's lexer do it."""

from __future__ import annotations

import pytest

from pyreg.runtime.build.expand import (
    ExpandError,
    expand,
    expand_heredoc,
    expand_with_matches,
    expand_words,
    lex_words,
)

ENV = {"FOO": "/bar", "A1": "a1", "SP": "a  b", "EMPTY": "", "P": "x/y/z", "V": "v1.2.3", "S": "a*b*c"}

CASES = [
    # the reference's examples
    ("${FOO}", "/bar"),
    ("$FOO", "/bar"),
    ("\\$FOO", "$FOO"),
    ("\\${FOO}", "${FOO}"),
    ("${FOO}/x", "/bar/x"),
    ("${UNSET:-word}", "word"),
    ("${FOO:-word}", "/bar"),
    ("${FOO:+word}", "word"),
    ("${UNSET:+word}", ""),
    ("${EMPTY:-word}", "word"),
    ("${EMPTY:+word}", ""),
    # without the colon only "unset" counts, not "empty" (BuildKit)
    ("${EMPTY-word}", ""),
    ("${UNSET-word}", "word"),
    ("${EMPTY+word}", "word"),
    ("${UNSET+word}", ""),
    # the word is itself expanded, recursively
    ("${UNSET:-$FOO}", "/bar"),
    ("${UNSET:-${A1:+yes}}", "yes"),
    ("${UNSET:-'$A1'}", "$A1"),
    # unset and special names are empty; a lone $ stays
    ("$UNSET", ""),
    ("a$1b", "ab"),
    ("$", "$"),
    ("a$ b", "a$ b"),
    ("$$", ""),
    # quotes: single = literal, double = expansions still happen; both removed
    ("'$FOO'", "$FOO"),
    ('"$FOO"', "/bar"),
    ('"a \'b\' c"', "a 'b' c"),
    ("'a \"b\" c'", 'a "b" c'),
    ('x"y z"w', "xy zw"),
    ("''", ""),
    # escapes: outside quotes any character; inside double quotes only " $ and the escape itself
    ("x\\ y", "x y"),
    ("\\a\\b", "ab"),
    ('"\\a"', "\\a"),
    ('"\\""', '"'),
    ('"\\$FOO"', "$FOO"),
    ('"\\\\"', "\\"),
    ("'\\'", "\\"),
    ("trailing\\", "trailing"),
    # values are not re-scanned
    ("$SP", "a  b"),
    # BuildKit's additions: prefix/suffix removal and replacement (`*` crosses `/`)
    ("${P#*/}", "y/z"),
    ("${P##*/}", "z"),
    ("${P%/*}", "x/y"),
    ("${P%%/*}", "x"),
    ("${V#v}", "1.2.3"),
    ("${V/./-}", "v1-2.3"),
    ("${V//./-}", "v1-2-3"),
    ("${S#*\\*}", "b*c"),
    ('${S#"a*"}', "b*c"),
    ("${UNSET#x}", ""),
]


@pytest.mark.parametrize("word,expected", CASES)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


ERRORS = [
    ("${}", "syntax error: bad substitution"),
    ("${:x}", "syntax error: bad substitution"),
    ("${FOO", "syntax error: missing '}'"),
    ("${", "syntax error: missing '}'"),
    ("${UNSET:-x", "unexpected end of statement while looking for matching }"),
    ("${FOO:#x}", "unsupported modifier (#) in substitution"),
    ("${FOO!}", "unsupported modifier (!) in substitution"),
    ("'open", "unexpected end of statement while looking for matching single-quote"),
    ('"open', "unexpected end of statement while looking for matching double-quote"),
    ("${UNSET:?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${UNSET:?set it with --build-arg}", "UNSET: set it with --build-arg"),
]


@pytest.mark.parametrize("word,message", ERRORS)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(ExpandError) as exc:
        expand(word, ENV)
    assert str(exc.value) == message


def test_required_set_values_pass() -> None:
    assert expand("${FOO:?}", ENV) == "/bar"
    assert expand("${EMPTY?}", ENV) == ""


def test_backtick_escape() -> None:
    assert expand("c:\\windows", ENV, "`") == "c:\\windows"
    assert expand("`$FOO", ENV, "`") == "$FOO"
    assert expand('"a`"b"', ENV, "`") == 'a"b'


def test_words_split_only_unquoted() -> None:
    # EXPOSE: one word may become several, from its value's whitespace too; quotes keep words whole
    assert expand_words("80 $SP", ENV) == ["80", "a", "b"]
    assert expand_words('"$SP" x', ENV) == ["a  b", "x"]
    assert expand_words("$EMPTY", ENV) == []
    assert expand_words("'' a", ENV) == ["a"]


def test_matches_report_the_names_read() -> None:
    result, used = expand_with_matches("$FOO ${UNSET:-x} ${A1}", ENV)
    assert result == "/bar x a1"
    assert used == {"FOO", "A1"}


def test_heredoc_body_keeps_quotes() -> None:
    body = "hello \"$A1\" '$A1' \\$FOO ${UNSET:-d}\n"
    assert expand_heredoc(body, ENV) == "hello \"a1\" 'a1' $FOO d\n"


def test_lex_words_for_heredoc_detection() -> None:
    assert lex_words("RUN cat <<'EOF' $X", raw_quotes=True) == ["RUN", "cat", "<<'EOF'", "$X"]
    assert lex_words("<<\"E O\"") == ["<<E O"]
