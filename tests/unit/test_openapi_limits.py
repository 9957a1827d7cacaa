"""The OpenAPI document states the rules the gateway checks, with the very
regexes it checks with: a value the document's pattern allows passes the
gateway's check and one it refuses does not (the live agreement is
tests/e2e/test_openapi_fuzz.py; this says which rule is where, fast)."""

from __future__ import annotations

import re

import pytest
from thaw_core.schema import check_name
from thaw_core.volumes.paths import VolumePathError, volume_path
from thaw_gateway.openapi import document

SAMPLES = ["", "a", "A-b_9", "-a", "a b", "a\n", "x" * 63, "x" * 64, "é", "a/b", "..", "a/../b"]


def _path_param(path: str, method: str, name: str) -> dict[str, object]:
    op = document()["paths"][path][method]
    return next(p["schema"] for p in op["parameters"] if p["name"] == name)


def _allows(schema: dict[str, object], value: str) -> bool:
    pattern = re.compile(str(schema["pattern"]))
    return bool(pattern.fullmatch(value)) and len(value) <= int(schema.get("maxLength", 1 << 30))


def _passes(check: object, value: str) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except (ValueError, VolumePathError):
        return False
    return True


@pytest.mark.parametrize("value", SAMPLES)
def test_name_pattern_is_the_gateways_rule(value: str) -> None:
    schema = _path_param("/v1/apps/{app}", "get", "app")
    assert _allows(schema, value) == _passes(lambda v: check_name("app", v), value)


@pytest.mark.parametrize("value", [*SAMPLES, "/", "/a//b/", ".a", "..a", "a/.", "x\x00"])
def test_volume_path_pattern_is_the_gateways_rule(value: str) -> None:
    schema = _path_param("/v1/volumes/{volume}/file", "get", "path")
    assert _allows(schema, value) == _passes(volume_path, value)


def test_bodies_carry_the_limits() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["TokenRequest"]["properties"]["name"]["pattern"]
    assert schemas["DeployRequest"]["properties"]["bundle_sha256"]["pattern"] == "^[0-9a-f]{64}$"
    assert schemas["StreamRequest"]["properties"]["call_ids"]["maxItems"] > 0
    # An optional integer's limit is on the integer, not on null.
    branches = schemas["AutoscalerUpdate"]["properties"]["min_containers"]["anyOf"]
    assert {"type": "integer", "minimum": 0} in branches and {"type": "null"} in branches
