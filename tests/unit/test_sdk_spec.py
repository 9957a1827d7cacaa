"""What the decorators record: the FunctionSpec the platform deploys, and the
clear errors a user gets for options or names it cannot take."""

from __future__ import annotations

import msgspec
import pytest
import thaw as modal
from thaw.exception import InvalidError
from thaw_core.schema import FunctionSpec, RetryPolicy


def spec_of(obj: object) -> FunctionSpec:
    spec = obj.spec  # type: ignore[attr-defined]
    assert isinstance(spec, FunctionSpec)
    return spec


def test_plain_function_spec_has_the_defaults_and_where_to_find_it() -> None:
    app = modal.App("plain")

    @app.function()
    def f(x: int) -> int:
        return x + 1

    spec = spec_of(f)
    assert (spec.name, spec.module, spec.kind) == ("f", __name__, "function")
    assert spec.qualname.endswith("<locals>.f")
    assert spec.resources.gpu is None and spec.retries == RetryPolicy() and spec.timeout_s == 300.0
    assert f.raw_f(1) == 2 and f.local(1) == 2
    assert app.registered_functions == {"f": f}


def test_every_option_lands_in_the_spec() -> None:
    app = modal.App("options")
    image = modal.Image.debian_slim(python_version="3.11").pip_install("numpy")
    volume = modal.Volume.from_name("my-data", create_if_missing=True)

    @app.function(
        image=image,
        gpu="a10g",
        cpu=2,
        memory=(4096, 8192),
        timeout=600,
        retries=modal.Retries(max_retries=3, backoff_coefficient=1.0, initial_delay=3.0),
        min_containers=1,
        max_containers=5,
        buffer_containers=2,
        scaledown_window=120,
        env={"MODE": "fast", "UNSET": None},
        secrets=[modal.Secret.from_name("my-api-key"), modal.Secret.from_dict({"TOKEN": "t"})],
        volumes={"/data": volume},
        schedule=modal.Period(hours=1),
        enable_memory_snapshot=True,
        experimental_options={"enable_gpu_snapshot": True},
    )
    @modal.concurrent(max_inputs=8)
    def gpu_task(seed: int) -> dict:
        return {"seed": seed}

    spec = spec_of(gpu_task)
    assert msgspec.to_builtins(spec.image) == {
        "steps": [
            {"op": "debian_slim", "python_version": "3.11"},
            {"op": "pip_install", "packages": ["numpy"]},
        ]
    }
    assert (spec.resources.gpu, spec.resources.cpu, spec.resources.memory_mb) == ("A10G", 2.0, 4096)
    assert spec.timeout_s == 600.0
    assert spec.retries == RetryPolicy(max_retries=3, backoff_coefficient=1.0, initial_delay_s=3.0)
    a = spec.autoscale
    assert (a.min_containers, a.max_containers, a.buffer_containers, a.scaledown_window_s) == (
        1,
        5,
        2,
        120.0,
    )
    assert spec.env == {"MODE": "fast"}
    named, local = spec.secrets
    assert (named.name, named.app_scoped) == ("my-api-key", False)
    assert local.app_scoped and b'"t"' not in msgspec.json.encode(spec)
    assert spec.experimental_options == {"enable_gpu_snapshot": True}
    assert [(m.path, m.name, m.create_if_missing) for m in spec.volumes] == [
        ("/data", "my-data", True)
    ]
    assert msgspec.to_builtins(spec.schedule) == {"kind": "period", "seconds": 3600.0}
    assert spec.enable_memory_snapshot is True
    assert spec.max_inputs == 8


def test_retries_int_is_a_retry_policy_with_that_many_retries() -> None:
    app = modal.App("retries")

    @app.function(retries=2)
    def f() -> None: ...

    assert spec_of(f).retries == RetryPolicy(max_retries=2)


@pytest.mark.parametrize(
    ("gpu", "recorded"),
    [
        ("A10G", "A10G"),
        ("a10g", "A10G"),
        ("H100:2", "H100:2"),
        ("any", "any"),
        ("A100-80GB", "A100-80GB"),
        (["L4", "T4"], "L4,T4"),
        (["h100", "A100-80GB:2"], "H100,A100-80GB:2"),
    ],
)
def test_gpu_requests_are_normalised(gpu: object, recorded: str) -> None:
    app = modal.App("gpus")

    @app.function(gpu=gpu)  # type: ignore[arg-type]
    def f() -> None: ...

    assert spec_of(f).resources.gpu == recorded


