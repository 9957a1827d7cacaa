"""Where a web request goes: the endpoints a deploy has, their labels, URLs,
and the (app, label) a Host header or a /web/ path names."""

from __future__ import annotations

from thaw_core.schema import FunctionSpec
from thaw_gateway import web_endpoints as we


def _spec(name: str, web: dict[str, object], kind: str = "function") -> FunctionSpec:
    return FunctionSpec(
        name=name, module="m", qualname=name, kind=kind, experimental_options={"web": web}  # type: ignore[arg-type]
    )


def test_labels_and_urls_of_functions_and_methods() -> None:
    specs = [
        _spec("fastapi_app", {"kind": "asgi"}),
        _spec("predict", {"kind": "endpoint", "method": "POST", "label": "Guess"}),
        _spec("Model", {"methods": {"serve": {"kind": "asgi"}}}, kind="class"),
    ]
    assert we.web_urls("http", "gw:8080", "", "my-app", specs) == {
        "fastapi_app": "http://gw:8080/web/my-app/fastapi-app",
        "predict": "http://gw:8080/web/my-app/guess",
        "Model.serve": "http://gw:8080/web/my-app/model-serve",
    }
    assert we.url("https", "gw:8443", "thaw.example", "My_App", "x") == (
        "https://my-app--x.thaw.example:8443"
    )
    assert we.find(specs, "Model-Serve") == we.endpoints(specs)[2]


def test_host_and_path_forms_name_the_endpoint() -> None:
    assert we.split_host("my-app--predict.thaw.example:8080", "thaw.example") == (
        "my-app",
        "predict",
    )
    assert we.split_host("a--b--c.thaw.example", "thaw.example") == ("a--b", "c")
    assert we.split_host("my-app--predict.other.example", "thaw.example") is None
    assert we.split_host("my-app--predict.thaw.example", "") is None
    assert we.split_path("/web/app/label") == ("app", "label", "")
    assert we.split_path("/web/app/label/a/b") == ("app", "label", "/a/b")
    assert we.split_path("/web/app") is None
    assert we.split_path("/v1/apps") is None
