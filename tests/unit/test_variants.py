"""with_options variants (thaw_core.variants and the SDK's handles): what a
variant's spec is, how it is named, and what the handle's calls carry."""

from __future__ import annotations

import pytest
import thaw as modal
from thaw_core.schema import FunctionSpec
from thaw_core.schema.base import check_name
from thaw_core.variants import FunctionOverrides, derive, variant_name


def _app() -> tuple[modal.App, modal.Function, modal.Cls]:
    app = modal.App("variants")

    @app.function(cpu=1, memory=512, min_containers=2, schedule=modal.Period(hours=1))
    def f() -> None: ...

    @app.cls(gpu="T4")
    class Model:
        @modal.method()
        def predict(self) -> None: ...

    return app, f, Model


def test_a_variant_replaces_what_is_given_and_keeps_the_rest() -> None:
    _, f, _ = _app()
    bigger = f.with_options(memory=(1024, 2048), gpu=["H100", "A100-80GB"], timeout=30)

    spec = bigger.spec
    assert (spec.resources.memory_mb, spec.resources.memory_limit_mb) == (1024, 2048)
    assert spec.resources.gpu == "H100,A100-80GB" and spec.resources.cpu == 1.0
    assert spec.timeout_s == 30.0 and spec.variant_of == "f" and spec.name != "f"
    check_name("function", spec.name)
    # Not inherited: the base already runs on the schedule and keeps the warm pool.
    assert spec.schedule is None and spec.autoscale.min_containers == 0
    assert f.spec.resources.memory_mb == 512  # the original is unchanged


def test_the_calls_of_a_variant_go_to_the_base_with_the_overrides() -> None:
    _, f, Model = _app()
    target = f.with_options(cpu=2)._target()
    assert target.function == "f"
    assert FunctionOverrides(cpu=2.0, cpu_limit=2.0).encode() == target.options
    assert f._target().options == b""

    method = Model.with_options(memory=300)().predict._target()
    assert (method.function, method.method) == ("Model", "predict")
    assert method.options == FunctionOverrides(memory_mb=300, memory_limit_mb=300).encode()


def test_with_options_twice_adds_up_and_names_one_variant() -> None:
    _, f, _ = _app()
    twice = f.with_options(cpu=2).with_options(memory=1024)
    once = f.with_options(memory=1024, cpu=2)
    assert twice._target() == once._target()
    assert twice.spec == once.spec


def test_a_variant_name_is_a_function_name_even_for_long_names() -> None:
    name = variant_name("x" * 63, FunctionOverrides(cpu=1.0))
    assert check_name("function", name) == name
    assert name != variant_name("x" * 63, FunctionOverrides(cpu=2.0))


def test_a_web_endpoint_variant_has_no_endpoint_of_its_own() -> None:
    spec = FunctionSpec(name="w", module="m", qualname="w", experimental_options={"web": {}})
    assert derive(spec, FunctionOverrides(cpu=1.0)).experimental_options == {}


@pytest.mark.parametrize("option", ["region", "cloud"])
def test_options_thaw_does_not_carry_out_are_refused_by_name(option: str) -> None:
    _, f, Model = _app()
    with pytest.raises(modal.exception.InvalidError, match=f"{option}="):
        f.with_options(**{option: "x"})
    with pytest.raises(modal.exception.InvalidError, match=f"{option}="):
        Model.with_options(**{option: "x"})


def test_a_variant_passed_as_an_argument_still_calls_the_variant() -> None:
    import cloudpickle

    _, f, Model = _app()
    bigger = f.with_options(cpu=2)
    assert cloudpickle.loads(cloudpickle.dumps(bigger))._target() == bigger._target()
    big_model = Model.with_options(memory=300)
    method = cloudpickle.loads(cloudpickle.dumps(big_model))().predict
    assert method._target() == big_model().predict._target()