def test_cron_schedule_with_timezone() -> None:
    app = modal.App("cron")

    @app.function(schedule=modal.Cron("0 9 * * *", timezone="Europe/Paris"))
    def daily_report() -> None: ...

    assert msgspec.to_builtins(spec_of(daily_report).schedule) == {
        "kind": "cron",
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
    }


def test_app_defaults_apply_to_every_function() -> None:
    base = modal.Image.debian_slim()
    app = modal.App(
        "defaults",
        image=base,
        secrets=[modal.Secret.from_name("shared")],
        volumes={"/models": modal.Volume.from_name("models")},
    )
    own = base.pip_install("torch")

    @app.function()
    def uses_defaults() -> None: ...

    @app.function(
        image=own,
        secrets=[modal.Secret.from_name("own")],
        volumes={"/data": modal.Volume.from_name("d")},
    )
    def overrides() -> None: ...

    assert msgspec.to_builtins(spec_of(uses_defaults).image) == base.spec()
    assert [s.name for s in spec_of(uses_defaults).secrets] == ["shared"]
    assert msgspec.to_builtins(spec_of(overrides).image) == own.spec()
    assert [s.name for s in spec_of(overrides).secrets] == ["shared", "own"]
    assert {m.path: m.name for m in spec_of(overrides).volumes} == {"/models": "models", "/data": "d"}


def test_old_modal_option_names_still_work() -> None:
    app = modal.App("aliases")

    @app.function(
        keep_warm=2, concurrency_limit=4, container_idle_timeout=30, allow_concurrent_inputs=10
    )
    def f() -> None: ...

    spec = spec_of(f)
    assert (spec.autoscale.min_containers, spec.autoscale.max_containers) == (2, 4)
    assert spec.autoscale.scaledown_window_s == 30.0 and spec.max_inputs == 10


def test_async_and_generator_functions_are_flagged() -> None:
    app = modal.App("kinds")

    @app.function()
    async def a() -> int:
        return 1

    @app.function()
    def g():
        yield 1

    @app.function()
    async def ag():
        yield 1

    assert (spec_of(a).is_async, spec_of(a).is_generator) == (True, False)
    assert (spec_of(g).is_async, spec_of(g).is_generator) == (False, True)
    assert (spec_of(ag).is_async, spec_of(ag).is_generator) == (True, True)


def test_web_markers_are_recorded() -> None:
    app = modal.App("web")

    @app.function()
    @modal.fastapi_endpoint(method="post")
    def predict(request: dict) -> dict:
        return request

    @app.function()
    @modal.asgi_app()
    def fastapi_app() -> None: ...

    @app.function()
    @modal.web_endpoint
    def hello() -> str:
        return "hi"

    assert spec_of(predict).experimental_options["web"] == {"kind": "endpoint", "method": "POST"}
    assert spec_of(fastapi_app).experimental_options["web"] == {"kind": "asgi"}
    assert spec_of(hello).experimental_options["web"] == {"kind": "endpoint", "method": "GET"}


def test_bare_decorators_without_parentheses() -> None:
    app = modal.App("bare")

    @app.function
    def f() -> int:
        return 1

    @app.cls
    class C:
        @modal.method
        def m(self) -> int:
            return 2

    assert spec_of(f).name == "f" and spec_of(C).methods == ["m"]


# ---------------------------------------------------------------- classes


def test_class_spec_lists_methods_and_takes_the_same_options() -> None:
    app = modal.App("classes")

    @app.cls(gpu="A10G", enable_memory_snapshot=True, min_containers=1)
    @modal.concurrent(max_inputs=4)
    class Embedder:
        model_id: str = modal.parameter(default="bge")

        @modal.enter(snap=True)
        def load(self) -> None: ...

        @modal.enter(snap=False)
        def to_gpu(self) -> None: ...

        @modal.method()
        def run(self, xs: list[str]) -> list[str]:
            return xs

        @modal.method()
        async def stream(self):
            yield 1

        def helper(self) -> None: ...

    spec = spec_of(Embedder)
    assert (spec.name, spec.kind, spec.qualname.rsplit(".", 1)[-1]) == (
        "Embedder",
        "class",
        "Embedder",
    )
    assert spec.methods == ["run", "stream"]
    assert spec.is_async and spec.is_generator
    assert spec.resources.gpu == "A10G" and spec.enable_memory_snapshot and spec.max_inputs == 4
    assert spec.autoscale.min_containers == 1
    assert Embedder.user_cls.__name__ == "Embedder"
    assert app.registered_classes == {"Embedder": Embedder}


