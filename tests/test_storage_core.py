"""The storage core's grammar: digests and repository names."""

import pytest

from pyreg.storage.digest import Digest, DigestError, DigestMismatchError, DigestVerifier
from pyreg.storage.names import is_valid_tag, name_problem


def test_digest_roundtrip_and_algorithms() -> None:
    d = Digest.of(b"hello")
    assert str(d).startswith("sha256:") and Digest.parse(str(d)) == d
    d512 = Digest.of(b"hello", "sha512")
    assert len(d512.hex) == 128 and Digest.parse(str(d512)) == d512


@pytest.mark.parametrize("value,unsupported", [
    ("sha256:abc", False),
    ("sha256:" + "A" * 64, False),
    ("nocolon", False),
    ("md5:" + "a" * 32, True),
    ("sha384:" + "a" * 96, True),
])
def test_bad_digests(value: str, unsupported: bool) -> None:
    with pytest.raises(DigestError) as info:
        Digest.parse(value)
    assert info.value.unsupported is unsupported


def test_verifier_detects_mismatch() -> None:
    verifier = DigestVerifier(Digest.of(b"right"))
    verifier.update(b"wrong")
    with pytest.raises(DigestMismatchError):
        verifier.verify()


@pytest.mark.parametrize("name", ["a", "library/busybox", "my-team/api.v2/x__y", "a" * 255])
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "Upper", "a//b", "/a", "a/", "../a", "a/../b", "-a", "a-", "a" * 256])
def test_bad_names(name: str) -> None:
    assert name_problem(name) is not None


def test_tags() -> None:
    assert is_valid_tag("latest") and is_valid_tag("_x.Y-1") and is_valid_tag("a" * 128)
    assert not is_valid_tag(".x") and not is_valid_tag("-x") and not is_valid_tag("a" * 129)
