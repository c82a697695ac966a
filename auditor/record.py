"""Frozen, slotted record classes built without generating code: `@dataclass(frozen=True,
slots=True)` at a fraction of its start-up cost.

The standard `dataclasses.dataclass` writes each class's methods as source text and exec()s it
(about half a millisecond per class), and importing the module loads `inspect`, `ast`, `dis`
and `tokenize`: the forty records on the path of a plain `portaudit audit` cost more than
auditing an idle host. This decorator makes the same class from functions shared by every
record: `__init__` (positional or keyword arguments, defaults, `field(default_factory=...)`,
`field(init=False)`, `__post_init__`), `__repr__`, `__eq__`, `__hash__` (over the field
values, in order, as a dataclass does), `__setattr__` and `__delattr__` that refuse every
field, `__match_args__`, `__slots__`, and pickling.

The classes stay dataclasses for the code that introspects them (`dataclasses.fields`,
`replace`, `asdict`, `is_dataclass`: the facts JSON round trip, the schema, tests): their
`__dataclass_fields__` is made the first time someone reads it, by applying the standard
decorator to a throwaway class with the same annotations and defaults. Only that code imports
`dataclasses`. `replace` here does what `dataclasses.replace` does for the modules on the
audit's path.

Only what the package uses is supported: `frozen=True, slots=True`, no base class, no
`ClassVar` or `InitVar`, `field(default=..., default_factory=..., init=...)`; anything else is a
TypeError when the class is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter, itemgetter
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")
_MISSING: Any = object()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a record (what `dataclasses.FrozenInstanceError` means)."""


class _Field:
    """What `field(...)` returns in a class body; the decorator reads and removes it."""

    __slots__ = ("default", "default_factory", "init")

    def __init__(self, default: Any, default_factory: Any, init: bool) -> None:
        self.default, self.default_factory, self.init = default, default_factory, init


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] = _MISSING,
    init: bool = True,
) -> Any:
    """A field's default (a value or a factory called per instance), or `init=False` for one
    that `__post_init__` sets."""
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return _Field(default, default_factory, init)


class _Spec:
    """A record class's fields, as the shared methods read them."""

    __slots__ = ("defaults", "factories", "init_names", "names", "no_init", "post_init", "qualname")

    def __init__(self, cls: type, names: tuple[str, ...], specs: dict[str, _Field]) -> None:
        """`cls`: the class as written (its `__post_init__` and name)."""
        self.names = names
        self.init_names = tuple(n for n in names if n not in specs or specs[n].init)
        self.no_init = tuple(n for n in names if n in specs and not specs[n].init)
        self.defaults = {
            n: s.default for n, s in specs.items() if s.default is not _MISSING and s.init
        }
        self.factories = {
            n: s.default_factory
            for n, s in specs.items()
            if s.default_factory is not _MISSING and s.init
        }
        self.post_init = getattr(cls, "__post_init__", None)
        self.qualname = cls.__qualname__


Setter = Callable[[Any, Any], None]


