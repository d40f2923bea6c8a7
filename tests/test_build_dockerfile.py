"""runtime/build/dockerfile.py: the Dockerfile reference's parsing rules, case by case.

Expected values come from the Dockerfile reference's examples and from what BuildKit and the
classic builder (docker 20.10, checked by hand and in tests/test_build_reference.py) make of them.
"""

from __future__ import annotations

import pytest

from pyreg.runtime.build.dockerfile import (
    DockerfileError,
    Flag,
    Instruction,
    parse,
    parse_duration,
    parse_words,
)


def instructions(text: str) -> list[Instruction]:
    df = parse(text)
    out = list(df.global_args)
    for st in df.stages:
        out.append(st.source)
        out.extend(st.instructions)
    return out


def brief(text: str) -> list[tuple[str, list[str], bool]]:
    return [(i.keyword, i.args, i.exec_form) for i in instructions(text)]


def error_of(text: str, filename: str = "Dockerfile") -> str:
    with pytest.raises(DockerfileError) as exc:
        parse(text, filename)
    return str(exc.value)


# --- line continuations ----------------------------------------------------------------------------

CONTINUATIONS = [
    # the escape character ends the line: joined, whitespace at the start of the next line kept
    ("FROM s\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\n",
     "echo hello  world  goodnight    moon  lightning"),
    ("FROM s\nRUN echo hello  \\\n  world\n", "echo hello    world"),
    ("FROM s\nRUN echo hello \\\ngoodbye\\\nfrog\n", "echo hello goodbyefrog"),
    # whitespace-only continuation lines are dropped (with a warning), escape-only lines join nothing
    ("FROM s\nRUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n", "echo hi   world  goodnight"),
    # comment lines inside a continuation are dropped, the continuation goes on
    ("FROM s\nRUN echo \\\n# a comment\n  after \\\n    # indented comment\n  more\n", "echo   after   more"),
    # a continuation at the end of the file ends the instruction
    ("FROM s\nRUN echo end \\\n", "echo end"),
    # spaces and tabs after the escape character still continue the line
    ("FROM s\nRUN a \\  \t\nb\n", "a b"),
    # an escaped escape character at the end is not a continuation: the line ends there
    ("FROM s\nRUN a \\\\\nLABEL x=y\n", "a \\\\"),
    # CRLF line ends
    ("FROM s\r\nRUN a \\\r\n b\r\n", "a  b"),
]


@pytest.mark.parametrize("text,expected", CONTINUATIONS)
def test_continuations(text: str, expected: str) -> None:
    run = instructions(text)[1]
    assert run.keyword == "RUN"
    assert run.args == [expected]


def test_comment_ends_nothing_but_blank_continuation_warns() -> None:
    df = parse("FROM s\n\nRUN valid \\\n    continuation\n\nRUN something \\\n\n    following \\\n"
               "\n    more\n\nRUN non-indented \\\n# comment\n   after-comment\n")
    assert [i.args[0] for i in df.stages[0].instructions] == [
        "valid     continuation", "something     following     more", "non-indented    after-comment"]
    assert len(df.warnings) == 1
    assert "Dockerfile:6:" in df.warnings[0] and "empty continuation line" in df.warnings[0]


def test_line_numbers_span_continuations_and_heredocs() -> None:
    df = parse("# comment\n\nFROM s\nRUN a \\\n  b\n\nCOPY <<EOF /x\nhi\nEOF\nUSER me\n")
    locs = [(i.keyword, i.location.line, i.location.end_line) for i in df.stages[0].instructions]
    assert locs == [("RUN", 4, 5), ("COPY", 7, 9), ("USER", 10, 10)]
    assert df.stages[0].location.line == 3


# --- parser directives -----------------------------------------------------------------------------

