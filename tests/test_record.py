"""`auditor.record.dataclass` behaves as `dataclasses.dataclass(frozen=True, slots=True)`."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from auditor import record
from auditor.facts.model import Destination, Facts, PersistedSysctl, PortRange, Unavailable


@record.dataclass(frozen=True, slots=True)
class Rec:
    a: int
    b: str
    c: dict[str, int] = record.field(default_factory=dict)
    d: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Std:
    a: int
    b: str
    c: dict[str, int] = dataclasses.field(default_factory=dict)
    d: int | None = None


@record.dataclass(frozen=True, slots=True)
class Derived:
    base: int
    double: int = record.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "double", self.base * 2)


@record.dataclass(frozen=True, slots=True)
class One:
    x: tuple[int, ...]


CALLS = [
    ((1, "x"), {}),
    ((1, "x", {"k": 1}), {}),
    ((1, "x", {"k": 1}, 5), {}),
    ((), {"a": 1, "b": "x"}),
    ((), {"a": 1, "b": "x", "c": {}, "d": 2}),
    ((1,), {"b": "x", "d": 3}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_same_values_repr_eq_and_hash_as_a_dataclass(args: tuple, kwargs: dict) -> None:
    r, s = Rec(*args, **kwargs), Std(*args, **kwargs)
    assert repr(r).replace("Rec(", "Std(") == repr(s)
    assert [getattr(r, f.name) for f in dataclasses.fields(Std)] == [
        getattr(s, f.name) for f in dataclasses.fields(Std)
    ]
    assert r == Rec(*args, **kwargs)
    assert r != s  # another class, as between two dataclasses
    hashable = Rec(r.a, r.b, d=r.d) if not r.c else None
    if hashable is not None:
        # a field holding a dict makes the instance unhashable, as for a dataclass
        with pytest.raises(TypeError):
            hash(hashable)
    assert hash(One((1, 2))) == hash(((1, 2),))
    assert hash(Unavailable("x")) == hash(("x",))


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1,), {}), ((1, "x", {}, None, 9), {}), ((1, "x"), {"e": 1}), ((1, "x"), {"a": 2})],
)
def test_bad_calls_are_type_errors_like_a_dataclass(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError) as std:
        Std(*args, **kwargs)
    with pytest.raises(TypeError) as rec:
        Rec(*args, **kwargs)
    assert str(rec.value).replace("Rec.", "Std.") == str(std.value)


def test_frozen_and_slotted() -> None:
    r = Rec(1, "x")
    with pytest.raises(AttributeError, match="cannot assign to field 'a'"):
        r.a = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete field 'a'"):
        del r.a  # type: ignore[misc]
    with pytest.raises(AttributeError):
        r.other = 1  # type: ignore[attr-defined]
    assert not hasattr(r, "__dict__")
    assert Rec.__slots__ == ("a", "b", "c", "d")
    assert Rec.__match_args__ == ("a", "b", "c", "d")
    assert Rec(1, "x").c is not Rec(1, "x").c  # a fresh default per instance


def test_post_init_and_init_false() -> None:
    d = Derived(4)
    assert d.double == 8
    assert Derived.__match_args__ == ("base",)
    assert repr(d) == "Derived(base=4, double=8)"
    assert record.replace(d, base=5).double == 10
    assert dataclasses.replace(d, base=6).double == 12
    with pytest.raises(TypeError):
        Derived(4, 8)  # type: ignore[call-arg]


def test_dataclasses_introspection_and_replace() -> None:
    assert dataclasses.is_dataclass(Rec) and dataclasses.is_dataclass(Rec(1, "x"))
    std = [(f.name, f.type, f.default, f.default_factory, f.init) for f in dataclasses.fields(Std)]
    rec = [(f.name, f.type, f.default, f.default_factory, f.init) for f in dataclasses.fields(Rec)]
    assert rec == std
    r = Rec(1, "x", {"k": 1})
    assert dataclasses.replace(r, a=2) == record.replace(r, a=2) == Rec(2, "x", {"k": 1})
    assert dataclasses.asdict(r) == dataclasses.asdict(Std(1, "x", {"k": 1}))
    assert Rec.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_pickle_and_copy() -> None:
    p = PortRange.parse("1024 65535", "8080")
    d = Destination("10.0.0.1", "10.0.0.2", 80, {"TIME_WAIT": 3}, 1)
    for value in (p, d, Unavailable("why")):
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
        assert copy.copy(value) == value


def test_model_defaults_as_before() -> None:
    p = PersistedSysctl(files=(), assignments=())
    assert p.effective == {} and p.procps_differences == {} and p.masked == ()
    assert p.effective is not PersistedSysctl(files=(), assignments=()).effective
    assert Facts.__match_args__[:2] == ("host", "collected_at")