def _make_init(spec: _Spec) -> tuple[Any, Callable[[type], None]]:
    """`__init__`, and the function that gives it the slots of the class made with it."""
    names, count = spec.init_names, len(spec.init_names)
    defaults, factories, post_init = spec.defaults, spec.factories, spec.post_init
    setters: tuple[Setter, ...] = ()
    by_name: dict[str, Setter] = {}

    def bind(cls: type) -> None:
        nonlocal setters, by_name
        setters = tuple(cls.__dict__[n].__set__ for n in names)
        by_name = dict(zip(names, setters, strict=True))

    tail: list[Any] = []  # the defaults of the last fields, while they are plain values
    for name in reversed(names):
        if name not in defaults:
            break
        tail.insert(0, defaults[name])
    tail_defaults, least = tuple(tail), count - len(tail)
    required = sum(1 for n in names if n not in defaults and n not in factories)

    def fill(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Keywords, factories, and the errors Python gives for a bad call."""
        given = len(args)
        if given > count:
            takes = f"from {required + 1} to {count + 1}" if required < count else count + 1
            raise TypeError(
                f"{spec.qualname}.__init__() takes {takes} positional arguments"
                f" but {given + 1} were given"
            )
        for set_value, value in zip(setters, args):  # noqa: B905 - args is never longer
            set_value(self, value)
        missing = []
        for name in names[given:]:
            if name in kwargs:
                by_name[name](self, kwargs.pop(name))
            elif name in defaults:
                by_name[name](self, defaults[name])
            elif name in factories:
                by_name[name](self, factories[name]())
            else:
                missing.append(name)
        if kwargs:
            name = next(iter(kwargs))
            if name in names:
                raise TypeError(
                    f"{spec.qualname}.__init__() got multiple values for argument {name!r}"
                )
            raise TypeError(
                f"{spec.qualname}.__init__() got an unexpected keyword argument {name!r}"
            )
        if missing:
            quoted = [repr(m) for m in missing]
            listed = " and ".join([", ".join(quoted[:-1]), quoted[-1]] if quoted[1:] else quoted)
            raise TypeError(
                f"{spec.qualname}.__init__() missing {len(missing)} required positional"
                f" argument{'s' if len(missing) > 1 else ''}: {listed}"
            )

    pick = itemgetter(*names) if count > 1 else None
    plain = {n: defaults[n] for n in names if n in defaults} if not factories else {}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs:
            if len(kwargs) < count and not args:
                kwargs = plain | kwargs
            if args or len(kwargs) != count or pick is None:
                fill(self, args, kwargs)
                args = ()
            else:
                try:
                    args = pick(kwargs)
                except KeyError:
                    fill(self, args, kwargs)
                    args = ()
        elif len(args) != count:
            if least <= len(args) < count:
                args += tail_defaults[len(args) - least :]
            else:
                fill(self, args, kwargs)
                args = ()
        for set_value, value in zip(setters, args):  # noqa: B905 - all or none of them
            set_value(self, value)
        if post_init is not None:
            post_init(self)

    __init__.__qualname__ = f"{spec.qualname}.__init__"
    return __init__, bind


def _make_methods(spec: _Spec) -> tuple[dict[str, Any], Callable[[type], None]]:
    """The shared methods, and the function that tells them the class made with them."""
    cls: type = object

    def bind(made: type) -> None:
        nonlocal cls
        cls = made

    names = spec.names
    fields = frozenset(names)
    values: Any = attrgetter(*names) if len(names) > 1 else None
    if len(names) == 1:
        one = attrgetter(names[0])

        def values(obj: Any) -> tuple[Any, ...]:
            return (one(obj),)

    elif not names:

        def values(obj: Any) -> tuple[Any, ...]:
            return ()

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, values(self), strict=True))
        return f"{self.__class__.__qualname__}({inner})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    def __hash__(self: Any) -> int:
        return hash(values(self))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in fields:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in fields:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    def __getstate__(self: Any) -> list[Any]:
        return list(values(self))

    def __setstate__(self: Any, state: list[Any]) -> None:
        for name, value in zip(names, state, strict=True):
            object.__setattr__(self, name, value)

    methods: dict[str, Any] = {
        "__repr__": __repr__,
        "__eq__": __eq__,
        "__hash__": __hash__,
        "__setattr__": __setattr__,
        "__delattr__": __delattr__,
        "__getstate__": __getstate__,
        "__setstate__": __setstate__,
    }
    for name, fn in methods.items():
        fn.__qualname__ = f"{spec.qualname}.{name}"
    return methods, bind


class _DataclassView:
    """`__dataclass_fields__` / `__dataclass_params__`, made on first read from a standard
    dataclass with the same annotations and defaults (which imports `dataclasses` then)."""

    def __init__(self, attr: str, annotations: dict[str, Any], specs: dict[str, _Field]) -> None:
        self.attr, self.annotations, self.specs = attr, annotations, specs

    def __get__(self, obj: Any, owner: type) -> Any:
        import dataclasses

        ns: dict[str, Any] = {
            "__annotations__": dict(self.annotations),
            "__module__": owner.__module__,
            "__qualname__": owner.__qualname__,
        }
        for name, s in self.specs.items():
            ns[name] = dataclasses.field(
                default=s.default if s.default is not _MISSING else dataclasses.MISSING,
                default_factory=(
                    s.default_factory if s.default_factory is not _MISSING else dataclasses.MISSING
                ),
                init=s.init,
            )
        shadow: Any = dataclasses.dataclass(frozen=True)(type(owner.__name__, (), ns))
        for attr in ("__dataclass_fields__", "__dataclass_params__"):
            type.__setattr__(owner, attr, getattr(shadow, attr))
        return getattr(shadow, self.attr)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def dataclass(*, frozen: bool = True, slots: bool = True) -> Callable[[type[T]], type[T]]:
    """`@dataclass(frozen=True, slots=True)` without code generation (see the module doc)."""
    if frozen is not True or slots is not True:
        raise TypeError("auditor.record.dataclass makes frozen, slotted classes only")
    return _build


def _build(cls: type[T]) -> type[T]:
    ns = dict(cls.__dict__)
    annotations: dict[str, Any] = ns.get("__annotations__", {})
    if cls.__bases__ != (object,):
        raise TypeError(f"{cls.__qualname__}: a record has no base class")
    names = tuple(annotations)
    specs: dict[str, _Field] = {}
    seen_default = False
    for name in names:
        text = annotations[name]
        if isinstance(text, str) and text.split("[", 1)[0].strip() in (
            "ClassVar",
            "typing.ClassVar",
            "InitVar",
            "dataclasses.InitVar",
        ):
            raise TypeError(f"{cls.__qualname__}.{name}: ClassVar and InitVar are not supported")
        value = ns.pop(name, _MISSING)
        if value is _MISSING:
            if seen_default:
                raise TypeError(f"non-default argument {name!r} follows default argument")
            continue
        s = value if isinstance(value, _Field) else _Field(value, _MISSING, True)
        if s.init and (s.default is not _MISSING or s.default_factory is not _MISSING):
            seen_default = True
        elif s.init and seen_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        specs[name] = s
    ns.pop("__dict__", None)
    ns.pop("__weakref__", None)
    ns["__slots__"] = names
    ns["__match_args__"] = tuple(n for n in names if n not in specs or specs[n].init)
    ns["__dataclass_fields__"] = _DataclassView("__dataclass_fields__", annotations, specs)
    ns["__dataclass_params__"] = _DataclassView("__dataclass_params__", annotations, specs)
    # Every method goes in before the class is made: setting a special method on a class
    # afterwards costs more than making it.
    spec = _Spec(cls, names, specs)
    methods, bind_methods = _make_methods(spec)
    ns.update(methods)
    ns["__init__"], bind_init = _make_init(spec)
    ns["__qualname__"] = cls.__qualname__
    new: Any = type(cls.__name__, cls.__bases__, ns)
    bind_methods(new)
    bind_init(new)
    built: type[T] = new
    return built


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of record `obj` with `changes` (what `dataclasses.replace` does)."""
    spec_names: tuple[str, ...] = type(obj).__match_args__  # type: ignore[attr-defined]
    for name in spec_names:
        if name not in changes:
            changes[name] = getattr(obj, name)
    return type(obj)(**changes)