DIRECTIVES = [
    ("# syntax=docker/dockerfile:1\nFROM s\n", {"syntax": "docker/dockerfile:1"}, "\\"),
    ("#escape=`\nFROM s\n", {"escape": "`"}, "`"),
    # whitespace is allowed around and inside; keys are case-insensitive
    ("#\t  EsCaPe =  `  \nFROM s\n", {"escape": "`"}, "`"),
    ("  # escape=`\nFROM s\n", {"escape": "`"}, "`"),
    ("# syntax = x\n# escape = `\n# check = skip=all\nFROM s\n",
     {"syntax": "x", "escape": "`", "check": "skip=all"}, "`"),
    # after a comment, a blank line or an instruction, directive-looking lines are comments
    ("# about\n# escape=`\nFROM s\n", {}, "\\"),
    ("\n# escape=`\nFROM s\n", {}, "\\"),
    ("FROM s\n# escape=`\n", {}, "\\"),
    # an unknown directive is a comment, and ends the directives
    ("# unknowndirective=value\n# escape=`\nFROM s\n", {}, "\\"),
    # line continuation does not apply to directives
    ("# escape=\\\\\nFROM s\n", None, None),
    # a byte order mark is skipped
    ("\ufeff# escape=`\nFROM s\n", {"escape": "`"}, "`"),
]


@pytest.mark.parametrize("text,directives,escape", DIRECTIVES)
def test_directives(text: str, directives: dict[str, str] | None, escape: str | None) -> None:
    if directives is None:
        assert "invalid escape token" in error_of(text)
        return
    df = parse(text)
    assert df.directives == directives
    assert df.escape == escape


def test_directive_twice_is_an_error() -> None:
    assert error_of("# escape=`\n# escape=\\\nFROM s\n") == (
        "Dockerfile:2: only one escape parser directive can be used")


def test_escape_backtick_windows_paths() -> None:
    # The reference's example: with `\` as escape, `c:\\` then `\` continues onto the next line;
    # with the backtick, backslashes are just characters.
    plain = brief("FROM s\nCOPY testfile.txt c:\\\\\nRUN dir c:\\\n")
    assert plain[1] == ("COPY", ["testfile.txt", "c:\\\\"], False)
    assert plain[2] == ("RUN", ["dir c:"], False)
    tick = brief("# escape=`\n\nFROM s\nCOPY testfile.txt c:\\\nRUN dir c:\\\n")
    assert tick[1] == ("COPY", ["testfile.txt", "c:\\"], False)
    assert tick[2] == ("RUN", ["dir c:\\"], False)
    cont = brief("# escape=`\nFROM s\nRUN a `\n  b\n")
    assert cont[1] == ("RUN", ["a   b"], False)


# --- forms and keywords ----------------------------------------------------------------------------

FORMS = [
    ('CMD ["echo", "hi"]', ("CMD", ["echo", "hi"], True)),
    ("CMD echo hi", ("CMD", ["echo hi"], False)),
    # bare CMD/ENTRYPOINT/RUN: the shell form of "" (docker stores ["/bin/sh", "-c", ""])
    ("CMD", ("CMD", [""], False)),
    ("RUN --network=none", ("RUN", [""], False)),
    ("HEALTHCHECK CMD", ("HEALTHCHECK", ["CMD", ""], False)),
    # not JSON (single quotes): shell form, the text as written
    ("ENTRYPOINT [\"a\", 'b']", ("ENTRYPOINT", ["[\"a\", 'b']"], False)),
    ('CMD ["a" "b"]', ("CMD", ['["a" "b"]'], False)),
    # Go's decoder reads the first JSON value and ignores the rest
    ('CMD [ "x" ] trailing', ("CMD", ["x"], True)),
    ("CMD []", ("CMD", [], True)),
    ("CMD [NaN]", ("CMD", ["[NaN]"], False)),
    ('RUN ["/bin/sh", "-c", "echo \\"q\\" \\u00e9"]', ("RUN", ["/bin/sh", "-c", 'echo "q" é'], True)),
    ('COPY ["a b", "c"]', ("COPY", ["a b", "c"], True)),
    ('COPY "a b" c', ("COPY", ['"a', 'b"', "c"], False)),
    ("COPY  a\tb   c ", ("COPY", ["a", "b", "c"], False)),
    ('VOLUME ["/a", "/b"]', ("VOLUME", ["/a", "/b"], True)),
    ("VOLUME /a /b", ("VOLUME", ["/a", "/b"], False)),
    ("EXPOSE 80  443/udp", ("EXPOSE", ["80", "443/udp"], False)),
    ("USER  u s  ", ("USER", ["u s"], False)),
    ("WORKDIR /a b", ("WORKDIR", ["/a b"], False)),
    ("STOPSIGNAL SIGKILL", ("STOPSIGNAL", ["SIGKILL"], False)),
    ("MAINTAINER someone <a@b>", ("MAINTAINER", ["someone <a@b>"], False)),
    ('SHELL ["/bin/bash", "-c"]', ("SHELL", ["/bin/bash", "-c"], True)),
    ("HEALTHCHECK NONE", ("HEALTHCHECK", ["NONE"], False)),
    ("HEALTHCHECK CMD curl -f x || exit 1", ("HEALTHCHECK", ["CMD", "curl -f x || exit 1"], False)),
    ('HEALTHCHECK CMD ["true"]', ("HEALTHCHECK", ["CMD", "true"], True)),
    # keywords are case-insensitive
    ("run echo x", ("RUN", ["echo x"], False)),
    ("Env a=b", ("ENV", ["a", "b"], False)),
    # a # that does not start the line is part of the arguments
    ("RUN echo # not a comment", ("RUN", ["echo # not a comment"], False)),
]