def test_with_options_makes_a_new_handle_with_new_options() -> None:
    app = modal.App("variants")

    @app.cls(gpu="T4", cpu=1)
    class Model:
        @modal.method()
        def predict(self) -> None: ...

    bigger = Model.with_options(gpu="A100-80GB", max_containers=3, timeout=60)
    assert spec_of(bigger).resources.gpu == "A100-80GB"
    assert spec_of(bigger).resources.cpu == 1.0  # kept
    assert spec_of(bigger).autoscale.max_containers == 3 and spec_of(bigger).timeout_s == 60.0
    assert spec_of(Model).resources.gpu == "T4"  # the original is unchanged
    assert bigger.user_cls is Model.user_cls


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["my app", "a.b", "", "-x", "x" * 64, "app*"])
def test_bad_app_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidError, match="invalid app name .*letters, digits"):
        modal.App(name)


def test_function_names_are_checked() -> None:
    app = modal.App("names")
    with pytest.raises(InvalidError, match="invalid function name '_private'"):

        @app.function()
        def _private() -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"gpu": "A10G x2"}, "invalid gpu"),
        ({"gpu": "H100:0"}, "invalid gpu"),
        ({"cpu": -1}, "cpu must be at least"),
        ({"memory": 1.5}, "memory .* must be an integer"),
        ({"timeout": 0}, "timeout must be at least 1"),
        ({"retries": "3"}, "retries must be an int or thaw.Retries"),
        (
            {"min_containers": 3, "max_containers": 2},
            r"max_containers \(2\) is below min_containers \(3\)",
        ),
        ({"volumes": {"data": None}}, "must be absolute"),
        ({"volumes": {"/data": "my-data"}}, "thaw.Volume"),
        ({"secrets": modal.Secret.from_name("s")}, "list of thaw.Secret"),
        ({"schedule": "0 9 * * *"}, r"thaw.Period\(...\) or thaw.Cron"),
        ({"image": "python:3.11"}, "must be a thaw.Image"),
    ],
)
def test_bad_options_are_clear_errors(options: dict, message: str) -> None:
    app = modal.App("bad")
    with pytest.raises(InvalidError, match=message):

        @app.function(**options)
        def f() -> None: ...


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: modal.Retries(max_retries=11), "max_retries must be an integer from 0 to 10"),
        (lambda: modal.Retries(max_retries=1, backoff_coefficient=0.5), "backoff_coefficient"),
        (lambda: modal.Retries(max_retries=1, max_delay=600), "max_delay"),
        (lambda: modal.Cron("every day"), "expected five fields"),
        (lambda: modal.Cron("61 * * * *"), "invalid cron expression"),
        (lambda: modal.Cron("0 9 * * *", timezone="Mars/Olympus"), "unknown timezone"),
        (lambda: modal.Period(seconds=0.5), "at least one second"),
        (lambda: modal.concurrent(max_inputs=0), "max_inputs must be a positive integer"),
        (lambda: modal.Secret.from_name("bad name"), "invalid secret name"),
        (lambda: modal.Volume.from_name("a/b"), "invalid volume name"),
        (lambda: modal.fastapi_endpoint(method="FETCH"), "method must be one of"),
    ],
)
def test_bad_helpers_are_clear_errors(make: object, message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        make()  # type: ignore[operator]


def test_markers_above_the_app_decorator_say_where_they_go() -> None:
    app = modal.App("order")

    with pytest.raises(InvalidError, match="below @app.function"):

        @modal.concurrent(max_inputs=2)
        @app.function()
        def f() -> None: ...

    with pytest.raises(InvalidError, match="decorates a function"):
        app.function()(modal.Image.debian_slim())


def test_redefining_a_function_name_warns_and_replaces() -> None:
    app = modal.App("dupes")

    @app.function(name="job")
    def first() -> None: ...

    with pytest.warns(UserWarning, match="replaces"):

        @app.function(name="job")
        def second() -> None: ...

    assert app.registered_functions["job"] is second


def test_ephemeral_disk_is_the_writable_layers_limit_in_mib() -> None:
    app = modal.App("disk")

    @app.function(ephemeral_disk=2048)
    def f() -> None: ...

    assert spec_of(f).resources.ephemeral_disk_mb == 2048
    with pytest.raises(InvalidError, match="ephemeral_disk"):
        app.function(ephemeral_disk=1, name="tiny")(lambda: None)
