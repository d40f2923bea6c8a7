"""runtime/build/stages.py: FROM resolution, --from references, --target pruning, platform args."""

from __future__ import annotations

import pytest

from pyreg.runtime.build.dockerfile import DockerfileError, parse
from pyreg.runtime.build.stages import check_platform, find_stage, parse_mount, plan, platform_args
from pyreg.storage.graph import Platform

MULTI = """\
ARG BASE=busybox
ARG TAG
FROM ${BASE}:${TAG:-latest} AS Base
RUN echo base
FROM base AS build
ARG SRC=/src
COPY --from=base / /
FROM scratch AS unrelated
COPY x /
FROM alpine AS tools
FROM scratch AS final
ARG WHICH=build
COPY --from=${WHICH} /out /
RUN --mount=type=bind,from=tools,target=/t true
COPY --from=0 /etc /etc
"""


def test_plan_builds_only_what_the_target_needs() -> None:
    p = plan(parse(MULTI))
    assert [p.stages[i].stage.name for i in p.order] == ["base", "build", "tools", "final"]
    assert p.target == 4
    assert p.stages[0].base == "busybox:latest" and p.stages[0].base_stage is None
    assert p.stages[1].base == "base" and p.stages[1].base_stage == 0
    assert p.stages[2].is_scratch
    assert p.stages[4].deps == {0, 1, 3}


def test_plan_target_and_build_args() -> None:
    args = {"TAG": "1.36", "WHICH": "unrelated", "NOPE": "x", "HTTP_PROXY": "p"}
    p = plan(parse(MULTI), args, target="Build")
    assert [p.stages[i].stage.name for i in p.order] == ["base", "build"]
    assert p.stages[0].base == "busybox:1.36"
    assert p.global_scope["TAG"] == "1.36"
    # WHICH is declared only in a stage not built: unused too, as docker says; proxies are predefined
    assert p.unused_build_args == ["NOPE", "WHICH"]
    # --from=${WHICH} follows the stage's ARG default or the build arg
    assert plan(parse(MULTI), {"WHICH": "unrelated"}).stages[4].deps == {0, 2, 3}


def test_global_args_scope() -> None:
    df = parse("ARG A=1\nARG B=${A}2\nARG C\nARG TARGETARCH\nFROM img:$B-$C-$TARGETARCH-${UNDECLARED:-u}\n")
    p = plan(df, {"C": "c", "UNDECLARED": "x"})
    assert p.stages[0].base == f"img:12-c-{Platform.host().architecture}-u"
    assert p.global_scope["A"] == "1" and "UNDECLARED" not in p.global_scope
    # a build arg overrides a default, and later defaults see it
    assert plan(df, {"A": "9", "C": ""}).stages[0].base.startswith("img:92--")


def test_platform_args_for_this_host() -> None:
    host = Platform.host()
    args = platform_args()
    assert args["TARGETPLATFORM"] == args["BUILDPLATFORM"] == str(host)
    assert args["TARGETOS"] == "linux" and args["TARGETARCH"] == host.architecture
    assert args["TARGETVARIANT"] == (host.variant or "")
    p = plan(parse("FROM --platform=$BUILDPLATFORM img\n"), platform=str(host))
    assert p.stages[0].platform == str(host)


def test_foreign_platform_is_refused() -> None:
    other = "linux/s390x" if Platform.host().architecture != "s390x" else "linux/amd64"
    with pytest.raises(DockerfileError, match="cannot be built on this"):
        check_platform(other)
    with pytest.raises(DockerfileError, match="invalid platform"):
        check_platform("linux")


def test_find_stage_by_name_or_index() -> None:
    df = parse("FROM a AS one\nFROM b\nFROM c AS three\n")
    assert find_stage(df, "ONE") == 0
    assert find_stage(df, "1") == 1
    assert find_stage(df, "alpine:3") is None
    with pytest.raises(DockerfileError, match="invalid stage index 7"):
        find_stage(df, "7")


def test_errors() -> None:
    with pytest.raises(DockerfileError, match='target stage "nope" could not be found'):
        plan(parse("FROM a AS x\n"), target="nope")
    with pytest.raises(DockerfileError) as exc:
        plan(parse("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n"))
    assert "circular dependency detected on stage" in str(exc.value)
    with pytest.raises(DockerfileError) as exc:
        plan(parse("FROM a\nCOPY --from=0 / /\n"))
    assert str(exc.value).startswith("Dockerfile:1: FROM: circular dependency detected on stage: 0")
    with pytest.raises(DockerfileError) as exc:
        plan(parse("ARG B\nFROM $B\n"))
    assert str(exc.value) == "Dockerfile:2: FROM: base name ($B) should not be blank"
    with pytest.raises(DockerfileError) as exc:
        plan(parse("FROM ${B:?required}\n"))
    assert str(exc.value) == "Dockerfile:1: FROM: B: required"


def test_parse_mount() -> None:
    assert parse_mount("type=cache,target=/root/.cache,id=x,sharing=locked") == {
        "type": "cache", "target": "/root/.cache", "id": "x", "sharing": "locked"}
    assert parse_mount('type=bind,"source=a,b",readonly') == {
        "type": "bind", "source": "a,b", "readonly": "true"}