@pytest.mark.parametrize("line,expected", FORMS)
def test_forms(line: str, expected: tuple[str, list[str], bool]) -> None:
    assert brief("FROM s\n" + line + "\n")[1] == expected


ENV_LABEL = [
    # new form: several pairs, quotes and escapes kept for expansion to remove
    ('ENV a=1 b="x y" c=x\\ y d=', ["a", "1", "b", '"x y"', "c", "x\\ y", "d", ""]),
    # old form: one key, the rest of the line (whitespace kept) is the value
    ('ENV OLD this is   "old" form', ["OLD", 'this is   "old" form']),
    ('LABEL "com.example.vendor"="ACME Incorporated" version="1.0"',
     ['"com.example.vendor"', '"ACME Incorporated"', "version", '"1.0"']),
    ("LABEL single 'quoted $A1'", ["single", "'quoted $A1'"]),
    ("ENV n4=a=b", ["n4", "a=b"]),
    ("LABEL l1= \"l2\"=v2", ["l1", "", '"l2"', "v2"]),
]


@pytest.mark.parametrize("line,args", ENV_LABEL)
def test_env_label_pairs(line: str, args: list[str]) -> None:
    ins = instructions("FROM s\n" + line + "\n")[1]
    assert ins.args == args
    assert ins.pairs() == list(zip(args[::2], args[1::2], strict=True))


def test_arg_declarations() -> None:
    ins = instructions('FROM s\nARG a b=1 c="x y" d=\n')[1]
    assert [(d.name, d.default) for d in ins.arg_decls()] == [
        ("a", None), ("b", "1"), ("c", '"x y"'), ("d", "")]


def test_parse_words_keeps_quotes_and_escapes() -> None:
    assert parse_words("foo bar 'abc xyz'", "\\") == ["foo", "bar", "'abc xyz'"]
    assert parse_words('foo\\ bar "a b"', "\\") == ["foo\\ bar", '"a b"']
    assert parse_words('föo bàr "âbc xÿz"', "\\") == ["föo", "bàr", '"âbc xÿz"']
    assert parse_words("a '' b", "\\") == ["a", "''", "b"]


def test_flags_in_order_and_typed() -> None:
    ins = instructions("FROM s\nRUN --mount=type=cache,target=/c --network=none "
                       "--mount=type=bind,from=b,target=/b make\n")[1]
    assert ins.flags == [Flag("mount", "type=cache,target=/c"), Flag("network", "none"),
                         Flag("mount", "type=bind,from=b,target=/b")]
    assert ins.flag_values("mount") == ["type=cache,target=/c", "type=bind,from=b,target=/b"]
    assert ins.args == ["make"]
    cp = instructions("FROM s\nCOPY --from=build --chown=1:2 --chmod=644 --link a b /d/\n")[1]
    assert (cp.flag("from"), cp.flag("chown"), cp.flag("chmod"), cp.bool_flag("link")) == (
        "build", "1:2", "644", True)
    assert cp.sources_dest() == (["a", "b"], "/d/")
    off = instructions("FROM s\nCOPY --link=false a /d\n")[1]
    assert off.bool_flag("link") is False
    # quoted flag values; `--` ends the flags
    q = instructions('FROM s\nCOPY --chown="a b" -- --weird /d\n')[1]
    assert q.flag("chown") == "a b" and q.args == ["--weird", "/d"]
    fr = parse("FROM --platform=$BUILDPLATFORM img AS b\n").stages[0]
    assert (fr.platform, fr.base, fr.name) == ("$BUILDPLATFORM", "img", "b")


