"""``Frozen``: the base of the small immutable value classes that every command touches (a digest,
a reference, a platform). What ``@dataclass(frozen=True, slots=True, order=True)`` would generate
— equality, hash, order and repr over ``__slots__``, no assignment — without importing
``dataclasses``, which imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``): about
10 ms of start-up for a command like the pull of a present image, whose whole budget is 60.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds of the same start-up
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Frozen:
    """Subclasses list their fields in ``__slots__`` (in ``__init__``'s order) and set them with
    ``_set`` from ``__init__``; instances compare, hash and sort as the tuple of their fields,
    and only with instances of the same class (as dataclasses do)."""

    __slots__: tuple[str, ...] = ()
    # the fields compared, hashed and shown, when not all of them (a dataclass's compare=False)
    _compared: tuple[str, ...] = ()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _names(self) -> tuple[str, ...]:
        return self._compared or self.__slots__

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._names())

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (``dataclasses.replace``); ``__init__`` takes every field by
        its name."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __lt__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() < other._fields()

    def __le__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() <= other._fields()

    def __gt__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() > other._fields()

    def __ge__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() >= other._fields()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names())
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, tuple(getattr(self, name) for name in self.__slots__))

    def __copy__(self) -> Frozen:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        return self
