"""The client's reference grammar: Docker's parser, with the configured default registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyreg.storage.reference import (
    ERR_INVALID_FORMAT,
    ERR_NAME_TOO_LONG,
    Reference,
    ReferenceError,
    default_registry,
    parse,
    parse_repository,
)

D = "sha256:" + "a" * 64
DEF = "localhost:5000"

GOOD = [
    # input, registry, repository, tag, digest
    ("busybox", DEF, "library/busybox", "latest", None),
    ("busybox:1.36", DEF, "library/busybox", "1.36", None),
    ("myteam/api:1.4", DEF, "myteam/api", "1.4", None),
    ("a/b/c/d", DEF, "a/b/c/d", "latest", None),
    (f"busybox@{D}", DEF, "library/busybox", None, D),
    (f"busybox:v1@{D}", DEF, "library/busybox", "v1", D),
    ("localhost/foo", "localhost", "foo", "latest", None),
    ("localhost:5000/foo", DEF, "library/foo", "latest", None),  # the default registry, written out
    ("localhost:5001/foo", "localhost:5001", "foo", "latest", None),
    ("registry.example.com/foo/bar:tag", "registry.example.com", "foo/bar", "tag", None),
    ("example.com:8443/x", "example.com:8443", "x", "latest", None),
    ("127.0.0.1:5000/x/y", "127.0.0.1:5000", "x/y", "latest", None),
    ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
    ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
    ("docker.io/user/app", "docker.io", "user/app", "latest", None),
    ("Example.com/foo", "Example.com", "foo", "latest", None),  # upper case first component = domain
    ("foo_bar.baz__qux-x--y/a", "foo_bar.baz__qux-x--y", "a", "latest", None),
    ("a" * 64 + "x", DEF, "library/" + "a" * 64 + "x", "latest", None),
    ("busybox:_Under.Score-1", DEF, "library/busybox", "_Under.Score-1", None),
    ("busybox:" + "t" * 128, DEF, "library/busybox", "t" * 128, None),
]


@pytest.mark.parametrize("text,registry,repository,tag,digest", GOOD)
def test_parse_good(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse(text, default=DEF)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert (str(ref.digest) if ref.digest else None) == digest
    # The canonical string round-trips.
    assert parse(str(ref), default=DEF) == ref


BAD = [
    ("", "repository name must have at least one component"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("myteam/API:1", "invalid reference format: repository name (myteam/API) must be lowercase"),
    ("a" * 64, f"invalid repository name ({'a' * 64}), cannot specify 64-byte hexadecimal strings"),
    ("busybox:", ERR_INVALID_FORMAT),
    ("busybox:.bad", ERR_INVALID_FORMAT),
    ("busybox:-bad", ERR_INVALID_FORMAT),
    ("busybox:" + "t" * 129, ERR_INVALID_FORMAT),
    ("busybox@sha256:abc", ERR_INVALID_FORMAT),
    ("busybox@", ERR_INVALID_FORMAT),
    ("busybox@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("-busybox", ERR_INVALID_FORMAT),
    ("busybox-", ERR_INVALID_FORMAT),
    ("a//b", ERR_INVALID_FORMAT),
    ("a/", ERR_INVALID_FORMAT),
    ("/a", ERR_INVALID_FORMAT),
    ("a/../b", ERR_INVALID_FORMAT),
    ("a..b", ERR_INVALID_FORMAT),
    ("a___b", ERR_INVALID_FORMAT),
    ("host:port/x", ERR_INVALID_FORMAT),
    ("-host.com/x", ERR_INVALID_FORMAT),
    ("http://example.com/x", ERR_INVALID_FORMAT),
    ("busybox latest", ERR_INVALID_FORMAT),
    ("registry.example.com/" + "a" * 240, ERR_NAME_TOO_LONG),
]


@pytest.mark.parametrize("text,message", BAD)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ReferenceError) as info:
        parse(text, default=DEF)
    assert str(info.value) == message


def test_reference_helpers() -> None:
    ref = parse("busybox", default=DEF)
    assert ref.name == "localhost:5000/library/busybox"
    assert ref.reference == "latest"
    assert str(ref) == "localhost:5000/library/busybox:latest"
    assert ref.familiar(DEF) == "busybox:latest"
    assert parse("other.io/x/y:1", default=DEF).familiar(DEF) == "other.io/x/y:1"
    pinned = ref.with_digest(parse(f"x@{D}", default=DEF).digest)  # type: ignore[arg-type]
    assert pinned.reference == D and pinned.tag is None
    assert parse("busybox", default=DEF, default_tag=False).tag is None
    assert parse_repository("team/app", default=DEF) == Reference(DEF, "team/app")
    with pytest.raises(ReferenceError):
        parse_repository("team/app:1", default=DEF)


def test_default_registry_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYREG_REGISTRY", raising=False)
    monkeypatch.setenv("PYREG_CONFIG", str(tmp_path / "none.json"))
    assert default_registry() == "localhost:5000"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"registry": "reg.example:9000"}))
    monkeypatch.setenv("PYREG_CONFIG", str(config))
    assert default_registry() == "reg.example:9000"
    assert parse("busybox").name == "reg.example:9000/library/busybox"
    monkeypatch.setenv("PYREG_REGISTRY", "127.0.0.1:1234")
    assert parse("busybox").name == "127.0.0.1:1234/library/busybox"
    assert parse("team/x").name == "127.0.0.1:1234/team/x"