def test_healthcheck_config() -> None:
    hc = instructions("FROM s\nHEALTHCHECK --interval=5s --timeout=1m30s --start-period=250ms --retries=3 "
                      "CMD curl -f http://x/ || exit 1\n")[1]
    assert hc.healthcheck() == {"Test": ["CMD-SHELL", "curl -f http://x/ || exit 1"],
                                "Interval": 5_000_000_000, "Timeout": 90_000_000_000,
                                "StartPeriod": 250_000_000, "Retries": 3}
    exec_form = instructions('FROM s\nHEALTHCHECK CMD ["a", "b"]\n')[1]
    assert exec_form.healthcheck() == {"Test": ["CMD", "a", "b"]}
    assert instructions("FROM s\nHEALTHCHECK NONE\n")[1].healthcheck() == {"Test": ["NONE"]}
    assert parse_duration("1.5h") == 5_400_000_000_000
    assert parse_duration("0") == 0


def test_onbuild_trigger() -> None:
    a, b, c = instructions("FROM s\nONBUILD RUN echo $A1\nONBUILD   add . /app\n"
                           "ONBUILD COPY <<EOF /x\nhi\nEOF\n")[1:]
    assert a.trigger is not None and a.trigger.keyword == "RUN" and a.trigger.args == ["echo $A1"]
    assert a.onbuild_expression() == "RUN echo $A1"
    assert b.onbuild_expression() == "add . /app"
    assert b.trigger is not None and b.trigger.keyword == "ADD"
    assert c.trigger is not None and [h.body for h in c.trigger.heredocs] == ["hi\n"]
    assert c.onbuild_expression() == "COPY <<EOF /x\nhi\nEOF"


# --- heredocs --------------------------------------------------------------------------------------

def test_heredoc_reference_examples() -> None:
    df = parse('# syntax=docker/dockerfile:1\nFROM debian\nRUN <<EOT bash\n  set -ex\n  apt-get update\n'
               "  apt-get install -y vim\nEOT\n"
               'RUN <<EOT\n  mkdir -p foo/bar\nEOT\n'
               "RUN python3 <<EOF\nwith open(\"/hello\", \"w\") as f:\n    print(\"Hello\", file=f)\nEOF\n"
               "RUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n"
               "COPY <<-EOT /script.sh\n\techo \"hello ${FOO}\"\n\tEOT\n"
               'COPY <<"EOT" /x\n$literal\nEOT\n'
               "RUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF\n")
    run1, run2, run3, run4, copy1, copy2, run5 = df.stages[0].instructions
    assert run1.args == ["<<EOT bash"]
    assert run1.heredocs[0].body == "  set -ex\n  apt-get update\n  apt-get install -y vim\n"
    assert run1.run_script().command == [
        "<<EOT bash\n  set -ex\n  apt-get update\n  apt-get install -y vim\nEOT"]
    assert run2.run_script().command == ["  mkdir -p foo/bar\n"]
    assert run3.heredocs[0].name == "EOF"
    assert [(h.name, h.body) for h in run4.heredocs] == [
        ("FILE1", "I am\nfirst\n"), ("FILE2", "I am\nsecond\n")]
    assert run4.run_script().command == [
        "<<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2"]
    h = copy1.heredocs[0]
    assert (h.name, h.body, h.raw, h.expand, h.chomp_tabs) == ("EOT", 'echo "hello ${FOO}"\n',
                                                              '\techo "hello ${FOO}"\n', True, True)
    assert copy1.heredoc_for(copy1.sources_dest()[0][0]) == h
    assert copy2.heredocs[0].expand is False and copy2.heredocs[0].body == "$literal\n"
    script = run5.run_script()
    assert script.command == ["/dev/pipes/EOF"] and script.script is not None
    assert script.script.body.startswith("#!/usr/bin/env python3")


