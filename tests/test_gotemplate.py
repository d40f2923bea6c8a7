"""storage/gotemplate.py: the Go-template subset behind every ``--format``."""

from __future__ import annotations

import pytest

from pyreg.storage.gotemplate import Template, TemplateError, align, render_all


def test_fields_nested_and_case_insensitive() -> None:
    doc = {"Id": "sha256:ab", "State": {"Status": "running", "Pid": 4}, "Names": "web"}
    assert Template("{{.Id}} {{.State.Status}}/{{.State.Pid}}").render(doc) == "sha256:ab running/4"
    assert Template("{{.ID}}").render(doc) == "sha256:ab"  # people write .ID for .Id
    assert Template("{{ .Names }}").render(doc) == "web"


def test_json_and_functions() -> None:
    doc = {"Config": {"Env": ["A=1"]}, "L": {"k": "v"}, "N": "Ab", "B": True}
    assert Template("{{json .Config}}").render(doc) == '{"Env":["A=1"]}'
    assert Template("{{json .}}").render({"a": 1}) == '{"a":1}'
    assert Template("{{.Config.Env | json}}").render(doc) == '["A=1"]'
    assert Template('{{index .L "k"}} {{upper .N}} {{lower .N}} {{.B}}').render(doc) == "v AB ab true"
    assert Template('{{join .Config.Env ","}} {{len .Config.Env}}').render(doc) == "A=1 1"
    assert Template("{{.Config}}").render(doc) == "map[Env:[A=1]]"  # Go's %v of a map


def test_table_header_and_alignment() -> None:
    items = [{"ID": "a", "Names": "x"}, {"ID": "abcdefghijklmn", "Names": "y"}]
    lines = render_all("table {{.ID}}\\t{{.Names}}", items, {"ID": "CONTAINER ID"})
    assert lines == ["CONTAINER ID     NAMES", "a                x", "abcdefghijklmn   y"]
    assert render_all("{{.ID}}", items) == ["a", "abcdefghijklmn"]
    assert align(["a\tb"]) == ["a         b"]  # docker's minimum width 10


BAD = ["{{.Nope}}", "{{range .X}}{{end}}", "{{.ID", "{{$x := 1}}", "{{nosuch .ID}}"]


@pytest.mark.parametrize("bad", BAD)
def test_unsupported_or_missing_is_an_error(bad: str) -> None:
    with pytest.raises(TemplateError):
        Template(bad).render({"ID": "a", "X": []})
