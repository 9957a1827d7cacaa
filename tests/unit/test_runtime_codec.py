"""How the runtime reads arguments and parameters and writes return values,
for both codecs, and the errors a caller gets when they do not fit."""

from __future__ import annotations

import pickle
import sys
import threading
import types

import cloudpickle
import msgspec
import pytest
from thaw.exception import DeserializationError, ExecutionError
from thaw.runtime.codec import (
    InputDecodeError,
    ResultEncodeError,
    decode_args,
    decode_params,
    encode_value,
)


def test_pickled_arguments() -> None:
    assert decode_args("pickle", cloudpickle.dumps(((1, "a"), {"k": [2]}))) == (
        (1, "a"),
        {"k": [2]},
    )
    assert decode_args("pickle", b"") == ((), {})


def test_json_arguments() -> None:
    assert decode_args("json", b'{"args": [1, "a"], "kwargs": {"k": null}}') == (
        [1, "a"],
        {"k": None},
    )
    assert decode_args("json", b'{"kwargs": {"x": 1}}') == ([], {"x": 1})
    assert decode_args("json", b"") == ((), {})


@pytest.mark.parametrize(
    ("codec", "data", "message"),
    [
        ("pickle", b"garbage", "could not unpickle the arguments: UnpicklingError"),
        (
            "pickle",
            pickle.dumps([1, 2]),
            "pickled arguments must be (args: tuple, kwargs: dict[str, Any]), got list",
        ),
        ("pickle", pickle.dumps(((), {1: 2})), "pickled arguments must be"),
        ("json", b"[1, 2]", "bad JSON arguments"),
        ("json", b'{"args": 1}', "bad JSON arguments (Expected `array`, got `int`"),
        ("json", b'{"argz": []}', "unknown field `argz`"),
        ("json", b"{", 'expected {"args": [...], "kwargs": {...}}'),
    ],
)
def test_bad_arguments(codec: str, data: bytes, message: str) -> None:
    with pytest.raises(InputDecodeError) as e:
        decode_args(codec, data)  # type: ignore[arg-type]
    assert message in str(e.value)
    assert isinstance(
        e.value, DeserializationError
    )  # `except thaw.exception.DeserializationError` catches it


class Point:
    pass


def test_arguments_of_a_module_the_image_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The caller's own type, pickled by reference to a module the container lacks.
    module = types.ModuleType("nosuchmod")
    module.Point = Point  # type: ignore[attr-defined]
    monkeypatch.setattr(Point, "__module__", "nosuchmod")
    monkeypatch.setitem(sys.modules, "nosuchmod", module)
    data = pickle.dumps(((Point(),), {}))
    monkeypatch.delitem(sys.modules, "nosuchmod")
    with pytest.raises(
        InputDecodeError, match="No module named 'nosuchmod'.*image must have every module"
    ):
        decode_args("pickle", data)


def test_parameters() -> None:
    assert decode_params("pickle", b"") == {}
    assert decode_params("pickle", cloudpickle.dumps({"name": "ada"})) == {"name": "ada"}
    assert decode_params("json", b'{"name": "ada", "n": 2}') == {"name": "ada", "n": 2}
    with pytest.raises(InputDecodeError, match="must be a dict"):
        decode_params("pickle", cloudpickle.dumps(["ada"]))
    with pytest.raises(InputDecodeError, match="bad JSON parameters"):
        decode_params("json", b'["ada"]')


def test_return_values() -> None:
    assert msgspec.json.decode(encode_value("json", {"a": [1, 2.5, None]}, "m.f")) == {
        "a": [1, 2.5, None]
    }
    square = encode_value("pickle", lambda x: x * x, "m.f")  # cloudpickle: by value
    assert pickle.loads(square)(3) == 9


def test_return_values_that_do_not_encode() -> None:
    with pytest.raises(ResultEncodeError) as e:
        encode_value("json", {"lock": threading.Lock()}, "app.f")
    assert "the return value of app.f (dict) is not JSON-serialisable" in str(e.value)
    assert "call with the pickle codec" in str(e.value)
    assert isinstance(e.value, ExecutionError)

    with pytest.raises(
        ResultEncodeError, match=r"return value of app.f \(lock\) could not be pickled: TypeError"
    ):
        encode_value("pickle", threading.Lock(), "app.f")