@pytest.mark.parametrize("delimiter,name,expand", [
    ("<<EOF", "EOF", True), ("<<'EOF'", "EOF", False), ('<<"EOF"', "EOF", False),
    ("<<-EOF", "EOF", True), ("<<E'O'F", "EOF", False), ("3<<EOF", "EOF", True),
])
def test_heredoc_delimiters(delimiter: str, name: str, expand: bool) -> None:
    ins = instructions(f"FROM s\nRUN cat {delimiter}\nbody\n{name}\n")[1]
    assert [(h.name, h.expand, h.body) for h in ins.heredocs] == [(name, expand, "body\n")]


def test_heredoc_not_in_json_or_other_instructions() -> None:
    ins = instructions('FROM s\nRUN ["cat", "<<EOF"]\nLABEL a=b\n')
    assert ins[1].heredocs == [] and ins[2].keyword == "LABEL"
    # `<<` inside quotes is not a heredoc
    ins = instructions('FROM s\nRUN echo "<<EOF"\nLABEL a=b\n')
    assert ins[1].heredocs == [] and ins[2].keyword == "LABEL"
    # no heredoc for ENV etc.: the next line is an instruction
    assert brief("FROM s\nENV a=<<EOF\nUSER x\n")[2] == ("USER", ["x"], False)


def test_heredoc_last_line_without_newline() -> None:
    ins = instructions("FROM s\nCOPY <<EOF /x\na\nb\nEOF")[1]
    assert ins.heredocs[0].body == "a\nb\n"


# --- errors with file:line ---------------------------------------------------------------------------

