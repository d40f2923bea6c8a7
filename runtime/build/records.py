"""``record``: what ``@dataclass`` gives the build's value classes — ``__init__`` with defaults and
``field(default_factory=…)``, ``==``, ``repr``, and with ``frozen=True`` no assignment and a hash —
without importing ``dataclasses``, which imports ``inspect`` (and ``ast``, ``dis``, ``tokenize``):
~5 ms of a cached rebuild's start-up, most of what is left besides the interpreter's own.

Only what the build uses: no inheritance between records, no ``__post_init__``, no field options
but ``default_factory``. Fields are the class's annotations, in order (``ClassVar`` is not
recognised: the build has none). As with dataclasses, a field with a default may not come
before one without, and instances compare equal only with instances of the same class.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up; mypy reads records as dataclasses (PEP 681)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform, overload

    T = TypeVar("T")


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


_MISSING = object()


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is made anew for each instance (``dataclasses.field``'s)."""
    return _Factory(default_factory)


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record (``dataclasses.FrozenInstanceError``)."""


def _fields(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in self.__record_fields__)


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _fields(self) == _fields(other)


def _repr(self: Any) -> str:
    body = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_fields__)
    return f"{type(self).__qualname__}({body})"


def _hash(self: Any) -> int:
    return hash(_fields(self))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r}")


def _make(cls: type[T], frozen: bool) -> type[T]:
    names = list(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063  (inspect: the import avoided)
    scope: dict[str, Any] = {"_MISSING": _MISSING, "_set": object.__setattr__}
    params, body = [], []
    seen_default = False
    for name in names:
        default = cls.__dict__.get(name, _MISSING)
        if isinstance(default, _Factory):
            scope[f"_f_{name}"] = default.make
            params.append(f"{name}=_MISSING")
            value = f"_f_{name}() if {name} is _MISSING else {name}"
            delattr(cls, name)
        elif default is not _MISSING:
            scope[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
            value = name
        else:
            if seen_default:
                raise TypeError(f"{cls.__name__}: field {name!r} without a default follows one with one")
            params.append(name)
            value = name
        seen_default = seen_default or default is not _MISSING
        body.append(f"_set(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
    source = f"def __init__(self, {', '.join(params)}):\n    " + ("\n    ".join(body) or "pass") + "\n"
    exec(source, scope)  # what dataclasses does too: one plain __init__, fast per instance
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    methods: dict[str, Any] = {"__init__": init, "__record_fields__": tuple(names), "__eq__": _eq,
                               "__repr__": _repr, "__hash__": None}  # mutable, compared by value: unhashable
    if frozen:
        methods.update(__hash__=_hash, __setattr__=_frozen_setattr, __delattr__=_frozen_delattr)
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


if TYPE_CHECKING:
    @overload
    def record(cls: type[T], /) -> type[T]: ...

    @overload
    def record(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...

    @dataclass_transform(field_specifiers=(field,))
    def record(cls: Any = None, /, *, frozen: bool = False) -> Any: ...
else:
    def record(cls=None, /, *, frozen=False):
        """``@record`` / ``@record(frozen=True)``: the class made a record (see the module)."""
        if cls is None:
            return lambda c: _make(c, frozen)
        return _make(cls, frozen)
