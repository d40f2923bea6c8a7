"""runtime/build/records.py: the build's value classes as dataclasses would make them, and the
modules of a cached rebuild importing neither ``dataclasses`` (inspect, ast, dis, tokenize) nor
the filesystem driver (asyncio) for the file version rule."""

from __future__ import annotations

import pytest

from pyreg.runtime.build.records import FrozenRecordError, field, record
from tests.fixtures import cliparse


@record(frozen=True)
class Point:
    x: int
    y: int = 0


@record
class Bag:
    name: str
    items: list[str] = field(default_factory=list)
    size: int = 1


def test_init_defaults_and_factories() -> None:
    assert (Point(1).x, Point(1).y, Point(1, 2).y, Point(y=3, x=4).x) == (1, 0, 2, 4)
    a, b = Bag("a"), Bag("b", size=2)
    a.items.append("x")
    assert (a.items, b.items, b.size) == (["x"], [], 2)  # a new list for each
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, 2, 3)  # type: ignore[call-arg]


def test_equality_repr_hash_and_frozen() -> None:
    assert Point(1, 2) == Point(1, 2) and Point(1, 2) != Point(2, 1)
    assert repr(Point(1, 2)) == "Point(x=1, y=2)"
    assert repr(Bag("a")) == "Bag(name='a', items=[], size=1)"
    assert len({Point(1, 2), Point(1, 2)}) == 1
    with pytest.raises(TypeError):
        hash(Bag("a"))  # mutable and compared by value, as a dataclass
    with pytest.raises(FrozenRecordError):
        Point(1).x = 2  # type: ignore[misc]
    bag = Bag("a")
    bag.size = 5
    assert bag == Bag("a", [], 5)


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]


def test_a_cached_rebuild_imports_no_dataclasses_and_no_driver() -> None:
    code = ("import sys\n"
            "import pyreg.runtime.commands.build, pyreg.runtime.build.executor\n"
            "import pyreg.runtime.build.stages, pyreg.runtime.build.dockerfile\n"
            "import pyreg.runtime.build.context, pyreg.runtime.build.hashcache\n"
            "print(sorted(m for m in ('dataclasses', 'inspect', 'asyncio', 'pyreg.storage.filesystem')"
            " if m in sys.modules))\n")
    p = cliparse.bare_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