ERRORS = [
    ("FROM s\nFOO bar\n", "Dockerfile:2: unknown instruction: FOO"),
    ("FROM s\nRUNN x\n", "Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"),
    ("FROM s\n\nRUN \\\n  x\nEXPOSE\n", "Dockerfile:5: EXPOSE: EXPOSE requires at least one argument"),
    ("FROM s\nCOPY a\n", "Dockerfile:2: COPY: COPY requires at least two arguments, "
                         "but only one was provided. Destination could not be determined"),
    ("FROM s\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY: COPY cannot accept a heredoc as a destination"),
    ("FROM s\nRUN <<EOF\nx\n", "Dockerfile:2: RUN: unterminated heredoc"),
    ("FROM s\nCMD [\"a\", 1]\n",
     "Dockerfile:2: CMD: when using JSON array syntax, arrays must be comprised of strings only"),
    ("FROM s\nENV a=1 b\n",
     'Dockerfile:2: ENV: Syntax error - can\'t find = in "b". Must be of the form: name=value'),
    ("FROM s\nENV a\n", "Dockerfile:2: ENV: ENV must have two arguments"),
    ("FROM s\nENV\n", "Dockerfile:2: ENV: ENV requires at least one argument"),
    ("FROM s\nENV =x\n", "Dockerfile:2: ENV: ENV names can not be blank"),
    ("FROM s\nARG =x\n", "Dockerfile:2: ARG: ARG names can not be blank"),
    ("FROM s\nLABEL\n", "Dockerfile:2: LABEL: LABEL requires at least one argument"),
    ("FROM s\nWORKDIR\n", "Dockerfile:2: WORKDIR: WORKDIR requires exactly one argument"),
    ("FROM s\nUSER\n", "Dockerfile:2: USER: USER requires exactly one argument"),
    ("FROM s\nSHELL /bin/sh -c\n", "Dockerfile:2: SHELL: SHELL requires the arguments to be in JSON form"),
    ("FROM s\nSHELL []\n", "Dockerfile:2: SHELL: SHELL requires at least one argument"),
    ("FROM s\nONBUILD ONBUILD RUN x\n",
     "Dockerfile:2: ONBUILD: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM s\nONBUILD FROM x\n", "Dockerfile:2: ONBUILD: FROM isn't allowed as an ONBUILD trigger"),
    ("FROM s\nONBUILD MAINTAINER x\n",
     "Dockerfile:2: ONBUILD: MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM s\nONBUILD\n", "Dockerfile:2: ONBUILD: ONBUILD requires at least one argument"),
    ("FROM s\nRUN --foo=bar x\n", "Dockerfile:2: RUN: unknown flag: foo"),
    ("FROM s\nCOPY --from=a --from=b x y\n", "Dockerfile:2: COPY: Duplicate flag specified: from"),
    ("FROM s\nCOPY --from x y\n", "Dockerfile:2: COPY: Missing a value on flag: from"),
    ("FROM s\nCOPY --link=maybe x y\n",
     "Dockerfile:2: COPY: expecting boolean value for flag link, not: maybe"),
    ("FROM s\nENV --x=1 a=b\n", "Dockerfile:2: ENV: unknown flag: x"),
    ("FROM a b\n", "Dockerfile:1: FROM: FROM requires either one or three arguments"),
    ("FROM a AS 1b\n", 'Dockerfile:1: FROM: invalid name for build stage: "1b", '
                       "name can't start with a number or contain symbols"),
    ("FROM a AS x\nFROM b AS X\n", 'Dockerfile:2: FROM: duplicate stage name "x"'),
    ("FROM\n", "Dockerfile:1: FROM: FROM requires either one or three arguments"),
    ("ARG a\nRUN x\nFROM s\n", "Dockerfile:2: RUN: no build stage in current context"),
    ("# only a comment\n\n", "Dockerfile:2: file with no instructions"),
    ("", "Dockerfile:1: file with no instructions"),
    ("FROM s\nHEALTHCHECK FOO x\n", 'Dockerfile:2: HEALTHCHECK: Unknown type "FOO" in HEALTHCHECK (try CMD)'),
    ("FROM s\nHEALTHCHECK NONE x\n", "Dockerfile:2: HEALTHCHECK: HEALTHCHECK NONE takes no arguments"),
    ("FROM s\nHEALTHCHECK CMD []\n", "Dockerfile:2: HEALTHCHECK: Missing command after HEALTHCHECK CMD"),
    ("FROM s\nSHELL\n", "Dockerfile:2: SHELL: SHELL requires the arguments to be in JSON form"),
    ("FROM s\nHEALTHCHECK --interval=0s CMD x\n",
     'Dockerfile:2: HEALTHCHECK: Interval "interval" cannot be less than 1ms'),
    ("FROM s\nHEALTHCHECK --timeout=5 CMD x\n", 'Dockerfile:2: HEALTHCHECK: time: invalid duration "5"'),
    ("FROM s\nHEALTHCHECK --retries=0 CMD x\n",
     "Dockerfile:2: HEALTHCHECK: --retries must be at least 1 (not 0)"),
    ("FROM s\nVOLUME [\"\"]\n", "Dockerfile:2: VOLUME: VOLUME specified can not be an empty string"),
]


@pytest.mark.parametrize("text,message", ERRORS)
def test_errors_name_file_line_instruction(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


def test_error_uses_the_given_file_name() -> None:
    assert error_of("FROM s\n\nZZZZ x\n", "build/app.Dockerfile") == (
        "build/app.Dockerfile:3: unknown instruction: ZZZZ")


# --- stages ----------------------------------------------------------------------------------------

def test_stages_and_global_args() -> None:
    df = parse("ARG BASE=alpine\nARG V\nFROM $BASE AS Build\nRUN make\n"
               "FROM scratch\nCOPY --from=build /a /b\n")
    assert [(d.name, d.default) for d in df.global_arg_decls()] == [("BASE", "alpine"), ("V", None)]
    assert [(s.index, s.name, s.base) for s in df.stages] == [(0, "build", "$BASE"), (1, None, "scratch")]
    assert [i.keyword for i in df.stages[0].instructions] == ["RUN"]


def test_parse_is_fast() -> None:
    """No I/O and linear: a 5,000-instruction file parses (smoke; the timing itself lives in bench/)."""
    step = 'ENV k{0}=v{0} other="x y"\nRUN echo {0} \\\n  && true\n'
    text = "FROM s\n" + "".join(step.format(i) for i in range(2500))
    df = parse(text)
    assert len(df.stages[0].instructions) == 5000
