"""The contract with the in-container runtime: markers on functions,
thaw._cls.instantiate / hooks / resolve."""

from __future__ import annotations

import sys
import types

import pytest
import thaw
from thaw import _cls
from thaw._resolve import resolve

app = thaw.App("cls-contract")


class Base:
    @thaw.enter(snap=True)
    def load(self) -> None:
        self.order.append("load")

    @thaw.exit()
    def close(self) -> None: ...

    @thaw.method()
    def shared(self) -> str:
        return "base"


@app.cls()
class Model(Base):
    name: str = thaw.parameter()
    size: int = thaw.parameter(default=3)
    not_a_parameter = "class attribute"

    def __init__(self) -> None:
        self.order = ["init"]

    @thaw.enter()
    def warm(self) -> None:
        self.order.append("warm")

    @thaw.method()
    def predict(self, x: int) -> int:
        return x * self.size

    @thaw.method()
    def tokens(self, text: str):
        yield from text.split()

    @thaw.method()
    def shared(self) -> str:  # overrides Base's
        return "model"


@app.function()
def plain(x: int) -> int:
    return x


def test_markers_set_attributes_and_return_the_function_itself() -> None:
    raw = Model.user_cls
    assert raw.load.__thaw_enter__ == {"snap": True}
    assert raw.warm.__thaw_enter__ == {"snap": False}
    assert raw.close.__thaw_exit__ is True
    assert raw.predict.__thaw_method__ is True and raw.predict.__thaw_is_generator__ is False
    assert raw.tokens.__thaw_is_generator__ is True
    assert isinstance(raw.__dict__["predict"], types.FunctionType)


def test_user_class_and_function_are_kept_unchanged() -> None:
    assert isinstance(Model.user_cls, type) and Model.user_cls.__name__ == "Model"
    assert plain.raw_f(4) == 4 and isinstance(plain.raw_f, types.FunctionType)


def test_hooks_in_definition_order_with_overrides() -> None:
    found = _cls.hooks(Model.user_cls)
    assert [f.__name__ for f in found.enter_snap] == ["load"]
    assert [f.__name__ for f in found.enter_nosnap] == ["warm"]
    assert [f.__name__ for f in found.exit] == ["close"]
    assert list(found.methods) == ["predict", "tokens", "shared"]
    instance = _cls.instantiate(Model.user_cls, {"name": "n"})
    assert found.methods["shared"](instance) == "model"
    assert list(found.methods["tokens"](instance, "a b")) == ["a", "b"]


def test_instantiate_sets_parameters_with_defaults_then_runs_init() -> None:
    obj = _cls.instantiate(Model.user_cls, {"name": "bge"})
    assert (obj.name, obj.size) == ("bge", 3)
    assert obj.order == ["init"]
    assert obj.not_a_parameter == "class attribute"
    assert _cls.instantiate(Model.user_cls, {"name": "x", "size": 10}).size == 10
    # What the runtime does next: enter hooks on the instance.
    found = _cls.hooks(Model.user_cls)
    for hook in (*found.enter_snap, *found.enter_nosnap):
        hook(obj)
    assert obj.order == ["init", "load", "warm"]
    assert found.methods["predict"](obj, 2) == 6


def test_instantiate_refuses_missing_and_unknown_parameters_clearly() -> None:
    with pytest.raises(TypeError, match=r"Model\(\) missing required parameter\(s\): 'name'"):
        _cls.instantiate(Model.user_cls, {})
    with pytest.raises(
        TypeError, match=r"unexpected parameter\(s\) 'colour'; its parameters are: name, size"
    ):
        _cls.instantiate(Model.user_cls, {"name": "a", "colour": "red"})


def test_parameters_declared_on_the_class() -> None:
    params = _cls.parameters(Model.user_cls)
    assert list(params) == ["name", "size"]
    assert params["name"].required and params["size"].default == 3
    assert isinstance(thaw.parameter(default=1), thaw.Parameter)


def test_resolve_finds_the_thaw_objects_a_spec_names() -> None:
    module = sys.modules[__name__]
    assert resolve(module, Model.spec.qualname) is Model
    assert resolve(module, "plain") is plain
    with pytest.raises(AttributeError, match="has no 'missing'"):
        resolve(module, "missing")
    with pytest.raises(TypeError, match="Base is type, not a function or class decorated"):
        resolve(module, "Base")


def test_markers_refuse_what_they_cannot_mark() -> None:
    with pytest.raises(thaw.exception.InvalidError, match="below @app.function"):
        thaw.method()(plain)
    with pytest.raises(thaw.exception.InvalidError, match="decorates a method"):
        thaw.enter()(Base)
